package record

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The deny list at scale is cut into shards by account: each shard is a
// document of its own (DocDenyShard), published on a topic of its own and
// versioned with the deny-list version it was cut from, so that a million
// entries reach a validator in messages of a few dozen kilobytes, and a
// change resends only the shards it touched.
const (
	// DenyShardCount is the number of shards.
	DenyShardCount = 256
	// MaxDenyShardSize bounds an encoded shard (and so the downlink that
	// carries it, before compression).
	MaxDenyShardSize = 256 << 10
	denyShardFormat  = 1
)

// DocDenyShard is the kind of a deny-list shard document (a DenyShard,
// binary). It is not in DocKinds: shards travel on topics of their own
// (PREFIX/fleet/denylist/N) and apply to the deny list.
const DocDenyShard = "denyshard"

// DenyShardOf returns the shard of an account: a mix of its bits (the
// splitmix64 finalizer), so that accounts numbered in sequence or in any
// pattern spread evenly.
func DenyShardOf(account uint64) int {
	z := account
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z >> 56) // DenyShardCount = 256
}

// DenyShardKey is the name under which a shard's version is reported
// among a device's document versions ("denylist/17").
func DenyShardKey(n int) string { return DocDenyList + "/" + strconv.Itoa(n) }

// DocumentVersions returns a device's document versions without the deny
// list's shards (DenyShardKey): what a status or an operator is shown,
// where the "denylist" version stands for them all. It changes v and
// returns it.
func DocumentVersions(v map[string]uint64) map[string]uint64 {
	for k := range v {
		if strings.Contains(k, "/") {
			delete(v, k)
		}
	}
	return v
}

// DenyShard is the part of the deny list whose accounts fall in shard
// Index, in compact form: parallel arrays sorted by account, then serial.
// A validator looks entries up by binary search, without a map entry per
// account.
type DenyShard struct {
	Index    int
	Accounts []uint64
	Serials  []uint32 // 0: the whole account
	Expires  []uint32 // unix seconds after which the entry no longer matters; 0: never
}

// Len returns the number of entries.
func (s *DenyShard) Len() int { return len(s.Accounts) }

// Denied reports whether the shard refuses account's credential serial at
// time now: an entry for the whole account or for that serial, not yet
// expired.
func (s *DenyShard) Denied(account uint64, serial uint32, now time.Time) bool {
	t := now.Unix()
	i := sort.Search(len(s.Accounts), func(i int) bool { return s.Accounts[i] >= account })
	for ; i < len(s.Accounts) && s.Accounts[i] == account; i++ {
		if (s.Serials[i] == 0 || s.Serials[i] == serial) && (s.Expires[i] == 0 || t < int64(s.Expires[i])) {
			return true
		}
	}
	return false
}

// Expired returns the shard without the entries expired at now (s itself
// if none is).
func (s *DenyShard) Expired(now time.Time) *DenyShard {
	t := now.Unix()
	n := 0
	for _, e := range s.Expires {
		if e == 0 || t < int64(e) {
			n++
		}
	}
	if n == len(s.Expires) {
		return s
	}
	out := &DenyShard{Index: s.Index, Accounts: make([]uint64, 0, n), Serials: make([]uint32, 0, n), Expires: make([]uint32, 0, n)}
	for i, e := range s.Expires {
		if e == 0 || t < int64(e) {
			out.Accounts = append(out.Accounts, s.Accounts[i])
			out.Serials = append(out.Serials, s.Serials[i])
			out.Expires = append(out.Expires, e)
		}
	}
	return out
}

// DenyShards cuts deny entries into DenyShardCount shards. An entry whose
// Expires is set and not after now is left out; an account and serial
// listed more than once keep the latest expiry (never, if any says so).
func DenyShards(entries []DenyEntry, now time.Time) []DenyShard {
	type entry struct {
		account uint64
		serial  uint32
		expires uint32
	}
	all := make([]entry, 0, len(entries))
	for _, e := range entries {
		if e.Account == 0 || (e.Expires != 0 && e.Expires <= now.Unix()) {
			continue
		}
		all = append(all, entry{e.Account, e.Serial, uint32(min(max(e.Expires, 0), math.MaxUint32))})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].account != all[j].account {
			return all[i].account < all[j].account
		}
		return all[i].serial < all[j].serial
	})
	out := make([]DenyShard, DenyShardCount)
	for i := range out {
		out[i].Index = i
	}
	for i := 0; i < len(all); {
		e := all[i]
		for i++; i < len(all) && all[i].account == e.account && all[i].serial == e.serial; i++ {
			if x := all[i].expires; e.expires != 0 && (x == 0 || x > e.expires) {
				e.expires = x
			}
		}
		s := &out[DenyShardOf(e.account)]
		s.Accounts = append(s.Accounts, e.account)
		s.Serials = append(s.Serials, e.serial)
		s.Expires = append(s.Expires, e.expires)
	}
	return out
}

