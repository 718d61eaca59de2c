package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond) // every reading distinct
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// A device's history records what changed (not every heartbeat), its
// registration, replacement and revocation, and keeps the newest 50.
func TestDeviceHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		k1 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
		k2 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k1, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		status := func(st DeviceStatus) {
			t.Helper()
			if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
				t.Fatal(err)
			}
		}
		on := DeviceStatus{Online: true, QueueDepth: 3, Software: "1.0", Versions: map[string]uint64{"fares": 1}, LastSeen: time.Now()}
		status(on)
		on.QueueDepth = 0
		status(on) // a heartbeat: nothing new
		oos := on
		oos.OutOfService = "queue_full"
		status(oos)
		status(on)
		upd := on
		upd.Versions = map[string]uint64{"fares": 2}
		status(upd)
		off := upd
		off.Online = false
		status(off)
		if err := s.RevokeDevice(ctx, "bus-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k2, MQTTHash: "h2", Replace: true, Unrevoke: true}); err != nil {
			t.Fatal(err)
		}
		h, err := s.DeviceHistory(ctx, "bus-1")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range h {
			got = append(got, e.Event)
		}
		want := []string{EventReplaced, EventRevoked, EventOffline, EventUpdated, EventInService, EventOutOfService, EventOnline, EventRegistered}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("history = %v, want %v", got, want)
		}
		if h[3].Versions["fares"] != 2 || h[5].OutOfService != "queue_full" || h[6].QueueDepth != 3 || !h[6].Online {
			t.Errorf("history entries do not carry the status: %+v", h)
		}
		// A clock offset of 2 h reported once (a stolen validator's lie,
		// which hides its taps' route_mismatch), then 100 statuses that
		// each make an entry: the newest 50 of the device's entries are
		// kept, and besides them the operator's three and the clock entry
		// with the largest offset.
		status(DeviceStatus{Online: true, LastSeen: time.Now()})
		status(DeviceStatus{Online: true, LastSeen: time.Now().Add(2 * time.Hour)}) // the lie: a clock entry
		for i := range 2 * MaxStatusHistory {
			status(DeviceStatus{Online: i%2 != 0, LastSeen: time.Now().Add(2*time.Hour + time.Duration(i)*time.Millisecond)})
		}
		h, _ = s.DeviceHistory(ctx, "bus-1")
		if len(h) != MaxStatusHistory+4 || !h[0].Online {
			t.Fatalf("after 100 changes: %d entries (newest online %t), want %d, online", len(h), len(h) > 0 && h[0].Online, MaxStatusHistory+4)
		}
		kept := map[string]int{}
		var largest time.Duration
		for _, e := range h {
			kept[e.Event]++
			if e.Event == EventClock {
				largest = max(largest, e.ClockOffset.Abs())
			}
		}
		if kept[EventRegistered] != 1 || kept[EventRevoked] != 1 || kept[EventReplaced] != 1 || largest < 2*time.Hour-time.Minute {
			t.Errorf("after a flood of statuses the history keeps %v, largest clock offset %v; want the operator's entries and the 2 h offset", kept, largest)
		}
		for i := 1; i < len(h); i++ {
			if h[i].At.After(h[i-1].At) {
				t.Errorf("history not newest first at %d", i)
			}
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_status_history`).Scan(&n); err != nil || n != MaxStatusHistory+4 {
			t.Errorf("%d history rows stored, want %d", n, MaxStatusHistory+4)
		}
	})
}

// The console's readers: the fleet with each device's last route, a
// device's taps, flagged and noted taps by reason, records kept aside.
func TestConsoleReaders(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		for i, id := range []string{"bus-1", "bus-2", "bus-3"} {
			k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32)).Public().(ed25519.PublicKey)
			if err := s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: k, MQTTHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		a := newAccount(t, s, 5000)
		t1 := mkTap("bus-1", 1, a, at(0), "42")
		t2 := mkTap("bus-1", 2, a, at(120), "X1")
		t2.BaseFare = 999 // the validator's claim differs: noted fare_mismatch
		dup := mkTap("bus-2", 1, a, at(121), "7")
		dup.CodeKey = t2.CodeKey // the same code on another bus a minute later: duplicate_code, forgiven
		dup.Vehicle = "bus-8"
		bad := mkTap("bus-2", 2, a, at(200), "7")
		bad.Flag = FlagInvalidCode
		// Received a few minutes after each was made: the flagged and
		// noted taps go by when the server received them.
		now := s.now
		s.now = func() time.Time { return at(125) }
		commit(t, s, t1, t2, dup)
		s.now = func() time.Time { return at(205) }
		commit(t, s, bad)
		s.now = now

		fleet, err := s.Fleet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(fleet) != 3 || fleet[0].Route != "X1" || fleet[0].Vehicle != "bus-7" || !fleet[0].LastTap.Equal(at(120)) ||
			fleet[1].Route != "7" || fleet[2].Route != "" || !fleet[2].LastTap.IsZero() {
			t.Fatalf("fleet = %+v", fleet)
		}
		taps, err := s.DeviceTaps(ctx, "bus-1", 10)
		if err != nil || len(taps) != 2 || taps[0].TapID != t2.ID || taps[0].Account != a || taps[0].Charge != 400 {
			t.Fatalf("DeviceTaps = %+v, %v", taps, err)
		}
		flagged, err := s.FlaggedTaps(ctx, "", 10)
		if err != nil || len(flagged) != 2 || flagged[0].TapID != bad.ID || flagged[1].Flag != FlagDuplicateCode {
			t.Fatalf("FlaggedTaps = %+v, %v", flagged, err)
		}
		if f, _ := s.FlaggedTaps(ctx, FlagDuplicateCode, 10); len(f) != 1 || f[0].TapID != dup.ID {
			t.Errorf("FlaggedTaps(duplicate_code) = %+v", f)
		}
		noted, err := s.NotedTaps(ctx, NoteFareMismatch, time.Unix(0, 0), 10)
		if err != nil || len(noted) != 1 || noted[0].TapID != t2.ID {
			t.Fatalf("NotedTaps = %+v, %v", noted, err)
		}
		if n, _ := s.NotedTaps(ctx, "fare", time.Unix(0, 0), 10); len(n) != 0 {
			t.Errorf("a note matched by a prefix: %+v", n)
		}
		// Received since: the console's window (its 30 days).
		if n, err := s.NotedTaps(ctx, NoteFareMismatch, at(125), 10); err != nil || len(n) != 1 {
			t.Errorf("NotedTaps since its commit = %+v, %v", n, err)
		}
		if n, err := s.NotedTaps(ctx, NoteFareMismatch, at(126), 10); err != nil || len(n) != 0 {
			t.Errorf("NotedTaps since after its commit = %+v, %v", n, err)
		}
		if n, err := s.NotedTaps(ctx, "", at(126), 10); err != nil || len(n) != 0 {
			t.Errorf("all NotedTaps since after their commit = %+v, %v", n, err)
		}
		flags, notes, err := s.FlagCounts(ctx, at(-60))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(flags) != fmt.Sprint([]ReasonCount{{FlagDuplicateCode, 1, at(125).UTC()}, {FlagInvalidCode, 1, at(205).UTC()}}) ||
			fmt.Sprint(notes) != fmt.Sprint([]ReasonCount{{NoteCodeReuseWindow, 1, at(125).UTC()}, {NoteFareMismatch, 1, at(125).UTC()}}) {
			t.Errorf("FlagCounts = %v, %v", flags, notes)
		}
		if f, _, _ := s.FlagCounts(ctx, at(150)); len(f) != 1 || f[0].Reason != FlagInvalidCode {
			t.Errorf("FlagCounts since a later time = %v", f)
		}

		if err := s.Quarantine(ctx, []QuarantinedRecord{{DeviceID: "bus-3", Epoch: "e", Seq: 1, Reason: "malformed_record", Record: []byte{1}},
			{DeviceID: "bus-3", Epoch: "e", Seq: 2, Reason: "malformed_record", Record: []byte{1, 2}},
			{DeviceID: "bus-3", Epoch: "e", Seq: 3, Reason: "revoked_device", Record: []byte{3}}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Hold(ctx, []HeldTap{{DeviceID: "bus-3", Epoch: "e", Seq: 9, Reason: "unknown_issuer_key", Record: []byte{9}}}); err != nil {
			t.Fatal(err)
		}
		q, h, err := s.AsideCounts(ctx)
		if err != nil || len(q) != 2 || q[0].Reason != "malformed_record" || q[0].Count != 2 || len(h) != 1 || h[0].Count != 1 {
			t.Fatalf("AsideCounts = %+v %+v, %v", q, h, err)
		}
		recs, err := s.Aside(ctx, false, "malformed_record", 10)
		if err != nil || len(recs) != 2 || recs[0].Size+recs[1].Size != 3 {
			t.Fatalf("Aside = %+v, %v", recs, err)
		}
		if recs, _ := s.Aside(ctx, true, "", 10); len(recs) != 1 || recs[0].Seq != 9 {
			t.Errorf("held = %+v", recs)
		}

		tok, err := s.CreateToken(ctx, APIToken{ID: "abcdefgh", Role: RoleAuditor}, make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.TokenByID(ctx, "abcdefgh"); err != nil || got.Role != RoleAuditor || !got.Created.Equal(tok.Created) {
			t.Errorf("TokenByID = %+v, %v", got, err)
		}
		if _, err := s.TokenByID(ctx, "nope1234"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TokenByID of an unknown id: %v", err)
		}
		// PostgreSQL refuses a NUL or invalid UTF-8 in text: such an id is
		// one never made, not a server error.
		for _, id := range []string{"abc\x00defgh", "\xff\xfe"} {
			if _, err := s.TokenByID(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("TokenByID(%q): %v", id, err)
			}
		}
	})
}

// Console sessions: stored by hash, ended everywhere, at most
// MaxSessionsPerToken live per token.
func TestConsoleSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		hash := func(i int) []byte { h := sha256.Sum256([]byte{byte(i)}); return h[:] }
		exp := time.Now().Add(time.Hour)
		if err := s.CreateSession(ctx, ConsoleSession{IDHash: hash(0), TokenID: "init", Role: RoleOperator, Expires: exp}); err != nil {
			t.Fatal(err)
		}
		cs, err := s.Session(ctx, hash(0))
		if err != nil || cs.TokenID != "init" || cs.Role != RoleOperator || !cs.Ended.IsZero() || cs.Expires.Unix() != exp.Unix() {
			t.Fatalf("Session = %+v, %v", cs, err)
		}
		if err := s.TouchSession(ctx, hash(0), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := s.EndSession(ctx, hash(0)); err != nil {
			t.Fatal(err)
		}
		if cs, _ := s.Session(ctx, hash(0)); cs.Ended.IsZero() {
			t.Error("an ended session is not marked ended")
		}
		if _, err := s.Session(ctx, hash(99)); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown session: %v", err)
		}
		for _, bad := range []ConsoleSession{{IDHash: hash(1)[:5], TokenID: "x", Role: RoleOperator, Expires: exp},
			{IDHash: hash(1), TokenID: "x", Role: "root", Expires: exp}, {IDHash: hash(1), TokenID: "x", Role: RoleAuditor, Expires: time.Now().Add(-time.Second)}} {
			if err := s.CreateSession(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateSession(%+v) = %v, want ErrInvalid", bad, err)
			}
		}
		for i := 1; i <= MaxSessionsPerToken+5; i++ {
			if err := s.CreateSession(ctx, ConsoleSession{IDHash: hash(i), TokenID: "tok12345", Role: RoleAuditor, Expires: exp}); err != nil {
				t.Fatal(err)
			}
		}
		live := 0
		for i := 1; i <= MaxSessionsPerToken+5; i++ {
			cs, err := s.Session(ctx, hash(i))
			if err != nil {
				t.Fatal(err)
			}
			if cs.Ended.IsZero() {
				live++
			} else if i > 5 {
				t.Errorf("session %d of %d ended; only the oldest should be", i, MaxSessionsPerToken+5)
			}
		}
		if live != MaxSessionsPerToken {
			t.Errorf("%d live sessions of one token, want %d", live, MaxSessionsPerToken)
		}
	})
}

// The revenue summary sums a service day's charges, transfers and cap
// savings by route and follows a late tap that re-rates the day (a
// correction); the lag summary buckets commit time minus tap time.
func TestSummaries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		c := &clock{t: at(600)}
		s := db.open(t, &Options{Now: c.now})
		putTableAt(t, s, tableV1, tablesSince)
		a := newAccount(t, s, 10_000)
		b := newAccount(t, s, 10_000)
		// a: 08:00 on 42 (250), 08:30 transfer (0), 10:00 on X1 (400), 12:00 on 42: 50 to the cap of 700.
		c.set(at(600))
		commit(t, s, mkTap("bus-1", 1, a, at(0), "42"), mkTap("bus-1", 2, a, at(30), "42"),
			mkTap("bus-2", 1, a, at(120), "X1"), mkTap("bus-1", 3, a, at(240), "42"))
		bad := mkTap("bus-1", 4, b, at(250), "42")
		bad.Flag = FlagInvalidCode
		commit(t, s, bad)
		st, err := s.RefreshSummaries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Days != 1 {
			t.Errorf("first refresh summed %d days, want 1", st.Days)
		}
		day := at(0).Format("2006-01-02")
		rev := revenueByRoute(t, s, day)
		if r := rev["42"]; r.Taps != 4 || r.Flagged != 1 || r.BaseTotal != 750 || r.Charged != 300 || r.Transfers != 1 ||
			r.TransferSavings != 250 || r.Capped != 1 || r.CapSavings != 200 || r.Corrections != 0 {
			t.Errorf("route 42: %+v", r)
		}
		if r := rev["X1"]; r.Taps != 1 || r.Charged != 400 || r.BaseTotal != 400 {
			t.Errorf("route X1: %+v", r)
		}
		// Nothing new: nothing summed again.
		if st, err := s.RefreshSummaries(ctx); err != nil || st.Days != 0 || st.Slots != 0 {
			t.Errorf("a refresh with nothing new summed %d days and %d lag slots (%v)", st.Days, st.Slots, err)
		}
		// A late tap at 07:00 on 7: the day is re-rated (the 08:00 ride
		// becomes ... the cap is reached earlier): corrections appear.
		c.set(at(900))
		commit(t, s, mkTap("bus-3", 1, a, at(-60), "7"))
		if st, err := s.RefreshSummaries(ctx); err != nil || st.Days != 1 {
			t.Fatalf("refresh after a late tap: %+v, %v", st, err)
		}
		rev = revenueByRoute(t, s, day)
		total, corrections := int64(0), int64(0)
		for _, r := range rev {
			total += r.Charged
			corrections += r.Corrections
		}
		if total != 700 || rev["7"].Charged != 250 || corrections >= 0 || rev["42"].Corrected == 0 {
			t.Errorf("after the late tap: total %d (want the cap, 700), corrections %d (want refunds), %+v", total, corrections, rev)
		}
		if got := balance(t, s, a); got != 10_000-700 {
			t.Errorf("balance %d", got)
		}

		// Lag: the first five taps were committed at 18:00 (600 minutes
		// after 08:00), the late one at 23:00.
		lag, err := s.Lag(ctx, at(0))
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, l := range lag {
			n += l.Taps
		}
		if n != 6 || len(lag) != 2 {
			t.Fatalf("lag slots = %+v", lag)
		}
		if lag[1].Max < 16*time.Hour || lag[1].Max > 16*time.Hour+time.Minute || lag[0].Buckets[12] != 1 || lag[0].Buckets[13] != 4 {
			t.Errorf("lag slots = %+v", lag)
		}
		if q := Quantile(lag, 0.5); q != 12*time.Hour {
			t.Errorf("median lag bucket %v, want the 12 h bound", q)
		}
		if q := Quantile(lag, 1); q != lag[1].Max {
			t.Errorf("max lag %v, want %v", q, lag[1].Max)
		}
	})
}

func revenueByRoute(t *testing.T, s *Store, day string) map[string]DaySummary {
	t.Helper()
	rev, err := s.Revenue(context.Background(), day, day)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]DaySummary{}
	for _, r := range rev {
		out[r.Route] = r
	}
	return out
}

// The deny list read a page at a time: every entry once, in order, also
// when one account's entries straddle two pages.
func TestDenyListPage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		a, b := newAccount(t, s, 100), newAccount(t, s, 100)
		if _, err := s.IssueCredentialSerial(ctx, a, time.Now().Add(time.Hour), riderKey(a)); err != nil { // serial 2
			t.Fatal(err)
		}
		for _, e := range []DenyEntry{{Account: a, Reason: "x"}, {Account: a, Serial: 1, Reason: "y"}, {Account: a, Serial: 2, Reason: "z"},
			{Account: b, Reason: "x"}, {Account: a, Serial: 2, Reason: "w"}} {
			if err := s.Deny(ctx, e.Account, e.Serial, e.Reason); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		var after DenyEntry
		for range 10 {
			page, total, err := s.DenyListPage(ctx, after, 2)
			if err != nil || total != 5 {
				t.Fatalf("DenyListPage: %d entries, %v", total, err)
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				got = append(got, fmt.Sprintf("%d/%d/%s", e.Account-a, e.Serial, e.Reason))
			}
			after = page[len(page)-1]
		}
		if want := "[0/0/x 0/1/y 0/2/w 0/2/z 1/0/x]"; fmt.Sprint(got) != want {
			t.Errorf("pages = %v, want %s", got, want)
		}
	})
}

// TestSummariesAgree: a page reading the revenue and the settlement lag
// (Summaries) while taps are committed and summed sees them agree — every
// tap in its day's revenue is in its lag slot. RefreshSummaries once wrote
// the days and the lag in two transactions, and a page loaded in between
// showed a tap's revenue without its settlement.
func TestSummariesAgree(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		c := &clock{t: at(600)}
		s := db.open(t, &Options{Now: c.now})
		putTableAt(t, s, tableV1, tablesSince)
		a := newAccount(t, s, 1_000_000)
		day := at(0).Format("2006-01-02")
		const rounds = 40
		done := make(chan struct{})
		var reads, taps atomic.Int64
		go func() {
			defer close(done)
			for i := range rounds {
				if _, err := s.CommitTaps(ctx, []Tap{mkTap("bus-1", uint64(i+1), a, at(i), "42")}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.RefreshSummaries(ctx); err != nil {
					t.Error(err)
					return
				}
				taps.Add(1)
			}
		}()
		for stop := false; !stop; {
			select {
			case <-done:
				stop = true // one more read, after the last refresh
			default:
			}
			days, lag, err := s.Summaries(ctx, day, day, c.now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var inDays, inLag int64
			for _, d := range days {
				inDays += d.Taps
			}
			for _, l := range lag {
				inLag += l.Taps
			}
			if inDays != inLag {
				t.Fatalf("read %d: %d taps in the day's revenue, %d in the lag slots", reads.Load(), inDays, inLag)
			}
			if stop && inDays != rounds {
				t.Fatalf("after the last refresh: %d taps summed, want %d", inDays, rounds)
			}
			reads.Add(1)
		}
		t.Logf("%d reads agreed over %d commits and refreshes", reads.Load(), taps.Load())
	})
}

// A code's later use (day D, 04:00:20) is charged first; its earlier use
// on another bus (day D−1, 03:59:50) arrives later, takes the code over,
// and the day-D tap is refunded and flagged. The console sums day D again
// (console_stale_days): it found the days to sum from the taps committed,
// and kept showing the refunded tap charged until another tap of day D
// came.
func TestSummaryCrossDayTakeover(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		dayStart := time.Date(2026, 3, 11, 4, 0, 0, 0, berlin)
		c := &clock{t: dayStart.Add(time.Hour)}
		s := db.open(t, &Options{Now: c.now})
		putTableAt(t, s, tableV1, tablesSince)
		a := newAccount(t, s, 10_000)
		late := mkTap("bus-1", 1, a, dayStart.Add(20*time.Second), "42")
		early := mkTap("bus-2", 1, a, dayStart.Add(-10*time.Second), "42")
		early.Vehicle = "bus-8"
		early.CodeKey, early.CodeHash = late.CodeKey, late.CodeHash
		commit(t, s, late)
		if _, err := s.RefreshSummaries(ctx); err != nil {
			t.Fatal(err)
		}
		if d := revenueByRoute(t, s, "2026-03-11")["42"]; d.Charged != 250 {
			t.Fatalf("day D before the takeover: %+v", d)
		}
		c.set(dayStart.Add(2 * time.Hour))
		commit(t, s, early)
		if _, err := s.RefreshSummaries(ctx); err != nil {
			t.Fatal(err)
		}
		if d := revenueByRoute(t, s, "2026-03-11")["42"]; d.Charged != 0 || d.Flagged != 1 {
			t.Errorf("console day 2026-03-11 after the takeover: charged %d, flagged %d; want 0 and the refunded tap flagged", d.Charged, d.Flagged)
		}
		if d := revenueByRoute(t, s, "2026-03-10")["42"]; d.Charged != 250 {
			t.Errorf("console day 2026-03-10: %+v; want the early tap charged", d)
		}
		// The mark is gone once summed: the next run sums nothing.
		if st, err := s.RefreshSummaries(ctx); err != nil || st.Days != 0 {
			t.Errorf("a run after: %+v, %v; want no day summed again", st, err)
		}
		// A mark made after a row was removed is larger than any before
		// (another instance's summary, which read an older mark, must not
		// remove it): it counted from 1 again.
		var first int64
		if err := s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'stale_mark'`).Scan(&first); err != nil || first < 1 {
			t.Fatalf("stale_mark %d, %v", first, err)
		}
		late2 := mkTap("bus-1", 2, a, dayStart.Add(3*time.Hour), "42")
		early2 := mkTap("bus-2", 2, a, dayStart.Add(-3*time.Hour), "42")
		early2.CodeKey, early2.CodeHash = late2.CodeKey, late2.CodeHash
		commit(t, s, late2)
		commit(t, s, early2)
		var mark int64
		if err := s.db.QueryRowContext(ctx, `SELECT mark FROM console_stale_days WHERE service_day = '2026-03-11'`).Scan(&mark); err != nil || mark <= first {
			t.Errorf("the next mark %d, %v; want above %d", mark, err, first)
		}
	})
}

