package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestDeviceFormsTakeTheDeviceIDRule: a device action names its device by
// the one device id rule (record.ValidDeviceID). The console had a looser
// rule of its own: "bus+1" or "-bus" was asked about ("Revoke device
// -bus?") and refused only by the API after the confirmation.
func TestDeviceFormsTakeTheDeviceIDRule(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	for _, id := range []string{"-bus", "_bus", "bus+1", "bus\u00e9"} {
		for _, action := range []string{"revoke_device", "replace_device", "replay", "assign"} {
			resp, body := b.post("/console/act/"+action, url.Values{"device": {id}, "csrf": {csrf}, "route": {"7"}})
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "starting with a letter or digit") {
				t.Errorf("%s of %q: %d, want 400 naming the rule:\n%.300s", action, id, resp.StatusCode, body)
			}
		}
	}
	// A good id is still asked about.
	if resp, body := b.post("/console/act/revoke_device", url.Values{"device": {"bus-1"}, "csrf": {csrf}}); resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, "Revoke device bus-1?") {
		t.Errorf("revoke bus-1: %d\n%.300s", resp.StatusCode, body)
	}
}
