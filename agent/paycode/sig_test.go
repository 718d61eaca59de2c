package paycode

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

// smallOrder are the encodings of the curve's points of small order (and
// non-canonical ones of them): public keys and R values on which
// Ed25519 implementations are known to disagree.
var smallOrder = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // the identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
	"0100000000000000000000000000000000000000000000000000000000000080", // -0: non-canonical
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1: non-canonical
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // y = p, sign set
}

// groupOrder is L, little-endian: an S of L or more is not canonical.
const groupOrder = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010"

// sameAsStdlib fails the test when verifySig and crypto/ed25519 disagree.
func sameAsStdlib(t *testing.T, pub, msg, sig []byte) bool {
	t.Helper()
	want := len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
	if got := verifySig(pub, msg, sig); got != want {
		t.Fatalf("verifySig(%x, %x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
	}
	return want
}

// TestVerifySigEdgeCases checks verifySig against crypto/ed25519 where
// Ed25519 implementations part ways: small-order and non-canonical keys
// and R, S of L or more, and a key of small order whose "signature" holds
// for every message (both accept it: what refuses such a key is the
// credential's issuer).
func TestVerifySigEdgeCases(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	msg := []byte("farego code")
	good := ed25519.Sign(priv, msg)
	if !sameAsStdlib(t, pub, msg, good) {
		t.Fatal("a good signature refused")
	}
	// S + L: the same point, a non-canonical scalar.
	l, _ := hex.DecodeString(groupOrder)
	high := bytes.Clone(good)
	var carry uint16
	for i := range 32 {
		v := uint16(high[32+i]) + uint16(l[i]) + carry
		high[32+i], carry = byte(v), v>>8
	}
	if sameAsStdlib(t, pub, msg, high) {
		t.Fatal("S + L accepted")
	}
	accepted := 0
	for _, a := range smallOrder {
		ab, _ := hex.DecodeString(a)
		for _, r := range smallOrder {
			rb, _ := hex.DecodeString(r)
			sig := append(bytes.Clone(rb), make([]byte, 32)...) // S = 0
			if sameAsStdlib(t, ab, msg, sig) {
				accepted++
			}
			sameAsStdlib(t, ab, msg, append(bytes.Clone(rb), good[32:]...))
			sameAsStdlib(t, pub, msg, append(bytes.Clone(rb), good[32:]...))
		}
		sameAsStdlib(t, ab, msg, good)
	}
	if accepted == 0 {
		t.Fatal("no small-order key with an S = 0 signature accepted: the vectors test nothing")
	}
	for _, bad := range [][]byte{nil, pub[:31], append(bytes.Clone(pub), 0)} {
		if verifySig(bad, msg, good) {
			t.Fatalf("a %d-byte key accepted", len(bad))
		}
	}
	for _, bad := range [][]byte{nil, good[:63], append(bytes.Clone(good), 0)} {
		sameAsStdlib(t, pub, msg, bad)
	}
}

// FuzzVerifySig checks verifySig against crypto/ed25519 on signatures
// made from the fuzzer's seed and message, then mutated: a key or a
// signature of its own (raw), or one bit flipped.
func FuzzVerifySig(f *testing.F) {
	for _, a := range smallOrder {
		ab, _ := hex.DecodeString(a)
		f.Add([]byte{1}, []byte("m"), ab, append(bytes.Clone(ab), make([]byte, 32)...), uint16(0))
	}
	f.Add([]byte{2}, []byte("farego"), []byte{}, []byte{}, uint16(0))
	f.Add([]byte{3}, []byte("farego"), []byte{}, []byte{}, uint16(1+8*40))
	f.Fuzz(func(t *testing.T, seed, msg, pubRaw, sigRaw []byte, flip uint16) {
		s := make([]byte, ed25519.SeedSize)
		copy(s, seed)
		priv := ed25519.NewKeyFromSeed(s)
		pub := []byte(priv.Public().(ed25519.PublicKey))
		sig := ed25519.Sign(priv, msg)
		if len(pubRaw) == ed25519.PublicKeySize {
			pub = bytes.Clone(pubRaw)
		}
		if len(sigRaw) == ed25519.SignatureSize {
			sig = bytes.Clone(sigRaw)
		}
		if flip != 0 {
			bit := int(flip-1) % (8 * (len(sig) + len(pub)))
			if bit < 8*len(sig) {
				sig[bit/8] ^= 1 << (bit % 8)
			} else {
				bit -= 8 * len(sig)
				pub[bit/8] ^= 1 << (bit % 8)
			}
		}
		sameAsStdlib(t, pub, msg, sig)
	})
}
