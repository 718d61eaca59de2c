package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/wire"
)

// denyCache holds the deny list as last read from the ledger, with its
// version: it is read again only when the version moved (the shards and
// the whole document are both cut from it, every poll).
type denyCache struct {
	mu      sync.Mutex
	version uint64
	list    ledger.DenyList
	at      time.Time // when it was cut (entries expired then are left out)
	shards  []record.DenyShard
	whole   []byte // the whole document, or nil if too large
}

// denyList returns the deny list cut into shards and, while it is small
// enough, as the whole document older validators read (with the expired
// entries left out), read from the ledger only if its version moved.
func (s *Server) denyList(ctx context.Context) (*denyCache, error) {
	c := &s.deny
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := s.ledger.DenyVersion(ctx)
	if err != nil {
		return nil, err
	}
	if v == c.version && c.shards != nil {
		return c, nil
	}
	dl, err := s.ledger.DenyList(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	entries := deviceEntries(dl, now)
	c.version, c.list, c.at = dl.Version, dl, now
	c.shards = record.DenyShards(entries, now)
	c.whole = nil
	if b, _ := json.Marshal(record.DenyList{Version: dl.Version, Entries: entries}); len(b) <= maxWholeDenyList {
		c.whole = b
	} else if s.denyTooLarge.CompareAndSwap(false, true) {
		s.log.Info("deny list too large for one downlink: validators get it in shards only (older ones keep the last whole list)",
			"entries", len(entries), "bytes", len(b))
	}
	return c, nil
}

// maxWholeDenyList bounds the whole deny-list document (uncompressed), so
// that its downlink stays under wire.MaxDownlinkSize.
const maxWholeDenyList = wire.MaxDownlinkSize - 1024

// deviceEntries turns the ledger's deny list (one entry per reason) into
// what validators need: one entry per account or credential, its reasons
// joined, with the latest expiry (never, if any reason never expires), the
// expired ones left out.
func deviceEntries(dl ledger.DenyList, now time.Time) []record.DenyEntry {
	out := []record.DenyEntry{}
	seen := map[[2]uint64]int{}
	for _, e := range dl.Entries {
		if !e.Expires.IsZero() && !e.Expires.After(now) {
			continue
		}
		var exp int64
		if !e.Expires.IsZero() {
			exp = max(e.Expires.Unix(), 1)
		}
		k := [2]uint64{e.Account, uint64(e.Serial)}
		if i, ok := seen[k]; ok {
			d := &out[i]
			if !strings.Contains(d.Reason, e.Reason) {
				d.Reason += "," + e.Reason
			}
			if d.Expires != 0 && (exp == 0 || exp > d.Expires) {
				d.Expires = exp
			}
			continue
		}
		seen[k] = len(out)
		out = append(out, record.DenyEntry{Account: e.Account, Serial: e.Serial, Reason: e.Reason, Expires: exp})
	}
	return out
}

// denyShards is the publisher's source of deny-list shards.
func (s *Server) denyShards(ctx context.Context, since uint64) (uint64, []record.DenyShard, error) {
	c, err := s.denyList(ctx)
	if err != nil {
		return 0, nil, err
	}
	if since != 0 && c.version == since {
		return since, nil, nil
	}
	return c.version, c.shards, nil
}
