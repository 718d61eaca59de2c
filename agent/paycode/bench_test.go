package paycode

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"
)

// The floor: one bare Ed25519 verification. A warm Verify should cost about
// one of these (the rider signature), a cold one about two.
func BenchmarkEd25519Verify(b *testing.B) {
	f := newFixture(b)
	msg := codeMessage(make([]byte, CodeSize))
	sig := ed25519.Sign(f.rider, msg)
	pub := f.rider.Public().(ed25519.PublicKey)
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	now := time.Unix(f.v.VerifyAt, 0)
	text := f.code(b, f.v.CodeTime, 1)
	b.Run("cold", func(b *testing.B) {
		v := NewVerifier(-1)
		for b.Loop() {
			if d := v.Verify(text, now, f.keyring, Policy{}); !d.Accepted {
				b.Fatal(d.Reason)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		v := NewVerifier(0)
		v.Verify(text, now, f.keyring, Policy{})
		for b.Loop() {
			if d := v.Verify(text, now, f.keyring, Policy{}); !d.Accepted {
				b.Fatal(d.Reason)
			}
		}
	})
}

func BenchmarkParseText(b *testing.B) {
	f := newFixture(b)
	text := f.code(b, f.v.CodeTime, 1)
	for b.Loop() {
		if _, err := ParseText(text); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMakeCode(b *testing.B) {
	f := newFixture(b)
	t := time.Unix(f.v.CodeTime, 0)
	for i := 0; b.Loop(); i++ {
		if _, err := MakeCode(f.cred, f.rider, t, uint16(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// A full cache under churn: every code is a different rider.
func BenchmarkVerifyChurn(b *testing.B) {
	f := newFixture(b)
	now := time.Unix(f.v.VerifyAt, 0)
	texts := make([]string, 64)
	for i := range texts {
		cr := Credential{KeyID: 7, Account: uint64(i + 1), Serial: 1, NotBefore: f.v.NotBefore, NotAfter: f.v.NotAfter}
		copy(cr.RiderKey[:], f.rider.Public().(ed25519.PublicKey))
		cred, _ := IssueCredential(f.issuer, cr)
		c, _ := MakeCode(cred, f.rider, time.Unix(f.v.CodeTime, 0), 1)
		texts[i] = EncodeText(c)
	}
	for _, size := range []int{16, 4096} {
		b.Run(fmt.Sprintf("cache=%d", size), func(b *testing.B) {
			v := NewVerifier(size)
			for i := 0; b.Loop(); i++ {
				v.Verify(texts[i%len(texts)], now, f.keyring, Policy{})
			}
		})
	}
}
