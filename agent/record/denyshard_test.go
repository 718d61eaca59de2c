package record_test

import (
	"errors"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
)

func TestDenyShards(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	later := now.Add(time.Hour).Unix()
	entries := []record.DenyEntry{
		{Account: 7, Reason: "negative_balance"},
		{Account: 7, Serial: 3, Reason: "code_reused", Expires: later},
		{Account: 7, Serial: 3, Reason: "lost_phone"},                           // the same credential, never expires: wins
		{Account: 9, Serial: 1, Reason: "code_reused", Expires: now.Unix() - 1}, // expired: left out
		{Account: 9, Serial: 2, Reason: "code_reused", Expires: later},
		{Account: 1 << 40, Reason: "fraud"},
	}
	shards := record.DenyShards(entries, now)
	if len(shards) != record.DenyShardCount {
		t.Fatalf("%d shards", len(shards))
	}
	total := 0
	for i := range shards {
		s := &shards[i]
		total += s.Len()
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := record.ParseDenyShard(b)
		if err != nil || got.Index != i || got.Len() != s.Len() {
			t.Fatalf("shard %d round trip: %+v, %v", i, got, err)
		}
		for j := range s.Accounts {
			if got.Accounts[j] != s.Accounts[j] || got.Serials[j] != s.Serials[j] || got.Expires[j] != s.Expires[j] {
				t.Errorf("shard %d entry %d: %d/%d/%d, want %d/%d/%d", i, j, got.Accounts[j], got.Serials[j], got.Expires[j],
					s.Accounts[j], s.Serials[j], s.Expires[j])
			}
		}
	}
	if total != 4 {
		t.Errorf("%d entries in the shards, want 4 (one expired, one duplicate)", total)
	}
	denied := func(acct uint64, serial uint32, at time.Time) bool {
		return shards[record.DenyShardOf(acct)].Denied(acct, serial, at)
	}
	for _, c := range []struct {
		acct   uint64
		serial uint32
		at     time.Time
		want   bool
	}{
		{7, 1, now, true}, {7, 3, now.Add(48 * time.Hour), true}, {9, 1, now, false}, {9, 2, now, true},
		{9, 2, now.Add(2 * time.Hour), false}, {9, 3, now, false}, {1 << 40, 5, now, true}, {8, 0, now, false},
	} {
		if got := denied(c.acct, c.serial, c.at); got != c.want {
			t.Errorf("Denied(%d, %d, %v) = %t, want %t", c.acct, c.serial, c.at, got, c.want)
		}
	}
	s := shards[record.DenyShardOf(9)]
	if e := s.Expired(now.Add(2 * time.Hour)); e.Len() != s.Len()-1 {
		t.Errorf("Expired left %d of %d entries", e.Len(), s.Len())
	}
}

func TestDenyShardStrict(t *testing.T) {
	a := uint64(1)
	for record.DenyShardOf(a) != 0 {
		a++
	}
	b := a + 1
	for record.DenyShardOf(b) != 0 {
		b++
	}
	good := record.DenyShard{Index: 0, Accounts: []uint64{a, b}, Serials: []uint32{0, 0}, Expires: []uint32{0, 5}}
	if _, err := good.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]record.DenyShard{
		"unsorted":       {Index: 0, Accounts: []uint64{b, a}, Serials: []uint32{0, 0}, Expires: []uint32{0, 0}},
		"other shard":    {Index: 1, Accounts: []uint64{a}, Serials: []uint32{0}, Expires: []uint32{0}},
		"twice":          {Index: 0, Accounts: []uint64{a, a}, Serials: []uint32{2, 2}, Expires: []uint32{0, 0}},
		"ragged":         {Index: 0, Accounts: []uint64{a}, Serials: nil, Expires: []uint32{0}},
		"index too high": {Index: record.DenyShardCount},
	} {
		if _, err := s.MarshalBinary(); !errors.Is(err, record.ErrMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	enc, _ := good.MarshalBinary()
	for name, b := range map[string][]byte{
		"truncated":     enc[:len(enc)-1],
		"trailing":      append(append([]byte(nil), enc...), 0),
		"empty":         {},
		"huge count":    {1, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0},
		"other format":  append([]byte{2}, enc[1:]...),
		"other count":   append([]byte{1, 0, 0, 0, 128}, enc[5:]...),
		"account zero":  {1, 0, 0, 1, 0, 1, 0, 0, 0, 0},
		"shard too big": make([]byte, record.MaxDenyShardSize+1),
	} {
		if _, err := record.ParseDenyShard(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// FuzzDenyShard feeds arbitrary bytes to the shard decoder: no panics, and
// whatever decodes re-encodes to the same bytes.
func FuzzDenyShard(f *testing.F) {
	shards := record.DenyShards([]record.DenyEntry{{Account: 7}, {Account: 7, Serial: 3, Expires: 1_900_000_000},
		{Account: 11, Serial: 2}}, time.Unix(1_800_000_000, 0))
	for i := range shards {
		if shards[i].Len() > 0 {
			b, _ := shards[i].MarshalBinary()
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := record.ParseDenyShard(b)
		if err != nil {
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded shard does not re-encode: %v", err)
		}
		s2, err := record.ParseDenyShard(again)
		if err != nil || s2.Len() != s.Len() {
			t.Fatalf("re-encoded shard does not decode alike: %v", err)
		}
	})
}
