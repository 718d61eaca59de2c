package powercut

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// The agent's buckets and keys in the queue file (agent/state.go).
const (
	bucketSeen  = "agent.seen"  // code id key → code time (u32) ‖ seq (u64) ‖ accepted (unix ms, u64) ‖ scanner
	bucketState = "agent.state" // kind → version (u64) ‖ document; "chain" → last record hash
	bucketDeny  = "agent.deny"  // deny-list shard (u16) → version (u64) ‖ shard
)

var keyChain = []byte("chain")

// Record is one tap record found in a validator's queue file.
type Record struct {
	Seq      uint64
	CodeHash string // paycode.ShortHash of the code's text
	Archived bool   // acked, kept in the archive
	Tap      *record.Tap
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
	var last []byte
	hasState := false
	err = q.ViewState(func(s *queue.State) error {
		for _, kind := range record.DocKinds {
			if b := s.Get(bucketState, []byte(kind)); len(b) >= 8 {
				v.Versions[kind] = binary.BigEndian.Uint64(b)
			}
		}
		// The deny list is kept in shards: its version is the newest.
		// Each shard's under record.DenyShardKey, as Agent.Versions.
		return s.ForEach(bucketDeny, func(k, b []byte) error {
			if len(b) >= 8 {
				v.Versions[record.DocDenyList] = max(v.Versions[record.DocDenyList], binary.BigEndian.Uint64(b))
				if len(k) == 2 {
					v.Versions[record.DenyShardKey(int(binary.BigEndian.Uint16(k)))] = binary.BigEndian.Uint64(b)
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	err = q.ViewState(func(s *queue.State) error {
		hasState = s.Get(bucketState, []byte(record.DocKeyring)) != nil || s.Get(bucketState, keyChain) != nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = q.Walk(func(s *queue.State, r queue.Record, archived bool) error {
		seq, rec := r.Seq, r.Data
		tap, err := record.ParseTap(rec)
		if err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		code, err := paycode.ParseCode(tap.Code)
		if err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		rr := Record{Seq: seq, CodeHash: paycode.ShortHash(code.Text()), Archived: archived, Tap: tap}
		v.Records[seq] = rr
		if tap.Seq != seq || tap.Epoch != v.Epoch {
			problem("record %d says seq %d, epoch %s (file epoch %s)", seq, tap.Seq, tap.Epoch, v.Epoch)
		}
		if seq == st.LastSeq {
			last = bytes.Clone(rec)
		}
		// The state that refuses the code again commits with the record.
		if sv := s.Get(bucketSeen, code.ID().Key()); len(sv) < 20 || binary.BigEndian.Uint64(sv[4:]) != seq || string(sv[20:]) != tap.Scanner {
			problem("record %d: its code %s has no seen entry for it (%x)", seq, rr.CodeHash, sv)
		}
		if tap.FareVersion > v.Versions[record.DocFares] || tap.KeyringVersion > v.Versions[record.DocKeyring] {
			problem("record %d was decided with fares v%d, keyring v%d, but the device has %v",
				seq, tap.FareVersion, tap.KeyringVersion, v.Versions)
		}
		return nil
	})
	if err == nil && !hasState && len(v.Records) > 0 {
		problem("records but no device state")
	}
	if err == nil {
		err = q.ViewState(func(s *queue.State) error {
			err := s.ForEach(bucketSeen, func(k, sv []byte) error {
				if len(sv) < 20 || len(sv) > 20+record.MaxScannerName {
					problem("seen entry %x: %d bytes", k, len(sv))
				} else if seq := binary.BigEndian.Uint64(sv[4:]); seq > st.LastSeq {
					problem("seen entry for seq %d, past the last sequence number %d", seq, st.LastSeq)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if last != nil {
				if h := record.Hash(last); !bytes.Equal(s.Get(bucketState, keyChain), h[:]) {
					problem("the hash chain does not end at the last record %d", st.LastSeq)
				}
			}
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("powercut: inspect %s: %w", q.Path(), err)
	}
	return v, nil
}
