package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// The agent's state in the queue's file (queue.State buckets).
const (
	bucketState    = "agent.state"    // kind → version ‖ document; "chain" → last record hash
	bucketSeen     = "agent.seen"     // code id key → code time (u32) ‖ seq (u64) ‖ accepted (unix ms, u64) ‖ scanner
	bucketAccounts = "agent.accounts" // account (u64) → last accepted (unix ms, u64) ‖ taps since sync (u32)
	bucketDeny     = "agent.deny"     // shard (u16) → version (u64) ‖ record.DenyShard encoding
)

var keyChain = []byte("chain")

// snapshot is the device state the tap path reads; it is replaced whole
// (copy on write) when a document is applied.
type snapshot struct {
	keyring  *paycode.Keyring
	fares    *fare.Table
	deny     *denyList
	versions map[string]uint64 // by downlink kind; deny-list shards under record.DenyShardKey
}

// denyList is the deny list as shards in compact sorted arrays (looked up
// by binary search: no map entry per account), each with the deny-list
// version it was cut from. A shard is replaced whole; the list is copied
// on write (an array of pointers).
type denyList struct {
	shards   [record.DenyShardCount]*record.DenyShard // nil: empty
	versions [record.DenyShardCount]uint64
}

func (d *denyList) denied(account uint64, serial uint32, now time.Time) bool {
	s := d.shards[record.DenyShardOf(account)]
	return s != nil && s.Denied(account, serial, now)
}

// entries returns the number of entries held.
func (d *denyList) entries() int {
	n := 0
	for _, s := range d.shards {
		if s != nil {
			n += s.Len()
		}
	}
	return n
}

// newest returns the highest shard version: the newest deny list the
// device has applied part of (its "denylist" version).
func (d *denyList) newest() uint64 {
	var v uint64
	for _, x := range d.versions {
		v = max(v, x)
	}
	return v
}

func (s *snapshot) denied(account uint64, serial uint32, now time.Time) bool {
	return s.deny.denied(account, serial, now)
}

// document is a parsed downlink body.
type document struct {
	version uint64
	keyring *paycode.Keyring
	fares   *fare.Table
	shards  []record.DenyShard // a whole deny list (all shards) or one shard
}

