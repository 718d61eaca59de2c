package brokertest

import (
	"os"
	"testing"
)

// MosquittoEnv names the external MQTT broker (a Mosquitto) that tests may
// use besides their own, e.g. tcp://127.0.0.1:1883.
const MosquittoEnv = "FAREGO_TEST_MOSQUITTO"

// MosquittoURL returns FAREGO_TEST_MOSQUITTO, the external broker's URL.
// Without it it skips tb, or fails it when FAREGO_CI is set, naming what is
// missing. Tests of the external broker ask here rather than reading the
// variable themselves: those that did skipped in CI too.
func MosquittoURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv(MosquittoEnv)
	if url == "" {
		missing(tb, "an external MQTT broker (Mosquitto): "+MosquittoEnv+" is not set (e.g. "+MosquittoEnv+"=tcp://127.0.0.1:1883)")
	}
	return url
}

// missing skips tb for a part that is not there, or fails it when
// FAREGO_CI is set, naming the part.
func missing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv("FAREGO_CI") != "" {
		tb.Fatalf("required (FAREGO_CI is set): %s", what)
	}
	tb.Skipf("not here: %s", what)
}
