package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/farego/farego/agent/record"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// fuzzKey is a fixed key so the corpus stays meaningful between runs.
var fuzzKey = ed25519.NewKeyFromSeed(make([]byte, 32))

// FuzzMessages feeds arbitrary bytes to every decoder of outside input: no
// panics, and whatever decodes re-encodes and decodes to the same value.
func FuzzMessages(f *testing.F) {
	tap := sampleTap(f, 1)
	tb, _ := tap.MarshalBinary()
	batch, _ := (&Batch{DeviceID: "d", Epoch: "e", SentAt: time.UnixMilli(5), Records: []Record{{1, tb}}}).MarshalBinary()
	ack, _ := (&Ack{DeviceID: "d", Epoch: "e", Ranges: []Range{{1, 4}}}).MarshalBinary()
	dl, _ := (&Downlink{Kind: record.DocFares, Version: 2, Body: []byte(`{}`)}).MarshalBinary()
	st, _ := (&Status{DeviceID: "d", Online: true}).MarshalBinary()
	full, _ := (&Status{DeviceID: "d", Online: true, Software: "v1.4.0-3-g98b475d-dirty",
		Assignment: &StatusAssignment{Route: "42", Vehicle: "BUS-7", Source: AssignSourceServer, ServerVersion: 3},
		Update:     &UpdateStatus{Pending: "1.5.0", Failed: "1.4.1", FailedReason: "download: refused", FailedAt: time.UnixMilli(9)},
		Epoch:      "0f0e", OutOfService: "clock: unset", Versions: map[string]uint64{"fares": 3},
		Salvage: &SalvageStatus{File: "q.db.damaged", At: time.UnixMilli(9), Epoch: "0a", Records: 2}}).MarshalBinary()
	rp, _ := (&Replay{DeviceID: "d", From: 1, To: 2, ID: 1}).MarshalBinary()
	as, _ := (&Assignment{DeviceID: "d", Version: 3, Route: "42", Vehicle: "BUS-7", IssuedAt: time.UnixMilli(9)}).MarshalBinary()
	for _, p := range [][]byte{tb, batch, ack, dl, st, full, rp, as, {}, {1}} {
		f.Add(p)
		sealed, _ := Seal(TypeBatch, p, true, fuzzKey)
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if b, err := ParseBatch(p); err == nil {
			again, err := b.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded batch does not re-encode: %v", err)
			}
			if _, err := ParseBatch(again); err != nil {
				t.Fatalf("re-encoded batch does not decode: %v", err)
			}
		}
		if a, err := ParseAck(p); err == nil {
			if _, err := a.MarshalBinary(); err != nil {
				t.Fatalf("decoded ack does not re-encode: %v", err)
			}
		}
		if d, err := ParseDownlink(p); err == nil {
			if _, err := d.MarshalBinary(); err != nil {
				t.Fatalf("decoded downlink does not re-encode: %v", err)
			}
		}
		if s, err := ParseStatus(p); err == nil {
			checkStatus(t, s)
			again, err := s.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded status does not re-encode: %v", err)
			}
			if _, err := ParseStatus(again); err != nil {
				t.Fatalf("re-encoded status does not decode: %v", err)
			}
		}
		ParseReplay(p)
		if a, err := ParseAssignment(p); err == nil {
			again, err := a.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded assignment does not re-encode: %v", err)
			}
			if b, err := ParseAssignment(again); err != nil || *b != *a {
				t.Fatalf("re-encoded assignment decodes to %+v, %v; want %+v", b, err, a)
			}
		}
		for _, typ := range []Type{TypeBatch, TypeAck, TypeStatus, TypeDownlink, TypeReplay, TypeAssign} {
			Open(p, typ, fuzzKey.Public().(ed25519.PublicKey))
		}
	})
}

// checkStatus fails unless s, which ParseStatus accepted, satisfies the
// rules written out again: its text fields printable and bounded, its
// figures in range, the software version, the assignment and the update
// report.
func checkStatus(t *testing.T, s *Status) {
	t.Helper()
	printable := func(field, v string, max int) {
		t.Helper()
		if len(v) > max || !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			t.Fatalf("accepted %s %q", field, v)
		}
	}
	if s.QueueDepth < 0 || s.OldestUnsentSec < 0 {
		t.Fatalf("accepted queue figures %d, %d", s.QueueDepth, s.OldestUnsentSec)
	}
	printable("epoch", s.Epoch, 64)
	printable("out-of-service reason", s.OutOfService, 128)
	if len(s.Versions) > 32 {
		t.Fatalf("accepted %d versions", len(s.Versions))
	}
	for k, v := range s.Versions {
		printable("version kind", k, 64)
		if k == "" || v > math.MaxInt64 {
			t.Fatalf("accepted version %q=%d", k, v)
		}
	}
	if g := s.Salvage; g != nil {
		printable("salvage file", g.File, 255)
		printable("salvage epoch", g.Epoch, 64)
		if g.File == "" || strings.Contains(g.File, "/") || g.Records < 0 || g.Damaged < 0 || g.LostPages < 0 ||
			g.At.UnixNano() <= 0 || g.At.Year() > 2262 {
			t.Fatalf("accepted salvage %+v", g)
		}
	}
	if s.Software != "" && ValidSoftwareVersion(s.Software) != nil {
		t.Fatalf("accepted software version %q", s.Software)
	}
	if a := s.Assignment; a != nil {
		if err := record.CheckAssignment(a.Route, a.Vehicle); err != nil {
			t.Fatalf("accepted assignment %q/%q: %v", a.Route, a.Vehicle, err)
		}
		if a.Source != AssignSourceConfig && a.Source != AssignSourceLocal && a.Source != AssignSourceServer {
			t.Fatalf("accepted assignment source %q", a.Source)
		}
		if a.ServerVersion > math.MaxInt64 || (a.Source == AssignSourceServer && a.ServerVersion == 0) {
			t.Fatalf("accepted assignment server version %d from %q", a.ServerVersion, a.Source)
		}
	}
	if u := s.Update; u != nil {
		for _, v := range []string{u.Pending, u.Failed} {
			if v != "" && ValidVersion(v) != nil {
				t.Fatalf("accepted update version %q", v)
			}
		}
		if u.Failed == "" && (u.FailedReason != "" || !u.FailedAt.IsZero()) {
			t.Fatalf("accepted a failure reason or time without a failed version: %+v", u)
		}
		if len(u.FailedReason) > MaxFailedReason {
			t.Fatalf("accepted a failure reason of %d bytes", len(u.FailedReason))
		}
		if !u.FailedAt.IsZero() && (u.FailedAt.UnixNano() <= 0 || u.FailedAt.Year() > 2262) {
			t.Fatalf("accepted failure time %v", u.FailedAt)
		}
	}
}
