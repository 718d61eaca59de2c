// Package paycode implements the farego payment code, version 1: the
// one-time QR code a rider's app makes offline and a validator checks
// offline.
//
// The format is normative and fixed by the design (DESIGN.md, "Payment code,
// version 1"); this package is its reference implementation, shared by the
// validator agent, the settlement server and the rider tool.
//
// A code is 194 bytes: a 124-byte credential issued online by the settlement
// server (signed by an issuer key), followed by a code time, a counter and the
// rider's signature made offline with a key derived from the rider's token
// seed. Its text form, which the QR holds and the scanner prints, is "FG1:"
// followed by the Base45 (RFC 9285) encoding of the 194 bytes: 295 characters,
// all in the QR alphanumeric set.
//
// The parts:
//
//   - [IssuerKey] and [RiderKey] derive the Ed25519 keys (HKDF-SHA256, empty salt).
//   - [IssueCredential] builds and signs a credential (server side);
//     [ParseCredential] reads one.
//   - [MakeCode] builds and signs a code (rider side); [ParseCode] and
//     [ParseText] read one.
//   - [Keyring] holds the issuer public keys a validator trusts, with their
//     validity windows, and reads and writes the keyring JSON file.
//   - [Verifier] checks a code text against a keyring at a given time and
//     returns a [Decision] with one of the stable [Reason] strings, in the
//     order the design fixes (first failure wins). It caches successful
//     issuer-signature checks per credential, so a rider seen before costs
//     one Ed25519 verification instead of two.
//
// # Caveats
//
// Times in the format are unix seconds (uint32, so they end in 2106); the
// verifier compares whole seconds and truncates the time it is given.
//
// Verify takes the code text exactly as printed by the scanner without its
// line terminator. Base45's alphabet contains a space: callers must strip
// only CR and LF, never spaces.
//
// Accepted by Verify means cryptographically valid and fresh. Whether the
// rider may ride (deny list, duplicate, passback, fare) is the agent's
// business, not this package's.
package paycode