// TestSummariesClockStepBack: the server's clock stepped back (NTP after it
// ran ahead, by 10 minutes here, or a day for one commit) commits taps
// below the days watermark until it catches up. Their days' revenue must
// still be summed: it stayed short (1 tap of 2, then of 3) until a tap of
// the same day came after the clock passed the watermark again, which
// for the last taps of a service day never happens.
func TestSummariesClockStepBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		c := &clock{t: at(600)}
		s := db.open(t, &Options{Now: c.now})
		putTableAt(t, s, tableV1, tablesSince)
		day := at(0).Format("2006-01-02")
		refresh := func() {
			t.Helper()
			if _, err := s.RefreshSummaries(ctx); err != nil {
				t.Fatal(err)
			}
		}
		want := func(taps, charged int64) {
			t.Helper()
			if r := revenueByRoute(t, s, day)["42"]; r.Taps != taps || r.Charged != charged {
				t.Errorf("route 42 at %s: %d taps, %d charged; want %d, %d", time.Time(c.now()).In(berlin).Format(time.TimeOnly),
					r.Taps, r.Charged, taps, charged)
			}
		}
		commit(t, s, mkTap("bus-1", 1, newAccount(t, s, 10_000), at(0), "42"))
		refresh()
		c.set(at(590)) // stepped back 10 minutes
		commit(t, s, mkTap("bus-1", 2, newAccount(t, s, 10_000), at(5), "42"))
		refresh()
		want(2, 500)
		c.set(at(24*60 + 600)) // a day ahead, for one commit
		commit(t, s, mkTap("bus-1", 3, newAccount(t, s, 10_000), at(10), "42"))
		refresh()
		c.set(at(620)) // right again
		commit(t, s, mkTap("bus-1", 4, newAccount(t, s, 10_000), at(15), "42"))
		refresh()
		want(4, 1000)
	})
}

