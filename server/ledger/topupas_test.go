package ledger

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestTopUpAs: a top-up by the command line (no API token) is audited in
// its own transaction, its replay too (as the API audits one), and a
// refused one (no reason, no actor, a conflict, an unknown account)
// writes neither money nor an entry.
func TestTopUpAs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		id := newAccount(t, s, 0)
		actor := "cli:" + strings.Repeat("o", 100) + "@host" // past 64 bytes, as a long user and host make it
		entries := func() int {
			es, err := s.AuditLog(ctx, 0, MaxListLimit)
			if err != nil {
				t.Fatal(err)
			}
			return len(es)
		}
		before, audited := snapshot(t, s), entries()
		for name, err := range map[string]error{
			"no reason": func() error { _, _, err := s.TopUpAs(ctx, id, 500, "ticket-1", actor, ""); return err }(),
			"no actor":  func() error { _, _, err := s.TopUpAs(ctx, id, 500, "ticket-1", "", "why"); return err }(),
			"long reason": func() error {
				_, _, err := s.TopUpAs(ctx, id, 500, "ticket-1", actor, strings.Repeat("r", 257))
				return err
			}(),
			"zero amount":   func() error { _, _, err := s.TopUpAs(ctx, id, 0, "ticket-1", actor, "why"); return err }(),
			"no reference":  func() error { _, _, err := s.TopUpAs(ctx, id, 500, "", actor, "why"); return err }(),
			"above the max": func() error { _, _, err := s.TopUpAs(ctx, id, MaxAmount+1, "ticket-1", actor, "why"); return err }(),
		} {
			if !strings.Contains(err.Error(), "invalid input") {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
		if _, _, err := s.TopUpAs(ctx, id+1000, 500, "ticket-1", actor, "why"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("unknown account: %v", err)
		}
		if after := snapshot(t, s); after != before || entries() != audited {
			t.Fatalf("refused top-ups changed the ledger:\n%s\n%s", before, after)
		}
		a, added, err := s.TopUpAs(ctx, id, 500, "ticket-1", actor, "goodwill")
		if err != nil || !added || a.Balance != 500 {
			t.Fatalf("TopUpAs: %+v %t %v", a, added, err)
		}
		a, added, err = s.TopUpAs(ctx, id, 500, "ticket-1", actor, "retry")
		if err != nil || added || a.Balance != 500 {
			t.Fatalf("TopUpAs again: %+v %t %v; want nothing added", a, added, err)
		}
		if _, _, err := s.TopUpAs(ctx, id, 600, "ticket-1", actor, "other amount"); err == nil {
			t.Fatal("a reference with another amount was taken")
		}
		es, err := s.AuditLog(ctx, 0, 2)
		if err != nil || len(es) != 2 || entries() != audited+2 {
			t.Fatalf("audit: %+v %v; want 2 new entries", es, err)
		}
		if e := es[1]; e.Actor != actor || e.Action != "topup" || e.Target != strconv.FormatUint(id, 10) ||
			e.Detail != `amount 500 reference "ticket-1" reason "goodwill"` {
			t.Errorf("the top-up's entry: %+v", e)
		}
		if e := es[0]; !strings.HasSuffix(e.Detail, `reason "retry" replayed: nothing added`) {
			t.Errorf("the replay's entry: %+v", e)
		}
	})
}
