package brokertest

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// MosquittoEnv names the external MQTT broker (a Mosquitto) that tests may
// use besides their own, e.g. tcp://127.0.0.1:1883.
const MosquittoEnv = "FAREGO_TEST_MOSQUITTO"

// MosquittoURL returns FAREGO_TEST_MOSQUITTO, the external broker's URL.
// Without it it skips tb, or fails it when FAREGO_CI is set, naming what is
// missing. Tests of the external broker ask here rather than reading the
// variable themselves: those that did skipped in CI too. Set, it must name
// a broker that answers: nothing listening there fails tb at once, saying
// so, instead of each test waiting out its timeouts.
func MosquittoURL(tb testing.TB) string {
	tb.Helper()
	raw := os.Getenv(MosquittoEnv)
	if raw == "" {
		missing(tb, "an external MQTT broker (Mosquitto): "+MosquittoEnv+" is not set (e.g. "+MosquittoEnv+"=tcp://127.0.0.1:1883)")
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		tb.Fatalf("%s=%q: want a broker URL like tcp://127.0.0.1:1883", MosquittoEnv, raw)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		tb.Fatalf("%s=%s: no broker answers at %s (%v): start Mosquitto there, or unset %s to skip the tests of an external broker", MosquittoEnv, raw, u.Host, err, MosquittoEnv)
	}
	c.Close()
	return raw
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