// A revoked device is registered again only with Unrevoke: Replace (a
// re-flashed validator's new key) lifted the revocation of a stolen one,
// silently. The refusal changes nothing; the registration that lifts it
// says so, with the revocation's time.
func TestRegisterRevokedDeviceNeedsUnrevoke(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		k1 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
		k2 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k1, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, "bus-1"); err != nil {
			t.Fatal(err)
		}
		before, err := s.DeviceAuth(ctx, "bus-1")
		if err != nil || before.Revoked.IsZero() {
			t.Fatalf("revoked device: %+v %v", before, err)
		}
		for _, reg := range []DeviceRegistration{
			{ID: "bus-1", PublicKey: k1, MQTTHash: "h2"},
			{ID: "bus-1", PublicKey: k1, MQTTHash: "h2", Replace: true},
			{ID: "bus-1", PublicKey: k2, MQTTHash: "h2", Replace: true},
		} {
			if _, err := s.RegisterDeviceReport(ctx, reg); !errors.Is(err, ErrDeviceRevoked) {
				t.Errorf("registering a revoked device (replace %t, new key %t) without unrevoke: %v; want ErrDeviceRevoked",
					reg.Replace, !bytes.Equal(reg.PublicKey, k1), err)
			}
		}
		// Unrevoke is not Replace: a new key still needs both.
		if _, err := s.RegisterDeviceReport(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k2, MQTTHash: "h2", Unrevoke: true}); !errors.Is(err, ErrDeviceExists) || errors.Is(err, ErrDeviceRevoked) {
			t.Errorf("unrevoke with a new key, no replace: %v; want ErrDeviceExists alone", err)
		}
		if a, err := s.DeviceAuth(ctx, "bus-1"); err != nil || !a.Revoked.Equal(before.Revoked) || a.MQTTHash != "h" || !bytes.Equal(a.PublicKey, k1) {
			t.Fatalf("after the refusals: %+v %v; want the device as revoked", a, err)
		}
		done, err := s.RegisterDeviceReport(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k2, MQTTHash: "h3", Replace: true, Unrevoke: true})
		if err != nil || !done.KeyReplaced || !done.Unrevoked.Equal(before.Revoked) {
			t.Fatalf("replace and unrevoke: %+v %v; want the key replaced and the revocation of %v lifted", done, err, before.Revoked)
		}
		if a, err := s.DeviceAuth(ctx, "bus-1"); err != nil || !a.Revoked.IsZero() || a.MQTTHash != "h3" {
			t.Errorf("after unrevoke: %+v %v; want not revoked", a, err)
		}
		// Again, nothing to lift: said so.
		if done, err := s.RegisterDeviceReport(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k2, MQTTHash: "h4", Unrevoke: true}); err != nil || done.KeyReplaced || !done.Unrevoked.IsZero() {
			t.Errorf("unrevoke of a device not revoked: %+v %v; want nothing lifted", done, err)
		}
	})
}

