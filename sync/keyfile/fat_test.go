package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/queue/durable/fatdisk"
)

// TestPrivateKeyOnACard: a private key on a real FAT or exFAT card (a
// bundle unpacked on the technician's stick and run from there) is refused
// as readable by others, and the error says to copy it off the card: "chmod
// 600 it" alone cannot be done there (vfat refuses the chmod, exfat-fuse
// takes it and keeps 0777). On a card whose driver shows owner-only modes
// (fusefat: 0700) the key is read.
func TestPrivateKeyOnACard(t *testing.T) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, kind := range []fatdisk.Kind{fatdisk.VFAT, fatdisk.ExFAT} {
		t.Run(string(kind), func(t *testing.T) {
			path := filepath.Join(fatdisk.Mount(t, kind), "device.key")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadPrivate(path)
			if info.Mode().Perm()&0o077 == 0 {
				if err != nil || !got.Equal(k) {
					t.Fatalf("ReadPrivate of an owner-only (%v) key on the card: %v", info.Mode().Perm(), err)
				}
				t.Logf("this driver shows the key %v: read", info.Mode().Perm())
				return
			}
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), "copy it off the card") {
				t.Fatalf("ReadPrivate of a key the card shows %v: %v; want refused, saying to copy it off the card", info.Mode().Perm(), err)
			}
		})
	}
}
