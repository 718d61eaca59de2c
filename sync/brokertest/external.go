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
		if os.Getenv("FAREGO_CI") != "" {
			tb.Fatal("an external MQTT broker (Mosquitto) required: " + MosquittoEnv + " is not set and FAREGO_CI is (e.g. " +
				MosquittoEnv + "=tcp://127.0.0.1:1883)")
		}
		tb.Skip(MosquittoEnv + " not set: no external MQTT broker (Mosquitto) to test against")
	}
	return url
}
