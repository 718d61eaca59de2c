package powercut

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/wire"
)

// The agent's buckets and keys in the queue file (agent/state.go).
var (
	bucketSeen  = []byte("agent.seen")  // code id key → code time (u32) ‖ seq (u64)
	bucketState = []byte("agent.state") // kind → version (u64) ‖ document; "chain" → last record hash
	keyChain    = []byte("chain")
)

// Record is one tap record found in a validator's queue file.
type Record struct {
	Seq      uint64
	CodeHash string // paycode.ShortHash of the code's text
	Archived bool   // acked, kept in the archive
	Tap      *wire.Tap
}

// Validator is what a validator's queue file holds after a power cut, as
// InspectValidator read it.
type Validator struct {
	Epoch    string
	LastSeq  uint64
	Records  map[uint64]Record // unacked and archived, by sequence number
	Versions map[string]uint64 // applied document versions, by kind
	// Problems are the ways the file disagrees with itself: the queue's
	// check, a record whose code has no seen entry for it (or another
	// one), a seen entry past the last sequence number, a hash chain that
	// does not end at the last record, a record decided with a document
	// version newer than the device's.
	Problems []string
}

// InspectValidator reads the queue and device state of the validator
// whose queue q is, and checks that they agree.
func InspectValidator(q *queue.Queue) (*Validator, error) {
	v := &Validator{Epoch: q.Epoch(), Records: map[uint64]Record{}, Versions: map[string]uint64{}}
	problem := func(format string, a ...any) { v.Problems = append(v.Problems, fmt.Sprintf(format, a...)) }
	if err := q.Check(); err != nil {
		problem("queue check: %v", err)
	}
	st, err := q.Stats()
	if err != nil {
		return nil, err
	}
	v.LastSeq = st.LastSeq
	err = q.DB().View(func(tx *bbolt.Tx) error {
		seen, state := tx.Bucket(bucketSeen), tx.Bucket(bucketState)
		if seen == nil || state == nil {
			if st.LastSeq >= 1 && (st.Count > 0 || st.Archived > 0) {
				problem("records but no device state")
			}
			return nil
		}
		for _, kind := range wire.DownlinkKinds {
			if b := state.Get([]byte(kind)); len(b) >= 8 {
				v.Versions[kind] = binary.BigEndian.Uint64(b)
			}
		}
		var last []byte
		for _, b := range []struct {
			name     string
			header   int
			archived bool
		}{{queue.PendingBucket, 8, false}, {queue.ArchiveBucket, 16, true}} {
			err := tx.Bucket([]byte(b.name)).ForEach(func(k, val []byte) error {
				seq := binary.BigEndian.Uint64(k)
				rec := val[b.header:]
				tap, err := wire.ParseTap(rec)
				if err != nil {
					return fmt.Errorf("record %d: %w", seq, err)
				}
				code, err := paycode.ParseCode(tap.Code)
				if err != nil {
					return fmt.Errorf("record %d: %w", seq, err)
				}
				r := Record{Seq: seq, CodeHash: paycode.ShortHash(code.Text()), Archived: b.archived, Tap: tap}
				v.Records[seq] = r
				if tap.Seq != seq || tap.Epoch != v.Epoch {
					problem("record %d says seq %d, epoch %s (file epoch %s)", seq, tap.Seq, tap.Epoch, v.Epoch)
				}
				if seq == st.LastSeq {
					last = bytes.Clone(rec)
				}
				// The state that refuses the code again commits with the record.
				if sv := seen.Get(code.ID().Key()); len(sv) != 12 || binary.BigEndian.Uint64(sv[4:]) != seq {
					problem("record %d: its code %s has no seen entry for it (%x)", seq, r.CodeHash, sv)
				}
				if tap.FareVersion > v.Versions[wire.DownlinkFares] || tap.KeyringVersion > v.Versions[wire.DownlinkKeyring] {
					problem("record %d was decided with fares v%d, keyring v%d, but the device has %v",
						seq, tap.FareVersion, tap.KeyringVersion, v.Versions)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		err := seen.ForEach(func(k, sv []byte) error {
			if len(sv) != 12 {
				problem("seen entry %x: %d bytes", k, len(sv))
			} else if s := binary.BigEndian.Uint64(sv[4:]); s > st.LastSeq {
				problem("seen entry for seq %d, past the last sequence number %d", s, st.LastSeq)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if last != nil {
			if h := wire.RecordHash(last); !bytes.Equal(state.Get(keyChain), h[:]) {
				problem("the hash chain does not end at the last record %d", st.LastSeq)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("powercut: inspect %s: %w", q.Path(), err)
	}
	return v, nil
}
