package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/farego/farego/server/servertest"
)

// A request header over 32 KiB is refused (431) by the real server: with
// net/http's default of 1 MiB, 250 slow clients sending 1 MiB headers
// grew the server by 233 MiB.
func TestHTTPHeaderLimit(t *testing.T) {
	a := servertest.Start(t)
	for _, tc := range []struct {
		size int
		want int
	}{{8 << 10, http.StatusOK}, {100 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req, _ := http.NewRequest("GET", "http://"+a.HTTP+"/v1/keyring", nil)
		req.Header.Set("X-Pad", strings.Repeat("a", tc.size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%d-byte header: %v", tc.size, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%d-byte header: status %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}