// MarshalBinary encodes the shard:
//
//	u8 format (1) | u16 index | u16 shard count | uvarint entries |
//	uvarint expiry base (unix s) | per entry: uvarint account delta,
//	uvarint serial, uvarint expiry (0 never, else expiry - base + 1)
//
// Accounts are delta-coded from the previous one (from 0 for the first),
// so the entries must be sorted (they are, from DenyShards).
func (s *DenyShard) MarshalBinary() ([]byte, error) {
	n := len(s.Accounts)
	if s.Index < 0 || s.Index >= DenyShardCount || len(s.Serials) != n || len(s.Expires) != n {
		return nil, fmt.Errorf("%w: deny shard %d with %d/%d/%d entries", ErrMalformed, s.Index, n, len(s.Serials), len(s.Expires))
	}
	base := uint32(0)
	for _, e := range s.Expires {
		if e != 0 && (base == 0 || e < base) {
			base = e
		}
	}
	enc := Encoder{B: make([]byte, 0, 16+6*n)}
	enc.U8(denyShardFormat)
	enc.U16(uint16(s.Index))
	enc.U16(DenyShardCount)
	enc.Uvar(uint64(n))
	enc.Uvar(uint64(base))
	prev := uint64(0)
	for i, a := range s.Accounts {
		if a == 0 || a < prev || (i > 0 && a == prev && s.Serials[i] <= s.Serials[i-1]) || DenyShardOf(a) != s.Index {
			return nil, fmt.Errorf("%w: deny shard %d: entry %d (account %d) out of order or of another shard", ErrMalformed, s.Index, i, a)
		}
		enc.Uvar(a - prev)
		enc.Uvar(uint64(s.Serials[i]))
		if e := s.Expires[i]; e == 0 {
			enc.Uvar(0)
		} else {
			enc.Uvar(uint64(e-base) + 1)
		}
		prev = a
		if len(enc.B) > MaxDenyShardSize {
			return nil, fmt.Errorf("%w: deny shard %d passes %d bytes at entry %d of %d", ErrTooLarge, s.Index, MaxDenyShardSize, i, n)
		}
	}
	return enc.B, nil
}

// ParseDenyShard decodes a shard strictly: the format and shard count
// this program knows, entries sorted, of this shard, every field in range.
func ParseDenyShard(b []byte) (*DenyShard, error) {
	if len(b) > MaxDenyShardSize {
		return nil, fmt.Errorf("%w: deny shard of %d bytes, limit %d", ErrTooLarge, len(b), MaxDenyShardSize)
	}
	d := NewDecoder(b, ErrMalformed)
	if v := d.U8("format"); d.Err() == nil && v != denyShardFormat {
		return nil, fmt.Errorf("%w: deny shard format %d", ErrUnsupported, v)
	}
	s := &DenyShard{Index: int(d.U16("index"))}
	if c := d.U16("shard count"); d.Err() == nil && c != DenyShardCount {
		return nil, fmt.Errorf("%w: deny list in %d shards, this program uses %d", ErrUnsupported, c, DenyShardCount)
	}
	n := d.Uvar("entries")
	base := d.Uvar("expiry base")
	if err := d.Err(); err != nil {
		return nil, err
	}
	// Each entry takes at least 3 bytes: the count cannot pass what is left.
	if s.Index >= DenyShardCount || n > uint64(len(b))/3 || base > math.MaxUint32 {
		return nil, fmt.Errorf("%w: deny shard %d: %d entries in %d bytes, expiry base %d", ErrMalformed, s.Index, n, len(b), base)
	}
	s.Accounts, s.Serials, s.Expires = make([]uint64, 0, n), make([]uint32, 0, n), make([]uint32, 0, n)
	prev := uint64(0)
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		delta, serial, exp := d.Uvar("account"), d.Uvar("serial"), d.Uvar("expiry")
		if d.Err() != nil {
			break
		}
		a := prev + delta
		switch {
		case a < prev || a == 0:
			d.Fail("entry %d: account out of range", i)
		case delta == 0 && i > 0 && serial <= uint64(s.Serials[i-1]):
			d.Fail("entry %d: not after the one before", i)
		case serial > math.MaxUint32 || (exp != 0 && exp-1 > math.MaxUint32-base):
			d.Fail("entry %d: serial or expiry out of range", i)
		case DenyShardOf(a) != s.Index:
			d.Fail("entry %d: account %d belongs to shard %d", i, a, DenyShardOf(a))
		}
		if d.Err() != nil {
			break
		}
		e := uint32(0)
		if exp != 0 {
			e = uint32(base + exp - 1)
		}
		s.Accounts, s.Serials, s.Expires = append(s.Accounts, a), append(s.Serials, uint32(serial)), append(s.Expires, e)
		prev = a
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	return s, nil
}
