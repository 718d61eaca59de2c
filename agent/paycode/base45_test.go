package paycode

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestBase45RFC9285Examples(t *testing.T) {
	for _, tc := range []struct{ plain, enc string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
	} {
		if got := Base45Encode([]byte(tc.plain)); got != tc.enc {
			t.Errorf("Base45Encode(%q) = %q, want %q", tc.plain, got, tc.enc)
		}
		got, err := Base45Decode(tc.enc)
		if err != nil || string(got) != tc.plain {
			t.Errorf("Base45Decode(%q) = %q, %v, want %q", tc.enc, got, err, tc.plain)
		}
	}
}

func TestBase45RefusesInvalid(t *testing.T) {
	for _, s := range []string{
		"GGW",     // RFC 9285 §4.3: 65536 does not fit in two bytes
		"ZZZ",     // 35+35*45+35*2025 > 65535
		":::",     // largest triple
		"::",      // 44+44*45 > 255
		"A",       // dangling single character
		"BB8B",    // dangling after a full group
		"bb8",     // lower case is not in the alphabet
		"BB\n",    // newline
		"B\x00B",  // NUL
		"BB8\xff", // high byte
	} {
		if got, err := Base45Decode(s); err == nil {
			t.Errorf("Base45Decode(%q) = %x, want error", s, got)
		}
	}
}

func TestBase45RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		enc := Base45Encode(b)
		if len(enc) != Base45EncodedLen(n) {
			t.Fatalf("len(Base45Encode(%d bytes)) = %d, want %d", n, len(enc), Base45EncodedLen(n))
		}
		got, err := Base45Decode(enc)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: got %x, %v", b, got, err)
		}
	}
}
