package keyfile

import (
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
	if err := WritePrivate(kp, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublic(pp, pub); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivate(kp, priv); err == nil {
		t.Error("overwrote an existing key file")
	}
	got, err := ReadPrivate(kp)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ReadPrivate = %v", err)
	}
	gp, err := ReadPublic(pp)
	if err != nil || !gp.Equal(pub) {
		t.Fatalf("ReadPublic = %v", err)
	}
	os.Chmod(kp, 0o644)
	if _, err := ReadPrivate(kp); !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: err = %v", err)
	}
	if _, err := ReadPublic(kp); !errors.Is(err, ErrKeyFile) {
		t.Errorf("private key read as public: err = %v", err)
	}
	// A public key (mode 0644, as written) given for a private one is
	// called what it is, not told to chmod 600.
	if _, err := ReadPrivate(pp); !errors.Is(err, ErrKeyFile) || strings.Contains(err.Error(), "chmod") || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("public key read as private: err = %v", err)
	}
}
