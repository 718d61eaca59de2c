package agent

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// SalvageReport says what Salvage recovered from a damaged queue file.
type SalvageReport struct {
	File  string // the damaged file (base name)
	Epoch string // its queue epoch
	// Records is how many unsent tap records were adopted, to be sent
	// under their own epoch and sequence numbers.
	Records int
	// Damaged is how many records were read but not adopted: they do not
	// decode as this device's taps, or the hash chain shows their bytes
	// changed. They stay in the damaged file.
	Damaged int
	// LostPages is how many pages of the file could not be read: the
	// records in them are lost. Expected is how many unsent records the
	// file counted (-1 if unknown).
	LostPages int
	Expected  int
	// LastSeq is the last sequence number the file handed out, as far as
	// can be read: a new file must number above it.
	LastSeq uint64
	// State: the device state (seen codes, per-account counters, the
	// documents and the head of the record chain) was restored.
	State bool
	// Scanned: the file's meta pages were lost and it was read page by
	// page (queue.Salvage.Scanned): records delivered already may be among
	// Records (the server acks them again), and there is no state.
	Scanned bool
}

// Salvage adopts into q (a new or sound queue file of this device) the
// unsent tap records of deviceID that can be read from the damaged queue
// file s, so the uplink sends them under their own epoch and sequence
// numbers (the server settles a resent record once). A file read page by
// page (both its meta pages lost: queue.Salvage.Scanned) gives up records
// delivered already too, which the server acks again, and no state. Each record must
// decode as a tap of this device with its own sequence number and epoch,
// and agree with the hash chain: a record whose hash the next record's
// PrevHash (or, for the last one, the stored chain head) contradicts is
// counted as damaged and left out. With restoreState (q is a new file),
// the device state the damaged file held is restored too, so codes seen
// before still refuse a second use; call it before New. Adopting the same
// file twice adds nothing.
func Salvage(q *queue.Queue, s *queue.Salvage, deviceID string, restoreState bool) (SalvageReport, error) {
	rep := SalvageReport{File: filepath.Base(s.Path), Epoch: s.Epoch, LostPages: s.LostPages, Expected: s.Expected,
		LastSeq: s.LastSeq, Scanned: s.Scanned}
	var head []byte
	for _, kv := range s.State[bucketState] {
		if bytes.Equal(kv.Key, keyChain) && len(kv.Value) == len(record.Tap{}.PrevHash) {
			head = kv.Value
		}
	}
	c := &chainCheck{q: q, device: deviceID, rep: &rep, pending: map[string][]queue.Record{}, scanned: s.Scanned}
	if s.Scanned {
		var err error
		if c.pick, err = chooseVersions(s, deviceID); err != nil {
			return rep, fmt.Errorf("agent: salvage %s: %w", s.Path, err)
		}
	}
	err := s.Records(func(epoch string, r queue.Record) error {
		own := epoch == s.Epoch
		return c.add(epoch, own, r)
	})
	if err == nil {
		err = c.finish(s.LastSeq, head)
	}
	if err != nil {
		return rep, fmt.Errorf("agent: salvage %s: %w", s.Path, err)
	}
	if rep.Epoch == "" {
		rep.Epoch = c.ownEpoch
	}
	if restoreState {
		err := q.UpdateState(func(st *queue.State) error {
			for name, kvs := range s.State {
				if !strings.HasPrefix(name, "agent.") {
					continue
				}
				for _, kv := range kvs {
					if err := st.Put(name, kv.Key, kv.Value); err != nil {
						return err
					}
				}
				rep.State = true
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("agent: salvage %s: restore state: %w", s.Path, err)
		}
	}
	return rep, nil
}

// HasState reports whether q holds device state of the agent's: codes
// seen, per-account counters, documents or the record chain. A device
// takes taps only with a keyring and a fare table in its state (the
// provisioned ones are stored at start), so a file without any is one the
// agent never ran on: a new file, or one made for a salvage whose state
// restore (Salvage with restoreState) a power cut cut short.
func HasState(q *queue.Queue) (bool, error) {
	found := errors.New("found")
	err := q.ViewState(func(st *queue.State) error {
		for _, b := range []string{bucketState, bucketSeen, bucketAccounts, bucketDeny} {
			if err := st.ForEach(b, func(_, _ []byte) error { return found }); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, found) {
		return true, nil
	}
	return false, err
}

// chainCheck checks salvaged records against the hash chain as they come
// (in sequence order per epoch) and adopts the good ones in batches.
type chainCheck struct {
	q        *queue.Queue
	device   string
	rep      *SalvageReport
	prev     *salvaged // the last record read, not yet judged
	ownEpoch string    // the file's own epoch, from its records if its meta was lost
	pending  map[string][]queue.Record
	// scanned: the file was read page by page (queue.Salvage.Scanned):
	// state entries and other non-taps come back as records too, and are
	// passed over rather than counted as damaged.
	scanned bool
	taken   map[takenKey]bool // scanned: the records taken
	// pick: of a number found in several versions that decode (scanned),
	// the one to take (chooseVersions), by its hash's first bytes.
	pick map[takenKey]hashPrefix
}

// takenKey is a record's identity: its epoch and sequence number.
type takenKey struct {
	epoch string
	seq   uint64
}

// salvaged is a record read from the damaged file, decoded.
type salvaged struct {
	epoch string
	own   bool
	r     queue.Record
	tap   *record.Tap // nil if it does not decode as a tap of this device
}

// add judges the record before r (now that r shows what its hash should
// be) and keeps r for the next.
func (c *chainCheck) add(epoch string, own bool, r queue.Record) error {
	cur := &salvaged{epoch: epoch, own: own, r: r}
	if t, err := record.ParseTap(r.Data); err == nil && t.DeviceID == c.device && t.Seq == r.Seq &&
		(epoch == "" || t.Epoch == epoch) {
		cur.tap = t
		if cur.epoch == "" {
			cur.epoch = t.Epoch // the file's meta bucket was lost: its records say
		}
	}
	if c.scanned && cur.tap != nil {
		// Versions of one record come most copies first: of a number
		// found in several, the one chooseVersions picked is taken
		// (the one the next tap names), else the first that decodes;
		// the others (never committed, torn copies) are passed over.
		k := takenKey{cur.epoch, r.Seq}
		if want, ok := c.pick[k]; ok && prefixOf(record.Hash(r.Data)) != want {
			return nil // another version of the number: never committed, or torn
		}
		if c.taken[k] {
			return nil
		}
		if c.taken == nil {
			c.taken = map[takenKey]bool{}
		}
		c.taken[k] = true
	}
	if own && cur.tap != nil && c.ownEpoch == "" {
		c.ownEpoch = cur.epoch
	}
	var next []byte
	if c.prev != nil && cur.tap != nil && c.prev.epoch == cur.epoch && c.prev.r.Seq+1 == r.Seq {
		next = cur.tap.PrevHash[:]
	}
	if err := c.judge(next); err != nil {
		return err
	}
	c.prev = cur
	return nil
}

// judge adopts or rejects the held record; want is the hash the next
// record says it has (nil if unknown).
func (c *chainCheck) judge(want []byte) error {
	p := c.prev
	if p == nil {
		return nil
	}
	c.prev = nil
	if p.tap == nil || p.epoch == "" {
		if !c.scanned {
			c.rep.Damaged++
		}
		return nil
	}
	if want != nil {
		if h := record.Hash(p.r.Data); !bytes.Equal(h[:], want) {
			c.rep.Damaged++
			return nil
		}
	}
	c.pending[p.epoch] = append(c.pending[p.epoch], p.r)
	if len(c.pending[p.epoch]) >= 1000 {
		return c.flush(p.epoch)
	}
	return nil
}

// finish judges the last record (against the chain head if it is the
// file's own last record, lastSeq) and adopts what is left.
func (c *chainCheck) finish(lastSeq uint64, head []byte) error {
	var want []byte
	if c.prev != nil && c.prev.own && c.prev.r.Seq == lastSeq && len(head) > 0 {
		want = head
	}
	if err := c.judge(want); err != nil {
		return err
	}
	for e := range c.pending {
		if err := c.flush(e); err != nil {
			return err
		}
	}
	return nil
}

// flush adopts the checked records of epoch.
func (c *chainCheck) flush(epoch string) error {
	recs := c.pending[epoch]
	delete(c.pending, epoch)
	if len(recs) == 0 || epoch == c.q.Epoch() {
		return nil
	}
	// Records adopted already (the same file salvaged twice) count too.
	_, err := c.q.Adopt(epoch, recs)
	c.rep.Records += len(recs)
	return err
}

// hashPrefix is the first bytes of a record hash: enough to tell apart
// the few versions of one sequence number a scan finds.
type hashPrefix [8]byte

func prefixOf(h [32]byte) hashPrefix { return hashPrefix(h[:8]) }

// version is one version of a sequence number found by a scan.
type version struct{ hash, prev hashPrefix }

// chooseVersions picks, for each number of which the scanned file s holds
// several versions that decode as taps of device, the one to take. A
// number is handed out again only when the commit of its first version
// never completed (the power went while it was written), so the file can
// hold the green tap and a never-confirmed one under one number. The tap
// after it names its version (PrevHash): that one is taken, the numbers
// checked from the highest down, each against the version taken of the
// next. A number with no later tap that names a version keeps the scan's
// order (the version found on the most pages first). Scanned records come
// in sequence order, the versions of a number together.
func chooseVersions(s *queue.Salvage, device string) (map[takenKey]hashPrefix, error) {
	dups := map[takenKey][]version{} // numbers with several versions
	next := map[takenKey][]version{} // the versions of the number after each
	var seq uint64
	cur := map[string][]version{} // epoch → the versions of seq
	flush := func() {
		for e, vs := range cur {
			if len(vs) > 1 {
				dups[takenKey{e, seq}] = vs
			}
			if k := (takenKey{e, seq - 1}); dups[k] != nil {
				next[k] = vs
			}
		}
		clear(cur)
	}
	err := s.Records(func(_ string, r queue.Record) error {
		t, err := record.ParseTap(r.Data)
		if err != nil || t.DeviceID != device || t.Seq != r.Seq {
			return nil
		}
		if r.Seq != seq {
			flush()
			seq = r.Seq
		}
		cur[t.Epoch] = append(cur[t.Epoch], version{hash: prefixOf(record.Hash(r.Data)), prev: prefixOf(t.PrevHash)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	flush()
	keys := slices.Collect(maps.Keys(dups))
	slices.SortFunc(keys, func(a, b takenKey) int { return cmp.Compare(b.seq, a.seq) }) // highest first
	pick := make(map[takenKey]hashPrefix, len(keys))
	for _, k := range keys {
		after := next[k]
		if h, ok := pick[takenKey{k.epoch, k.seq + 1}]; ok {
			after = slices.DeleteFunc(slices.Clone(after), func(v version) bool { return v.hash != h })
		}
		vs := dups[k]
		pick[k] = vs[0].hash
		for _, v := range vs {
			if slices.ContainsFunc(after, func(n version) bool { return n.prev == v.hash }) {
				pick[k] = v.hash
				break
			}
		}
	}
	return pick, nil
}
