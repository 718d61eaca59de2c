//go:build amd64 || arm

package paycode

import (
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// stdlibRules are crypto/ed25519's verification rules in curve25519-voi.
var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// verifySig is curve25519-voi's verification, with crypto/ed25519's rules.
// Every tap costs the settlement server one (the rider's signature; the
// issuer's is cached), and it was half the ingest's CPU in a catch-up:
// voi takes 35 µs where crypto/ed25519 takes 58 on the 2-core amd64
// machine of the catch-up figures (BenchmarkVerify/warm against
// BenchmarkEd25519Verify), and 1.2 ms where it takes 2.2 built for arm
// (GOARM=7) under qemu. Built for arm64 it is the slower (466 µs against
// 335 under qemu), so there crypto/ed25519 stays (sig_std.go).
func verifySig(pub, msg, sig []byte) bool {
	if len(pub) != voi.PublicKeySize {
		return false // voi, like crypto/ed25519, would panic
	}
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlibRules)
}
