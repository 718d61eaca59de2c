package fare

import (
	"errors"
	"testing"
)

func TestRoutes(t *testing.T) {
	base := `"version": 1, "currency": "EUR", "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}, "X1": {"adult": 400}}`
	open, err := Parse([]byte(`{` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if !open.Covers("42") || !open.Covers("X1") {
		t.Error("a table listing no routes must serve every route")
	}
	strict, err := Parse([]byte(`{` + base + `, "routes": ["42", "X1"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strict.Covers("42") || !strict.Covers("X1") || strict.Covers("43") || strict.Covers("*") {
		t.Error("a table listing routes must serve exactly those")
	}
	// Route names with bidirectional marks and embeddings (a Hebrew name
	// carries them), as tables stored by the release before may list:
	// they load (what a new name may hold is the ledger's to check).
	for _, rtl := range []string{"\u05e7\u05d5 5\u200f", "\u202b\u05e7\u05d5 5\u202c"} {
		if tbl, err := Parse([]byte(`{` + base + `, "routes": ["X1", "` + rtl + `"]}`)); err != nil || !tbl.Covers(rtl) {
			t.Errorf("a route name %+q: %v", rtl, err)
		}
	}
	for _, bad := range []string{`["42"]`, `["X1", "X1"]`, `["X1", ""]`, `["X1", "*"]`, `["X1", " 4"]`, `["X1", "4\n"]`} {
		if _, err := Parse([]byte(`{` + base + `, "routes": ` + bad + `}`)); !errors.Is(err, ErrInvalid) {
			t.Errorf("routes %s: %v, want ErrInvalid", bad, err)
		}
	}
}