// parseDocument parses a document of kind and checks that its own version
// is the one it is applied as (a shard has no version of its own: the
// downlink's is used). Deny-list entries expired at now are dropped (none
// when now is zero: see expiryClock).
func parseDocument(kind string, version uint64, body []byte, now time.Time) (*document, error) {
	d := &document{}
	switch kind {
	case record.DocKeyring:
		kr, err := paycode.ParseKeyring(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		d.version, d.keyring = kr.Version(), kr
	case record.DocFares:
		t, err := fare.Parse(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		d.version, d.fares = t.Version, t
	case record.DocDenyList:
		dl, err := record.ParseDenyList(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		d.version = dl.Version
		d.shards = record.DenyShards(dl.Entries, now)
	case record.DocDenyShard:
		if version == 0 {
			return nil, fmt.Errorf("%w: a deny-list shard needs the version of its downlink", ErrInvalidDocument)
		}
		s, err := record.ParseDenyShard(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		d.version, d.shards = version, []record.DenyShard{*s.Expired(now)}
	default:
		return nil, fmt.Errorf("%w: unknown kind %q", ErrInvalidDocument, kind)
	}
	if version != 0 && d.version != version {
		return nil, fmt.Errorf("%w: %s document says version %d, sent as version %d", ErrInvalidDocument, kind, d.version, version)
	}
	return d, nil
}

// with returns a copy of s with d applied. Deny-list shards are applied
// only where d is newer than the shard held.
func (s *snapshot) with(kind string, d *document) *snapshot {
	n := *s
	n.versions = maps.Clone(s.versions)
	switch kind {
	case record.DocKeyring:
		n.keyring = d.keyring
		n.versions[kind] = d.version
	case record.DocFares:
		n.fares = d.fares
		n.versions[kind] = d.version
	case record.DocDenyList, record.DocDenyShard:
		dl := *s.deny
		for i := range d.shards {
			sh := &d.shards[i]
			if d.version > dl.versions[sh.Index] {
				dl.shards[sh.Index], dl.versions[sh.Index] = sh, d.version
				n.versions[record.DenyShardKey(sh.Index)] = d.version
			}
		}
		n.deny = &dl
		n.versions[record.DocDenyList] = dl.newest()
	}
	return &n
}

// newer reports which shards of d are newer than held (all of a keyring or
// fare table that is newer).
func (s *snapshot) newer(kind string, d *document) bool {
	switch kind {
	case record.DocDenyList, record.DocDenyShard:
		for i := range d.shards {
			if d.version > s.deny.versions[d.shards[i].Index] {
				return true
			}
		}
		return false
	}
	return d.version > s.versions[kind]
}

// loadState loads the stored documents and deny-list shards.
func loadState(q *queue.Queue, log *slog.Logger) (*snapshot, error) {
	// No deny-list entry is dropped by the clock at the start: it is not
	// measured yet (see expiryClock).
	var now time.Time
	s := &snapshot{versions: map[string]uint64{}, deny: &denyList{}}
	err := q.ViewState(func(st *queue.State) error {
		for _, kind := range record.DocKinds {
			v := st.Get(bucketState, []byte(kind))
			if v == nil {
				continue
			}
			if len(v) < 8 {
				return fmt.Errorf("stored %s is truncated", kind)
			}
			d, err := parseDocument(kind, binary.BigEndian.Uint64(v), v[8:], now)
			if err != nil {
				return fmt.Errorf("stored %s: %w", kind, err)
			}
			s = s.with(kind, d) // a deny list stored whole (older software): converted to shards
		}
		return st.ForEach(bucketDeny, func(k, v []byte) error {
			if len(k) != 2 || len(v) < 8 {
				return fmt.Errorf("stored deny-list shard %x is malformed", k)
			}
			d, err := parseDocument(record.DocDenyShard, binary.BigEndian.Uint64(v), v[8:], now)
			if err != nil {
				return fmt.Errorf("stored deny-list shard %d: %w", binary.BigEndian.Uint16(k), err)
			}
			if d.shards[0].Index != int(binary.BigEndian.Uint16(k)) {
				return fmt.Errorf("stored deny-list shard %d holds shard %d", binary.BigEndian.Uint16(k), d.shards[0].Index)
			}
			s = s.with(record.DocDenyShard, d)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("agent: device state: %w", err)
	}
	for k, v := range s.versions {
		if !strings.Contains(k, "/") {
			log.Info("device state loaded", "kind", k, "version", v)
		}
	}
	log.Info("deny list loaded", "entries", s.deny.entries())
	return s, nil
}

// expiryClock is the time deny-list entries are dropped at (pruneDeny,
// and those already expired in a document applied): the earlier of the
// device's clock and the server's as the device knows it (its own less the
// offset last measured, which follows a jump of the system clock:
// ClockOffset), or the zero time (nothing dropped) before a measurement.
// Not the device's clock alone: one that jumped ahead dropped the entries
// of passes denied until an hour after they expire, stored the shards the
// server sent meanwhile without them, and let those passes through again
// once the clock was back (TestDenyEntriesSurviveClockJump). Nor the
// measured offset alone, which a forged Date can move (see the
// validator's httpClock). An entry kept past its expiry costs a few bytes
// and matches nothing (record.DenyShard.Denied reads the expiry).
func (a *Agent) expiryClock() time.Time {
	off, _, ok := a.ClockOffset()
	if !ok {
		return time.Time{}
	}
	now := a.now()
	return now.Add(-max(off, 0))
}

// Apply installs a new version of a device document: record.DocKeyring,
// DocFares or DocDenyList (a whole deny list, JSON), or one deny-list
// shard (record.DocDenyShard, binary, with its downlink's version). It is
// atomic — stored durably and then swapped in whole — and refuses a
// version that is not newer than the applied one with ErrStaleVersion; a
// whole deny list replaces only the shards older than it. A version of 0
// means "the document's own".
func (a *Agent) Apply(kind string, version uint64, body []byte) error {
	d, err := parseDocument(kind, version, body, a.expiryClock())
	if err != nil {
		return err
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	cur := a.state.Load()
	if !cur.newer(kind, d) {
		have := cur.versions[kind]
		if kind == record.DocDenyShard {
			have = cur.deny.versions[d.shards[0].Index]
		}
		return fmt.Errorf("%w: %s version %d, device has %d", ErrStaleVersion, kind, d.version, have)
	}
	next := cur.with(kind, d)
	err = a.q.UpdateState(func(st *queue.State) error {
		switch kind {
		case record.DocDenyList, record.DocDenyShard:
			legacy := st.Get(bucketState, []byte(record.DocDenyList)) != nil
			for i, sh := range next.deny.shards {
				// Store the shards this document replaced; all of them
				// the first time, if older software stored the list whole.
				if sh == nil || (next.deny.versions[i] == cur.deny.versions[i] && !legacy) {
					continue
				}
				enc, err := sh.MarshalBinary()
				if err != nil {
					return err
				}
				val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(enc)), next.deny.versions[i])
				if err := st.Put(bucketDeny, binary.BigEndian.AppendUint16(nil, uint16(i)), append(val, enc...)); err != nil {
					return err
				}
			}
			if legacy {
				return st.Delete(bucketState, []byte(record.DocDenyList))
			}
			return nil
		}
		val := binary.BigEndian.AppendUint64(nil, d.version)
		return st.Put(bucketState, []byte(kind), append(val, body...))
	})
	if err != nil {
		return fmt.Errorf("agent: storing %s: %w", kind, err)
	}
	a.state.Store(next)
	switch kind {
	case record.DocDenyShard:
		a.log.Debug("deny-list shard updated", "shard", d.shards[0].Index, "version", d.version, "entries", d.shards[0].Len())
	case record.DocDenyList:
		a.log.Info("device state updated", "kind", kind, "version", d.version, "entries", next.deny.entries())
	default:
		a.log.Info("device state updated", "kind", kind, "version", d.version)
	}
	return nil
}

// pruneDeny drops the deny-list entries expired by the server's clock
// (expiryClock) from memory (they no longer match anyway; the stored
// shards lose them when next replaced); none before the clock was
// measured.
func (a *Agent) pruneDeny() int {
	now := a.expiryClock()
	if now.IsZero() {
		return 0
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	cur := a.state.Load()
	dl := *cur.deny
	dropped := 0
	for i, s := range dl.shards {
		if s == nil {
			continue
		}
		if e := s.Expired(now); e != s {
			dropped += s.Len() - e.Len()
			dl.shards[i] = e
		}
	}
	if dropped > 0 {
		n := *cur
		n.deny = &dl
		a.state.Store(&n)
	}
	return dropped
}

// Seed applies a provisioning-bundle document if it is newer than the
// device's; an older or equal one is kept out without error.
func (a *Agent) Seed(kind string, body []byte) error {
	err := a.Apply(kind, 0, body)
	if errors.Is(err, ErrStaleVersion) {
		a.log.Debug("provisioning document not newer than device state", "kind", kind)
		return nil
	}
	return err
}

// Versions returns the applied document versions by kind, with each
// deny-list shard's under record.DenyShardKey(n) ("denylist/17") and the
// newest of them under "denylist".
func (a *Agent) Versions() map[string]uint64 { return maps.Clone(a.state.Load().versions) }

// DenyEntries returns how many deny-list entries the device holds.
func (a *Agent) DenyEntries() int { return a.state.Load().deny.entries() }
