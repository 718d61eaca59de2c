// Package farego is the root of the farego module: offline QR fare
// payment for buses. It holds no code; its test (imports_test.go) keeps
// the house in order: imports run one way,
//
//	cmd → server → sync → agent → queue, driver
//
// (a folder may import its own packages and those of the folders to its
// right), only queue imports bbolt, and the validator binary links no
// server, broker or database code. README.md's "Code map" draws the
// graph and says what lives in each folder.
package farego
