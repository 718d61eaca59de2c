package console

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// The fleet's replay answered with kept_until (the request kept for the
// devices offline): the console says they are sent it when next heard,
// not "not asked" (which had the operator ask them again by hand).
func TestReplayAllSaysKept(t *testing.T) {
	p, err := prepareReplayAll(nil, httptest.NewRequest("POST", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	msg := p.done(map[string]any{"asked": []any{"bus-1"}, "offline": []any{"bus-2"}, "kept_until": "2026-12-08T13:00:00Z"}).Message
	if strings.Contains(msg, "not asked") || !strings.Contains(msg, "2026-12-08T13:00:00Z") || !strings.Contains(p.Explain, "kept a day") {
		t.Errorf("console after a kept fleet replay: %q (%q); want the offline devices sent it when next heard, until kept_until", msg, p.Explain)
	}
}
