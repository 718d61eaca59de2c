package wire

import (
	"bytes"
	"compress/flate"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/record/recordtest"
)

func newKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func sampleTap(tb testing.TB, seq uint64) *record.Tap { return recordtest.Tap(tb, seq) }

func TestEnvelope(t *testing.T) {
	dev, other := newKey(t), newKey(t)
	payload := bytes.Repeat([]byte("farego tap "), 100)
	for _, compress := range []bool{false, true} {
		msg, err := Seal(TypeBatch, payload, compress, dev)
		if err != nil {
			t.Fatal(err)
		}
		if compress && len(msg) >= len(payload) {
			t.Errorf("compressed message is %d bytes for a %d-byte payload", len(msg), len(payload))
		}
		got, err := Open(msg, TypeBatch, pub(dev))
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("compress=%v: Open = %d bytes, %v", compress, len(got), err)
		}
		if _, err := Open(msg, TypeBatch, pub(other)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("other key: err = %v, want ErrBadSignature", err)
		}
		if _, err := Open(msg, TypeAck, pub(dev)); !errors.Is(err, ErrUnsupported) {
			t.Errorf("wrong type: err = %v, want ErrUnsupported", err)
		}
		for i := range msg {
			bad := bytes.Clone(msg)
			bad[i] ^= 0x40
			if _, err := Open(bad, TypeBatch, pub(dev)); err == nil {
				t.Fatalf("compress=%v: byte %d changed: accepted", compress, i)
			}
		}
	}
	if _, err := Open([]byte("FGW1"), TypeBatch, pub(dev)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short message: err = %v", err)
	}
	if _, err := Open(make([]byte, MaxMessageSize+1), TypeBatch, pub(dev)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge message: err = %v", err)
	}
	if _, err := Open(bytes.Repeat([]byte{1}, 100), TypeBatch, nil); err == nil {
		t.Errorf("no key: accepted")
	}
}

