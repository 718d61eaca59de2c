package server_test

import (
	"io"
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

// TestIndexPage: a person opening the server's address finds the wallet
// and the console (it was a JSON 404); other unknown paths stay the API's
// JSON 404.
func TestIndexPage(t *testing.T) {
	a := servertest.Start(t)
	resp, err := http.Get("http://" + a.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(body), `href="/wallet/"`) || !strings.Contains(string(body), `href="/console/"`) {
		t.Errorf("GET /: %d %s\n%s\nwant a page linking the wallet and the console", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, p := range []string{"/wallet/", "/console/"} {
		resp, err := http.Get("http://" + a.HTTP + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s (linked from /): %d", p, resp.StatusCode)
		}
	}
	resp, err = http.Get("http://" + a.HTTP + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("GET /nope: %d %s, want the API's JSON 404", resp.StatusCode, body)
	}
}
