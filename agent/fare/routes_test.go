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
	for _, bad := range []string{`["42"]`, `["X1", "X1"]`, `["X1", ""]`, `["X1", "*"]`, `["X1", " 4"]`, `["X1", "4\n"]`} {
		if _, err := Parse([]byte(`{` + base + `, "routes": ` + bad + `}`)); !errors.Is(err, ErrInvalid) {
			t.Errorf("routes %s: %v, want ErrInvalid", bad, err)
		}
	}
}
