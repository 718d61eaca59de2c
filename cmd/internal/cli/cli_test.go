package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("log output %q", s)
	}
	if _, err := NewLogger(&b, "loud", ""); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewLogger(&b, "", "xml"); err == nil {
		t.Error("bad format accepted")
	}
}