// TestSummariesStoredByInstancesInTurn: another instance storing its
// summaries at the same time (its transaction holds the day's new rows,
// uncommitted) does not make this one's run fail on the key: each deleted
// the day's rows, saw none of the other's, and the second insert failed
// with a duplicate key (console_days_pkey, logged every few seconds with
// three instances on one ledger: a rolling upgrade's review).
func TestSummariesStoredByInstancesInTurn(t *testing.T) {
	ctx := context.Background()
	db := newPostgresDB(t)
	c := &clock{t: at(600)}
	s := db.open(t, &Options{Now: c.now})
	putTableAt(t, s, tableV1, tablesSince)
	a := newAccount(t, s, 10_000)
	commit(t, s, mkTap("bus-1", 1, a, at(0), "42"))
	day := at(0).Format("2006-01-02")

	// The other instance, in the middle of storing the same day.
	other, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	var otherPID int
	if err := other.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&otherPID); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))`,
		summaryLockKey); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `DELETE FROM console_days WHERE service_day = $1`, day); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `INSERT INTO console_days (service_day, route, taps, flagged, base_total,
		charge_total, transfers, transfer_savings, capped, cap_savings, corrected, corrections, computed_ns)
		VALUES ($1, '42', 1, 0, 250, 250, 0, 0, 0, 0, 0, 0, 1)`, day); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := s.RefreshSummaries(ctx)
		done <- err
	}()
	// Until this run waits on the other's transaction (bounded: 60 s).
	for i := 0; ; i++ {
		var waiting int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`,
			otherPID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the refresh ended (%v) while the other instance's transaction was open: the test proves nothing", err)
		default:
		}
		if i == 6000 {
			t.Fatal("the refresh never waited on the other instance's transaction")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("refresh while another instance stored the same day: %v", err)
	}
	if r := revenueByRoute(t, s, day)["42"]; r.Taps != 1 || r.Charged != 250 {
		t.Errorf("route 42 after both: %+v", r)
	}
}
