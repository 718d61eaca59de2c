// Package keyfile reads and writes the Ed25519 keys of farego on disk:
// private keys as PKCS #8 PEM with owner-only permissions, public keys as
// PKIX PEM. The validator reads its device key and the fleet public key with
// it; the settlement server and the provisioning tool write them.
package keyfile

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/farego/farego/queue/durable"
)

// ErrKeyFile is returned (wrapped) for a key file that cannot be used.
var ErrKeyFile = errors.New("keyfile: unusable key file")

// WritePrivate writes an Ed25519 private key as PKCS #8 PEM with
// owner-only permissions, durably (durable.Create). It refuses to overwrite
// an existing file.
func WritePrivate(path string, k ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// WritePublic writes an Ed25519 public key as PKIX PEM, durably; it too
// refuses to overwrite an existing file.
func WritePublic(path string, k ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return err
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	if err := durable.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return durable.Create(path, data, perm)
}

// ReadPrivate reads an Ed25519 private key (PKCS #8 PEM). It refuses a
// file that others can read (after making sure it holds a private key).
func ReadPrivate(path string) (ed25519.PrivateKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	// What the file is comes first: a public key given for a private one
	// (fleet.pub for fleet.key) was told to chmod 600, then that it is no
	// private key.
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if info.Mode().Perm()&0o077 != 0 {
		// A key read off a FAT or exFAT card (a bundle unpacked on the
		// technician's stick) cannot be chmodded there: the kernel's vfat
		// refuses, exfat-fuse takes it and keeps 0777.
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v): chmod 600 it (on a FAT or exFAT card, which keeps no modes, "+
			"copy it off the card first)", ErrKeyFile, path, info.Mode().Perm())
	}
	k, err := x509.ParsePKCS8PrivateKey(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an Ed25519 key", ErrKeyFile, path)
	}
	return ek, nil
}

// ReadPublic reads an Ed25519 public key (PKIX PEM).
func ReadPublic(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return ParsePublic(path, data)
}

// ParsePublic reads an Ed25519 public key (PKIX PEM) from data, naming it
// name in errors.
func ParsePublic(name string, data []byte) (ed25519.PublicKey, error) {
	block, err := decodePEM(name, data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, name, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an Ed25519 key", ErrKeyFile, name)
	}
	return ek, nil
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return decodePEM(path, data, typ)
}

func decodePEM(name string, data []byte, typ string) ([]byte, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%w: %s: want a PEM %q block", ErrKeyFile, name, typ)
	}
	return block.Bytes, nil
}
