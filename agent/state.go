package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// The agent's state in the queue's file (queue.State buckets).
const (
	bucketState    = "agent.state"    // kind → version ‖ document; "chain" → last record hash
	bucketSeen     = "agent.seen"     // code id key → code time (u32) ‖ seq (u64)
	bucketAccounts = "agent.accounts" // account (u64) → last accepted (unix ms, u64) ‖ taps since sync (u32)
)

var keyChain = []byte("chain")

// snapshot is the device state the tap path reads; it is replaced whole
// (copy on write) when a document is applied.
type snapshot struct {
	keyring  *paycode.Keyring
	fares    *fare.Table
	deny     map[uint64]denyRule
	versions map[string]uint64 // by downlink kind
}

// denyRule is the deny list's view of one account.
type denyRule struct {
	all     bool
	serials map[uint32]bool
}

func (s *snapshot) denied(account uint64, serial uint32) bool {
	r, ok := s.deny[account]
	return ok && (r.all || r.serials[serial])
}

// document is a parsed downlink body.
type document struct {
	version uint64
	keyring *paycode.Keyring
	fares   *fare.Table
	deny    map[uint64]denyRule
}

// parseDocument parses a document of kind and checks that its own version
// is the one it is applied as.
func parseDocument(kind string, version uint64, body []byte) (*document, error) {
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
		d.deny = make(map[uint64]denyRule, len(dl.Entries))
		for _, e := range dl.Entries {
			r := d.deny[e.Account]
			if e.Serial == 0 {
				r.all = true
			} else {
				if r.serials == nil {
					r.serials = map[uint32]bool{}
				}
				r.serials[e.Serial] = true
			}
			d.deny[e.Account] = r
		}
	default:
		return nil, fmt.Errorf("%w: unknown kind %q", ErrInvalidDocument, kind)
	}
	if version != 0 && d.version != version {
		return nil, fmt.Errorf("%w: %s document says version %d, sent as version %d", ErrInvalidDocument, kind, d.version, version)
	}
	return d, nil
}

// with returns a copy of s with d applied.
func (s *snapshot) with(kind string, d *document) *snapshot {
	n := *s
	n.versions = maps.Clone(s.versions)
	n.versions[kind] = d.version
	switch kind {
	case record.DocKeyring:
		n.keyring = d.keyring
	case record.DocFares:
		n.fares = d.fares
	case record.DocDenyList:
		n.deny = d.deny
	}
	return &n
}

// loadState loads the stored documents.
func loadState(q *queue.Queue, log *slog.Logger) (*snapshot, error) {
	s := &snapshot{versions: map[string]uint64{}, deny: map[uint64]denyRule{}}
	err := q.ViewState(func(st *queue.State) error {
		for _, kind := range record.DocKinds {
			v := st.Get(bucketState, []byte(kind))
			if v == nil {
				continue
			}
			if len(v) < 8 {
				return fmt.Errorf("stored %s is truncated", kind)
			}
			d, err := parseDocument(kind, binary.BigEndian.Uint64(v), v[8:])
			if err != nil {
				return fmt.Errorf("stored %s: %w", kind, err)
			}
			s = s.with(kind, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: device state: %w", err)
	}
	for k, v := range s.versions {
		log.Info("device state loaded", "kind", k, "version", v)
	}
	return s, nil
}

// Apply installs a new version of a device document (kind is
// record.DocKeyring, DownlinkDenyList or DownlinkFares; body is its JSON).
// It is atomic — stored durably and then swapped in whole — and refuses a
// version that is not newer than the applied one with ErrStaleVersion. A
// version of 0 means "the document's own".
func (a *Agent) Apply(kind string, version uint64, body []byte) error {
	d, err := parseDocument(kind, version, body)
	if err != nil {
		return err
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	cur := a.state.Load()
	if have := cur.versions[kind]; d.version <= have {
		return fmt.Errorf("%w: %s version %d, device has %d", ErrStaleVersion, kind, d.version, have)
	}
	val := binary.BigEndian.AppendUint64(nil, d.version)
	val = append(val, body...)
	if err := a.q.UpdateState(func(st *queue.State) error {
		return st.Put(bucketState, []byte(kind), val)
	}); err != nil {
		return fmt.Errorf("agent: storing %s: %w", kind, err)
	}
	a.state.Store(cur.with(kind, d))
	a.log.Info("device state updated", "kind", kind, "version", d.version)
	return nil
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

// Versions returns the applied document versions by kind.
func (a *Agent) Versions() map[string]uint64 { return maps.Clone(a.state.Load().versions) }
