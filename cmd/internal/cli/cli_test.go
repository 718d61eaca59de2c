package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	kp, pp := filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub")
	if err := WritePrivateKey(kp, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKey(pp, pub); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(kp, priv); err == nil {
		t.Error("overwrote an existing key file")
	}
	got, err := ReadPrivateKey(kp)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ReadPrivateKey = %v", err)
	}
	gp, err := ReadPublicKey(pp)
	if err != nil || !gp.Equal(pub) {
		t.Fatalf("ReadPublicKey = %v", err)
	}
	os.Chmod(kp, 0o644)
	if _, err := ReadPrivateKey(kp); !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: err = %v", err)
	}
	if _, err := ReadPublicKey(kp); !errors.Is(err, ErrKeyFile) {
		t.Errorf("private key read as public: err = %v", err)
	}
}

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