// A signed message that inflates past the limit is refused, not inflated
// into memory.
func TestEnvelopeInflateLimit(t *testing.T) {
	k := newKey(t)
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(make([]byte, MaxPayloadSize+1))
	w.Close()
	body := buf.Bytes()
	msg := append([]byte(magic), byte(TypeBatch), flagDeflate)
	msg = append(msg, body...)
	msg = append(msg, ed25519.Sign(k, signedMessage(TypeBatch, flagDeflate, body))...)
	if _, err := Open(msg, TypeBatch, pub(k)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("inflate bomb: err = %v, want ErrTooLarge", err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	var recs []Record
	for i := uint64(1); i <= 3; i++ {
		b, _ := sampleTap(t, i).MarshalBinary()
		recs = append(recs, Record{Seq: i, Data: b})
	}
	in := &Batch{DeviceID: "bus-1", Epoch: "e", SentAt: time.UnixMilli(1767229250123).UTC(), Records: recs}
	p, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseBatch(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
	k := newKey(t)
	msg, _ := Seal(TypeBatch, p, true, k)
	t.Logf("3-tap batch: payload %d bytes, sealed+deflated %d bytes", len(p), len(msg))

	in.Records[2].Seq = 2
	p2, _ := in.MarshalBinary()
	if _, err := ParseBatch(p2); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-increasing seqs: err = %v", err)
	}
	if _, err := (&Batch{DeviceID: "bus-1"}).MarshalBinary(); err == nil {
		t.Errorf("empty batch: marshalled")
	}
}

func TestAckAndReplayRoundTrip(t *testing.T) {
	a := &Ack{DeviceID: "bus-1", Epoch: "e1", Ranges: Ranges([]uint64{1, 2, 3, 7, 9, 10}), Time: time.UnixMilli(1767229250123).UTC()}
	if want := []Range{{1, 3}, {7, 7}, {9, 10}}; !reflect.DeepEqual(a.Ranges, want) {
		t.Fatalf("Ranges = %v, want %v", a.Ranges, want)
	}
	if a.Seqs() != 6 {
		t.Errorf("Seqs = %d, want 6", a.Seqs())
	}
	p, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseAck(p)
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Errorf("ack round trip: %+v, %v", got, err)
	}
	for name, rs := range map[string][]Range{
		"empty":       nil,
		"reversed":    {{5, 4}},
		"overlapping": {{1, 5}, {5, 6}},
		"descending":  {{7, 8}, {1, 2}},
	} {
		if _, err := (&Ack{DeviceID: "d", Ranges: rs}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s ranges: err = %v", name, err)
		}
	}
	// An ack made without a time carries the current one.
	before := time.Now().Add(-time.Millisecond)
	p, _ = (&Ack{DeviceID: "bus-1", Epoch: "e1", Ranges: []Range{{1, 1}}}).MarshalBinary()
	if got, err := ParseAck(p); err != nil || got.Time.Before(before) || got.Time.After(time.Now().Add(time.Millisecond)) {
		t.Errorf("ack without a time: %+v, %v, want the time it was made", got, err)
	}
	// A version 1 ack (an older server) still parses, without a time.
	v1 := []byte{1, 5, 'b', 'u', 's', '-', '1', 2, 'e', '1', 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9}
	if got, err := ParseAck(v1); err != nil || !got.Time.IsZero() || !reflect.DeepEqual(got.Ranges, []Range{{7, 9}}) {
		t.Errorf("version 1 ack: %+v, %v", got, err)
	}
	// A version 1 ack with a time appended is malformed (trailing bytes),
	// and a version 2 ack without one is truncated.
	if _, err := ParseAck(append(v1, 0, 0, 1, 0, 0, 0, 0, 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 1 ack with trailing time: err = %v", err)
	}
	v2 := append([]byte{2}, v1[1:]...)
	if _, err := ParseAck(v2); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2 ack without its time: err = %v", err)
	}
	if _, err := ParseAck(append(v2, 0, 0, 0, 0, 0, 0, 0, 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2 ack with time 0: err = %v", err)
	}
	r := &Replay{DeviceID: "bus-1", Epoch: "e1", From: 10, To: 20, ID: 1767229250000}
	rp, err := r.MarshalBinary()
	if got, err2 := ParseReplay(rp); err != nil || err2 != nil || *got != *r {
		t.Errorf("replay round trip: %+v, %v, %v", got, err, err2)
	}
	if _, err := (&Replay{DeviceID: "bus-1", Epoch: "e1", From: 10, To: 20}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("replay without a request id: MarshalBinary err = %v", err)
	}
	// Version 1 (a server before request ids) parses with ID 0; version 2
	// without an id is truncated, with id 0 malformed.
	old, err := r.MarshalBinaryV1()
	if err != nil || !bytes.Equal(old, append([]byte{1}, rp[1:len(rp)-8]...)) {
		t.Errorf("MarshalBinaryV1 = %x, %v", old, err)
	}
	if got, err := ParseReplay(old); err != nil || got.ID != 0 || got.From != 10 || got.To != 20 {
		t.Errorf("version 1 replay: %+v, %v; want ID 0, 10-20", got, err)
	}
	if _, err := ParseReplay(rp[:len(rp)-8]); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2 replay without its id: err = %v", err)
	}
	if _, err := ParseReplay(append(rp[:len(rp)-8:len(rp)-8], 0, 0, 0, 0, 0, 0, 0, 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2 replay with id 0: err = %v", err)
	}
}

func TestDownlinkAndDenyList(t *testing.T) {
	dl := &record.DenyList{Version: 5, Entries: []record.DenyEntry{{Account: 1001, Reason: "negative_balance"}, {Account: 1002, Serial: 3, Reason: "code_reused"}}}
	body, _ := jsonMarshal(dl)
	d := &Downlink{Kind: record.DocDenyList, Version: 5, IssuedAt: time.UnixMilli(1767229250000).UTC(), Body: body}
	p, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDownlink(p)
	if err != nil || !reflect.DeepEqual(got, d) {
		t.Fatalf("downlink round trip: %+v, %v", got, err)
	}
	back, err := record.ParseDenyList(got.Body)
	if err != nil || !reflect.DeepEqual(back, dl) {
		t.Errorf("deny list round trip: %+v, %v", back, err)
	}
	for name, doc := range map[string]string{
		"no version":    `{"entries":[]}`,
		"no account":    `{"version":1,"entries":[{"serial":1}]}`,
		"unknown field": `{"version":1,"entries":[],"x":1}`,
		"trailing":      `{"version":1,"entries":[]}x`,
	} {
		if _, err := record.ParseDenyList([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := (&Downlink{Kind: "firmware", Version: 1}).MarshalBinary(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown kind: err = %v", err)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	s := &Status{DeviceID: "bus-1", Online: true, Time: time.UnixMilli(1767229250000).UTC(), QueueDepth: 3, OldestUnsentSec: 40,
		LastSeq: 99, Versions: map[string]uint64{"keyring": 2}}
	p, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseStatus(p)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Errorf("status round trip: %+v, %v", got, err)
	}
	if _, err := ParseStatus([]byte(`{"device":"bus-1","queue_depth":-1}`)); err == nil {
		t.Errorf("negative depth accepted")
	}
}

// ParseStatus checks the software version, the assignment and the update
// report; a status a validator sends (a release or development build, each
// assignment source) passes.
func TestParseStatusChecks(t *testing.T) {
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	good := func() *Status {
		return &Status{DeviceID: "bus-1", Online: true, Software: "v1.4.0", Epoch: strings.Repeat("0f", 16),
			OutOfService: "queue_damaged: queue.db unreadable; run reset-queue", Versions: map[string]uint64{"keyring": 2, "fares": 7},
			Salvage:      &SalvageStatus{File: "queue.db.damaged-1", At: at, Epoch: strings.Repeat("a1", 16), Records: 3, LostPages: 1},
			Assignment:   &StatusAssignment{Route: "42", Vehicle: "BUS-7", Source: AssignSourceServer, ServerVersion: 3},
			Update:       &UpdateStatus{Pending: "1.5.0", Failed: "1.4.1-rc.1", FailedReason: "download: Get …: connection refused", FailedAt: at},
			CertNotAfter: time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)}
	}
	for _, tc := range []struct {
		name string
		edit func(s *Status)
		ok   bool
	}{
		{"a release build", func(*Status) {}, true},
		{"a build without LDFLAGS", func(s *Status) { s.Software = "dev" }, true},
		{"git describe, no tag", func(s *Status) { s.Software = "98b475d-dirty" }, true},
		{"git describe, a tag", func(s *Status) { s.Software = "v1.4.0-3-g98b475d-dirty" }, true},
		{"no software", func(s *Status) { s.Software = "" }, true},
		{"no assignment, no update", func(s *Status) { s.Assignment, s.Update = nil, nil }, true},
		{"config assignment", func(s *Status) { s.Assignment.Source, s.Assignment.ServerVersion = AssignSourceConfig, 0 }, true},
		{"local after server", func(s *Status) { s.Assignment.Source = AssignSourceLocal }, true},
		{"no vehicle", func(s *Status) { s.Assignment.Vehicle = "" }, true},
		// What a validator of the release before holds: a Hebrew route
		// with its bidirectional marks and embedding.
		{"a route with bidirectional marks", func(s *Status) { s.Assignment.Route = "\u202b\u05e7\u05d5 5\u200f\u202c" }, true},
		{"only pending", func(s *Status) { s.Update = &UpdateStatus{Pending: "1.5.0"} }, true},
		{"reason at the limit", func(s *Status) { s.Update.FailedReason = strings.Repeat("x", MaxFailedReason) }, true},
		{"no epoch, in service", func(s *Status) { s.Epoch, s.OutOfService = "", "" }, true},
		{"epoch of 64 bytes", func(s *Status) { s.Epoch = strings.Repeat("e", 64) }, true},
		{"out of service, not ASCII", func(s *Status) { s.OutOfService = "hors service: l'horloge n'est pas réglée" }, true},
		{"out of service at the limit", func(s *Status) { s.OutOfService = strings.Repeat("o", MaxOutOfService) }, true},
		{"versions at the limit", func(s *Status) { s.Versions = manyVersions(MaxStatusVersions) }, true},
		{"version at int64", func(s *Status) { s.Versions["fares"] = math.MaxInt64 }, true},
		{"salvage of an unreadable file", func(s *Status) { s.Salvage.Epoch, s.Salvage.Records = "", 0 }, true},
		{"no certificate end (a validator of the release before)", func(s *Status) { s.CertNotAfter = time.Time{} }, true},
		{"certificate end ended", func(s *Status) { s.CertNotAfter = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) }, true},
		{"certificate end at 2200", func(s *Status) { s.CertNotAfter = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }, true},

		{"software with a space", func(s *Status) { s.Software = "1.4.0 beta" }, false},
		{"software with a newline", func(s *Status) { s.Software = "dev\n" }, false},
		{"software of 65 bytes", func(s *Status) { s.Software = strings.Repeat("a", 65) }, false},
		{"software markup", func(s *Status) { s.Software = "<script>" }, false},
		{"software beginning with -", func(s *Status) { s.Software = "-dev" }, false},
		{"empty route", func(s *Status) { s.Assignment.Route = "" }, false},
		{"route of 65 bytes", func(s *Status) { s.Assignment.Route = strings.Repeat("r", 65) }, false},
		{"route with spaces", func(s *Status) { s.Assignment.Route = " 42" }, false},
		{"route with a control character", func(s *Status) { s.Assignment.Route = "4\x1b2" }, false},
		{"route with a C1 control character", func(s *Status) { s.Assignment.Route = "4\u00852" }, false},
		{"vehicle of 65 bytes", func(s *Status) { s.Assignment.Vehicle = strings.Repeat("v", 65) }, false},
		{"vehicle with a newline", func(s *Status) { s.Assignment.Vehicle = "BUS\n7" }, false},
		{"unknown source", func(s *Status) { s.Assignment.Source = "operator" }, false},
		{"no source", func(s *Status) { s.Assignment.Source = "" }, false},
		{"source in capitals", func(s *Status) { s.Assignment.Source = "SERVER" }, false},
		{"server source without version", func(s *Status) { s.Assignment.ServerVersion = 0 }, false},
		{"server version over int64", func(s *Status) { s.Assignment.ServerVersion = math.MaxInt64 + 1 }, false},
		{"pending not a release", func(s *Status) { s.Update.Pending = "dev" }, false},
		{"pending markup", func(s *Status) { s.Update.Pending = "<script>" }, false},
		{"failed not a release", func(s *Status) { s.Update.Failed = "1.4.x" }, false},
		{"failed of 65 bytes", func(s *Status) { s.Update.Failed = "1.4.0-" + strings.Repeat("a", 59) }, false},
		{"reason without failed", func(s *Status) { s.Update.Failed, s.Update.FailedAt = "", time.Time{} }, false},
		{"time without failed", func(s *Status) { s.Update.Failed, s.Update.FailedReason = "", "" }, false},
		{"time before 1970", func(s *Status) { s.Update.FailedAt = time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
		{"time after 2262", func(s *Status) { s.Update.FailedAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
		{"epoch of 65 bytes", func(s *Status) { s.Epoch = strings.Repeat("e", 65) }, false},
		{"epoch with a newline", func(s *Status) { s.Epoch = "e\n" }, false},
		{"versions over the limit", func(s *Status) { s.Versions = manyVersions(MaxStatusVersions + 1) }, false},
		{"version without a kind", func(s *Status) { s.Versions[""] = 1 }, false},
		{"version kind of 65 bytes", func(s *Status) { s.Versions[strings.Repeat("k", 65)] = 1 }, false},
		{"version kind with a tab", func(s *Status) { s.Versions["key\tring"] = 1 }, false},
		{"version over int64", func(s *Status) { s.Versions["fares"] = math.MaxInt64 + 1 }, false},
		{"salvage without a file", func(s *Status) { s.Salvage.File = "" }, false},
		{"salvage of a path", func(s *Status) { s.Salvage.File = "../etc/passwd" }, false},
		{"salvage file with a newline", func(s *Status) { s.Salvage.File = "queue.db\n" }, false},
		{"salvage file of 256 bytes", func(s *Status) { s.Salvage.File = strings.Repeat("f", 256) }, false},
		{"salvage epoch of 65 bytes", func(s *Status) { s.Salvage.Epoch = strings.Repeat("e", 65) }, false},
		{"salvage epoch with an escape", func(s *Status) { s.Salvage.Epoch = "\x1b" }, false},
		{"salvage without a time", func(s *Status) { s.Salvage.At = time.Time{} }, false},
		{"salvage figures negative", func(s *Status) { s.Salvage.Damaged = -1 }, false},
		{"queue figures negative", func(s *Status) { s.OldestUnsentSec = -1 }, false},
		{"certificate end before 2000", func(s *Status) { s.CertNotAfter = time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC) }, false},
		{"certificate end in 9999", func(s *Status) { s.CertNotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.edit(s)
			p, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseStatus(p)
			if tc.ok {
				if err != nil || !reflect.DeepEqual(got, s) {
					t.Errorf("ParseStatus = %+v, %v; want %+v", got, err, s)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || got != nil {
				t.Errorf("ParseStatus = %+v, %v; want ErrMalformed", got, err)
			}
		})
	}
	// The free texts of a validator of the release before the check are
	// kept as printable text, cut: its status is taken.
	for _, tc := range []struct {
		edit func(s *Status)
		want func(s *Status) bool
	}{
		{func(s *Status) { s.OutOfService = "clock: \x1b[2J" }, func(s *Status) bool { return s.OutOfService == "clock:  [2J" }},
		{func(s *Status) { s.OutOfService = "clock\u009b2J" }, func(s *Status) bool { return s.OutOfService == "clock 2J" }},
		{func(s *Status) { s.OutOfService = strings.Repeat("o", MaxOutOfService+1) },
			func(s *Status) bool { return s.OutOfService == strings.Repeat("o", MaxOutOfService) }},
		{func(s *Status) { s.Update.FailedReason = "download: \x1b[31mGet…\n" },
			func(s *Status) bool { return s.Update.FailedReason == "download:  [31mGet… " }},
		{func(s *Status) { s.Update.FailedReason = strings.Repeat("é", MaxFailedReason) },
			func(s *Status) bool { return s.Update.FailedReason == strings.Repeat("é", MaxFailedReason/2) }},
	} {
		s := good()
		tc.edit(s)
		p, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseStatus(p)
		if err != nil || !tc.want(got) || got.Check() != nil {
			t.Errorf("ParseStatus of an old validator's free text = %+v, %v", got, err)
		}
	}
	// JSON carries no invalid UTF-8 (Marshal replaces it): Check, which
	// the device runs before marshalling, refuses it.
	for _, edit := range []func(s *Status){
		func(s *Status) { s.Epoch = "e\xff" },
		func(s *Status) { s.OutOfService = "clock \xc3" },
		func(s *Status) { s.Salvage.File = "q\xff" },
	} {
		s := good()
		edit(s)
		if err := s.Check(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Check(%+v) = %v, want ErrMalformed", s, err)
		}
	}
	// The sources the validator reports are the ones the wire takes.
	for _, src := range []string{agent.AssignConfig, agent.AssignLocal, agent.AssignServer} {
		a := StatusAssignment{Route: "42", Source: src, ServerVersion: 1}
		if err := a.check(); err != nil {
			t.Errorf("the validator's source %q: %v", src, err)
		}
	}
}

func TestTopics(t *testing.T) {
	tp := Topics{Prefix: "city/"}
	if got := tp.Device("bus-1", KindTaps); got != "city/dev/bus-1/taps" {
		t.Errorf("Device = %q", got)
	}
	if got := Shared("settlement", tp.AllDevices(KindTaps)); got != "$share/settlement/city/dev/+/taps" {
		t.Errorf("Shared = %q", got)
	}
	id, kind, err := tp.ParseDevice("city/dev/bus-1/ack")
	if err != nil || id != "bus-1" || kind != KindAck {
		t.Errorf("ParseDevice = %q, %q, %v", id, kind, err)
	}
	for _, bad := range []string{"city/dev/bus-1/taps/x", "city/dev/+/taps", "farego/dev/bus-1/taps", "city/dev//taps", "city/dev/bus-1/firmware"} {
		if _, _, err := tp.ParseDevice(bad); !errors.Is(err, ErrBadTopic) {
			t.Errorf("ParseDevice(%q): err = %v", bad, err)
		}
	}
	if k, err := (Topics{}).ParseFleet("farego/fleet/denylist"); err != nil || k != record.DocDenyList {
		t.Errorf("ParseFleet = %q, %v", k, err)
	}
	for _, id := range []string{"", "a/b", "a+b", "#", strings.Repeat("a", 65), "-a"} {
		if record.ValidDeviceID(id) == nil {
			t.Errorf("record.ValidDeviceID(%q) accepted", id)
		}
	}
}

func TestAssignment(t *testing.T) {
	a := Assignment{DeviceID: "bus-7", Version: 4, Route: "42", Vehicle: "BUS 7", IssuedAt: time.UnixMilli(1767225600123).UTC()}
	p, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseAssignment(p)
	if err != nil || *got != a {
		t.Fatalf("ParseAssignment = %+v, %v; want %+v", got, err, a)
	}
	for _, bad := range []Assignment{
		{DeviceID: "bus/7", Version: 1, Route: "42"},
		{DeviceID: "bus-7", Version: 0, Route: "42"},
		{DeviceID: "bus-7", Version: 1, Route: ""},
		{DeviceID: "bus-7", Version: 1, Route: "4\n2"},
		{DeviceID: "bus-7", Version: 1, Route: " 42"},
		{DeviceID: "bus-7", Version: 1, Route: "42", Vehicle: strings.Repeat("v", 65)},
	} {
		if _, err := bad.MarshalBinary(); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
	if _, err := ParseAssignment(append(p, 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}

func manyVersions(n int) map[string]uint64 {
	m := map[string]uint64{}
	for i := range n {
		m[fmt.Sprintf("kind-%02d", i)] = uint64(i)
	}
	return m
}

// A status Check refuses passes once sanitized, keeping what passed; one
// that passes is left as it was.
func TestStatusSanitize(t *testing.T) {
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	good := &Status{DeviceID: "bus-1", Online: true, Software: "1.4.0", Epoch: "e1", OutOfService: "clock: unset",
		Versions:   map[string]uint64{"fares": 2},
		Salvage:    &SalvageStatus{File: "q.db.damaged", At: at, Records: 1},
		Assignment: &StatusAssignment{Route: "42", Source: AssignSourceConfig},
		Update:     &UpdateStatus{Failed: "1.4.1", FailedReason: "x", FailedAt: at}}
	s := *good
	s.Sanitize()
	if !reflect.DeepEqual(&s, good) {
		t.Errorf("Sanitize changed a good status: %+v", s)
	}
	bad := &Status{DeviceID: "bus-1", Online: true, Software: "dev build\n", Epoch: "e\x00" + strings.Repeat("e", 70),
		QueueDepth: -1, OutOfService: "open /q.db: \x1b[31mpermission denied\n" + strings.Repeat("é", 100),
		Versions:   manyVersions(MaxStatusVersions + 5),
		Salvage:    &SalvageStatus{File: "a/b\n", At: at, Epoch: "\xff", Records: -2},
		Assignment: &StatusAssignment{Route: "42\n", Source: AssignSourceConfig},
		Update:     &UpdateStatus{Failed: "1.4.1", FailedReason: "\x1b" + strings.Repeat("r", 2000), FailedAt: at}}
	bad.Versions["bad\tkind"] = 1
	bad.Versions["fares"] = math.MaxUint64
	if bad.Check() == nil {
		t.Fatal("Check passed the bad status")
	}
	bad.Sanitize()
	if err := bad.Check(); err != nil {
		t.Fatalf("sanitized status: %v", err)
	}
	if bad.Software != "" || bad.Assignment != nil || bad.QueueDepth != 0 || len(bad.Versions) != MaxStatusVersions ||
		bad.Versions["kind-00"] != 0 || bad.Salvage == nil || bad.Salvage.File != "a_b " || bad.Update == nil ||
		!strings.HasPrefix(bad.OutOfService, "open /q.db:  [31mpermission denied é") {
		t.Errorf("sanitized status: %+v", bad)
	}
	if _, ok := bad.Versions["kind-00"]; !ok {
		t.Errorf("sanitized versions dropped a good one: %v", bad.Versions)
	}
}
