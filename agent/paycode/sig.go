package paycode

// VerifySignature reports whether sig is pub's Ed25519 signature of msg,
// by the rules of Go's crypto/ed25519 (cofactorless; small-order and
// non-canonical public keys accepted; non-canonical R and S refused): the
// verification of every signature in a code. Where it is faster (amd64,
// arm) it is curve25519-voi's (sig_voi.go), elsewhere crypto/ed25519's
// (sig_std.go); TestVerifySigEdgeCases and FuzzVerifySig hold it to
// crypto/ed25519's answers on every architecture the tests run on.
func VerifySignature(pub, msg, sig []byte) bool { return verifySig(pub, msg, sig) }
