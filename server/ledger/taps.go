package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
)

// CommitTaps settles a batch of taps in one transaction and returns what
// happened to each, in input order. It is idempotent by tap id
// (device/epoch/seq): a tap already committed comes back Duplicate with its
// current charge and changes nothing, so a device's batch can be delivered
// any number of times; a tap id committed before with other contents comes
// back Conflict (the stored tap stands).
//
// The server rates every tap itself. For each new tap:
//
//   - the fare table is the one its validator named if the server has it
//     and it was in force at the tap's time within FareGrace, else the one in
//     force at the tap's time (noted unknown_fare_version); the base fare
//     comes from that table, the tap's route and the credential's profile.
//     A claim (base fare, currency) that differs is noted fare_mismatch and
//     never charged;
//   - an unknown account: stored, flagged unknown_account, charged 0;
//   - a credential (account, serial, rider key) the ledger did not issue:
//     flagged unknown_credential, charged 0;
//   - a fare table currency other than the account's: flagged
//     currency_mismatch, charged 0 (the code is used up all the same);
//   - a payment code that paid before: the earliest use by tap time keeps
//     the code (an online payment always keeps it); every other use is
//     flagged duplicate_code and charged 0 — a tap that held the code and
//     turns out later than a newly arrived one is flagged and refunded. The
//     credential is denied (code_reused, until it expires) unless the reuse
//     looks innocent: one reuse, on another device, within ReuseWindow
//     (noted code_reuse_window);
//   - otherwise the tap is charged: its account's service day is re-rated.
//
// Re-rating takes the unflagged taps of the account and service day from
// the earliest one new in the batch or refunded, rates them with
// fare.Table.RateFrom from the state the earlier taps leave (their charges
// are the day's rating already: the sum, the last full fare's time; each
// ride with its own table's rules), which rates them as RateDay rates the
// whole day, and appends a posting for every tap whose rated charge
// differs from its current charge: kind fare for a tap's first posting,
// fare_correction after. Postings are never changed, so the final balances and charges do
// not depend on the order in which taps arrive.
//
// The whole batch costs a handful of statements whatever its size: lock the
// accounts, read their credentials, insert the taps, read and claim the
// codes, read the touched account-days, write postings, tap charges and
// balances. Invalid input (see Tap) fails the whole batch with ErrInvalid
// before anything is written; ErrNoFareTable when no fare table is stored.
func (s *Store) CommitTaps(ctx context.Context, taps []Tap) ([]TapResult, error) {
	if len(taps) > MaxCommitTaps {
		return nil, invalid("%d taps in one batch, limit %d", len(taps), MaxCommitTaps)
	}
	for i := range taps {
		if err := taps[i].validate(); err != nil {
			return nil, invalid("tap %d (%q): %v", i, taps[i].ID, err)
		}
	}
	if len(taps) == 0 {
		return []TapResult{}, nil
	}
	results, busy, err := s.commitTapsTx(ctx, taps, s.backend == backendPostgres && len(taps) > 1)
	if err != nil {
		return nil, err
	}
	if len(busy) > 0 {
		// The taps of accounts another transaction held: committed after
		// the rest, waiting for their accounts (see commitTaps).
		rest := make([]Tap, len(busy))
		for j, i := range busy {
			rest[j] = taps[i]
		}
		more, _, err := s.commitTapsTx(ctx, rest, false)
		if err != nil {
			return nil, err
		}
		for j, i := range busy {
			results[i] = more[j]
		}
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		n := 0
		for _, r := range results {
			if !r.Duplicate {
				n++
			}
		}
		s.log.Debug("ledger: taps committed", "taps", len(taps), "new", n)
	}
	return results, nil
}

// commitTapsTx commits taps in one write transaction (see commitTaps).
func (s *Store) commitTapsTx(ctx context.Context, taps []Tap, skipBusy bool) (results []TapResult, busy []int, err error) {
	err = s.write(ctx, "commit taps", func(t *txn) error {
		var err error
		results, busy, err = t.commitTaps(taps, skipBusy)
		return err
	})
	return results, busy, err
}

type dayKey struct {
	account uint64
	day     string
}

type credKey struct {
	account uint64
	serial  uint32
}

// issued is a credential the ledger issued, as the tap path checks it.
type issued struct {
	riderKey []byte
	notAfter int64
}

// tapWork is one tap of a batch on its way through commitTaps.
type tapWork struct {
	tp      *Tap
	res     *TapResult
	acct    *acctState
	version uint64 // the server's fare table (0: flagged before rating)
	fare    int64  // the server's base fare
	day     string
	flag    string
	notes   []string
	first   bool // the first occurrence of its id in the batch
	isNew   bool // not stored before: this commit inserts it
	// What the rating gave a new charged tap, written with it.
	charge           int64
	transfer, capped bool
	postings         int64
}

// claims reports whether the tap uses up its payment code.
func (w *tapWork) claims() bool {
	return w.isNew && (w.flag == "" || w.flag == FlagCurrencyMismatch)
}

// commitTaps commits taps in the transaction. skipBusy (PostgreSQL):
// the taps of accounts that another transaction holds locked are left
// out, their indexes in taps returned as busy, for the caller to commit
// in a transaction of their own, rather than this one waiting for them
// with all its other accounts locked: concurrent committers (ingest
// workers, settlement instances) whose batches share a few riders then
// wait for each other only for those riders' taps, not in a convoy of
// whole batches. Their results are left zero.
func (t *txn) commitTaps(taps []Tap, skipBusy bool) (results []TapResult, busy []int, err error) {
	cat, err := t.loadCatalog()
	if err != nil {
		return nil, nil, err
	}
	creds, held, err := t.lockWithCredentials(taps, skipBusy)
	if err != nil {
		return nil, nil, err
	}
	if len(held) == 0 {
		results, err = t.settleTaps(taps, cat, creds)
		return results, nil, err
	}
	// Every record of a tap id one of whose records is a held rider's
	// waits with it: the first record of an id in the batch is the tap,
	// the others duplicates (a conflict when their contents differ), as
	// in one transaction; the free rider's later record, settled first,
	// was the tap and the held rider's the conflict, another rider charged
	// by whichever account another transaction held.
	heldID := map[string]bool{}
	for i := range taps {
		if held[taps[i].Account] {
			heldID[taps[i].ID] = true
		}
	}
	var free []Tap
	var freeIdx []int
	for i := range taps {
		if heldID[taps[i].ID] {
			busy = append(busy, i)
		} else {
			free = append(free, taps[i])
			freeIdx = append(freeIdx, i)
		}
	}
	results = make([]TapResult, len(taps))
	if len(free) > 0 {
		settled, err := t.settleTaps(free, cat, creds)
		if err != nil {
			return nil, nil, err
		}
		for j, i := range freeIdx {
			results[i] = settled[j]
		}
	}
	return results, busy, nil
}

// settleTaps commits taps whose accounts the transaction holds (see
// CommitTaps).
func (t *txn) settleTaps(taps []Tap, cat *fareCatalog, creds map[credKey]issued) ([]TapResult, error) {
	results := make([]TapResult, len(taps))
	work := make([]tapWork, len(taps))
	firstOf := map[string]int{}
	for i := range taps {
		w := &work[i]
		w.tp, w.res = &taps[i], &results[i]
		w.res.ID = w.tp.ID
		if _, dup := firstOf[w.tp.ID]; dup {
			continue
		}
		firstOf[w.tp.ID] = i
		w.first = true
	}
	if err := t.markNew(work); err != nil {
		return nil, err
	}
	for i := range work {
		if w := &work[i]; w.isNew {
			if err := t.decide(w, cat, creds); err != nil {
				return nil, err
			}
		}
	}
	codes, err := t.claimCodes(work, creds)
	if err != nil {
		return nil, err
	}
	// Each touched account-day is re-rated from its earliest new or
	// refunded tap (see rate).
	var days []dayKey
	from := map[dayKey]int64{}
	addDay := func(k dayKey, at int64) {
		if f, ok := from[k]; !ok {
			days = append(days, k)
			from[k] = at
		} else {
			from[k] = min(f, at)
		}
	}
	for i := range work {
		if w := &work[i]; w.isNew && w.flag == "" {
			addDay(dayKey{w.tp.Account, w.day}, w.tp.Time.UnixNano())
		}
	}
	for _, r := range codes.refunds {
		addDay(r.day, r.at)
	}
	writes, err := t.rate(days, from, work, codes.refunds)
	if err != nil {
		return nil, err
	}
	if err := t.insertTaps(work); err != nil {
		return nil, err
	}
	if err := t.s.hook("commit-taps:stored"); err != nil {
		return nil, err
	}
	if err := t.writeCodes(codes); err != nil {
		return nil, err
	}
	if err := t.writeRating(writes); err != nil {
		return nil, err
	}
	if err := t.s.hook("commit-taps:rated"); err != nil {
		return nil, err
	}
	var dups []int
	for i := range work {
		w := &work[i]
		if !w.isNew {
			w.res.Duplicate = true
			dups = append(dups, i)
			continue
		}
		w.res.Flag, w.res.Notes = w.flag, w.notes
		if w.flag == "" {
			w.res.Charge, w.res.Fare, w.res.RatedVersion = w.charge, w.fare, w.version
		}
		t.logFlagged(w)
	}
	if err := t.readDuplicates(work, dups); err != nil {
		return nil, err
	}
	// A held record whose tap id the ledger holds with other contents (a
	// conflict) stays held: the caller keeps it aside (Quarantine, which
	// releases it in its own transaction). Released here, a crash before
	// the caller's quarantine lost it for good.
	if err := t.releaseHeld(taps, results); err != nil {
		return nil, err
	}
	return results, nil
}

// markNew reads which of the batch's tap ids are stored already and marks
// the others (the first occurrence of each id in the batch) new.
func (t *txn) markNew(work []tapWork) error {
	var ids []string
	for i := range work {
		if work[i].first {
			ids = append(ids, work[i].tp.ID)
		}
	}
	stored := map[string]bool{}
	for _, c := range texts(ids).chunks(t.pg()) {
		from, where, args := t.matching(c, "taps", "t", "tap_id")
		rows, err := t.bulkQuery(`SELECT t.tap_id FROM `+from+` WHERE `+where, args...)
		if err != nil {
			return fmt.Errorf("ledger: read stored tap ids: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: read stored tap ids: %w", err)
			}
			stored[id] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: read stored tap ids: %w", err)
		}
	}
	for i := range work {
		w := &work[i]
		w.isNew = w.first && !stored[w.tp.ID]
	}
	return nil
}

// decide rates one new tap's base fare and sets its flag and notes.
func (t *txn) decide(w *tapWork, cat *fareCatalog, creds map[credKey]issued) error {
	tp := w.tp
	version, known := cat.choose(tp.FareVersion, tp.Time, t.s.fareGrace)
	tbl, err := t.table(version)
	if err != nil {
		return err
	}
	w.fare, err = tbl.Fare(tp.Route, tp.Profile)
	if err != nil {
		return invalid("tap %s: %v", tp.ID, err)
	}
	// The service day is the one of the table in force at the tap's time,
	// whichever table rates it: a bus still charging the table before (a
	// claim within FareGrace) put its rides on that table's days, and when
	// the new table moved the day's start or zone, a rider who changed
	// onto an up-to-date bus had two service days at once — the transfer
	// charged a full fare, the daily cap counted twice
	// (TestFareChangeOneServiceDay). Nor is it before the day of the
	// instant before that table came into force (serviceDayAt).
	if w.day, err = serviceDayAt(cat.versions, t.table, tp.Time.UnixNano()); err != nil {
		return err
	}
	w.acct = t.accounts[tp.Account]
	c, ok := creds[credKey{tp.Account, tp.Serial}]
	if !ok && tp.Flag == "" && w.acct != nil && t.s.lostCredential(tp) {
		if c, err = t.adoptCredential(tp); err != nil {
			return err
		}
		creds[credKey{tp.Account, tp.Serial}], ok = c, true
	}
	switch {
	case tp.Flag != "":
		w.flag = tp.Flag
	case w.acct == nil:
		w.flag = FlagUnknownAccount
	case !ok || !bytes.Equal(c.riderKey, tp.RiderKey):
		w.flag = FlagUnknownCredential
	case tbl.Currency != w.acct.currency:
		w.flag = FlagCurrencyMismatch
	}
	if w.flag == "" {
		w.version = version
		w.notes = append(w.notes, tp.Notes...)
		if w.fare != tp.BaseFare || tbl.Currency != tp.Currency {
			w.notes = append(w.notes, NoteFareMismatch)
		}
		if !known {
			w.notes = append(w.notes, NoteUnknownFareVersion)
		}
		if tp.ClaimedProfile != tp.Profile {
			w.notes = append(w.notes, NoteProfileMismatch)
		}
	}
	return nil
}

// lockWithCredentials locks the batch's accounts and reads the issued
// credentials its codes name, with one statement: the accounts in id
// order, each joined with its credentials among the batch's (account,
// serial) pairs. A batch too large for one SQLite statement takes two
// (lockAccounts, readCredentials).
//
// skipBusy (PostgreSQL): accounts another transaction holds locked are
// skipped, not waited for, and returned in busy (telling them from
// accounts that do not exist takes a second statement, only when some
// account was not found).
func (t *txn) lockWithCredentials(taps []Tap, skipBusy bool) (creds map[credKey]issued, busy map[uint64]bool, err error) {
	pairs := newBulk(tBigint, tBigint)
	seenID := map[uint64]bool{}
	seenPair := map[credKey]bool{}
	var sorted []uint64
	for i := range taps {
		a := taps[i].Account
		if a > math.MaxInt64 {
			continue
		}
		if !seenID[a] {
			seenID[a] = true
			sorted = append(sorted, a)
		}
		if k := (credKey{a, taps[i].Serial}); !seenPair[k] {
			seenPair[k] = true
			pairs.add(int64(k.account), int64(k.serial))
		}
	}
	slices.Sort(sorted) // PostgreSQL locks them in this order
	ids := int64s(sorted)
	if len(t.accounts) > 0 || ids.padded()+pairs.padded()*2 > maxBulkParams {
		all := make([]uint64, len(taps))
		for i := range taps {
			all[i] = taps[i].Account
		}
		if err := t.lockAccounts(all); err != nil {
			return nil, nil, err
		}
		creds, err := t.readCredentials(taps)
		return creds, nil, err
	}
	out := map[credKey]issued{}
	if ids.rows == 0 {
		return out, nil, nil
	}
	// The pairs come first in the text: SQLite's parameters go by position.
	pairSrc, pairArgs := t.rows(pairs, 1)
	idSrc, idArgs := t.rows(ids, len(pairArgs)+1)
	q := `SELECT a.id, a.currency, a.balance, a.postings, a.credit_line, a.neg_denied,
			c.serial, c.rider_public_key, c.not_after_ns
		FROM accounts a LEFT JOIN credentials c ON c.account_id = a.id AND (c.account_id, c.serial) IN (` + pairSrc + `)
		WHERE a.id IN (` + idSrc + `) ORDER BY a.id`
	if t.pg() {
		lock := lockAccount
		if skipBusy {
			lock += " SKIP LOCKED"
		}
		// Index lookups whatever plan is cached (see matching), the
		// accounts locked in id order (see lockAccount).
		// The credentials are looked up pair by pair, once: joined to
		// each account as an IN list, the planner hashed the whole list
		// once per account (half of the statement's time).
		q = `WITH c AS MATERIALIZED (SELECT p.account_id, x.serial, x.rider_public_key, x.not_after_ns
				FROM (` + pairSrc + `) AS p (account_id, serial)
				CROSS JOIN LATERAL (SELECT serial, rider_public_key, not_after_ns FROM credentials
					WHERE credentials.account_id = p.account_id AND credentials.serial = p.serial OFFSET 0) AS x)
			SELECT a.id, a.currency, a.balance, a.postings, a.credit_line, a.neg_denied,
				c.serial, c.rider_public_key, c.not_after_ns
			FROM (` + idSrc + `) AS v (id) CROSS JOIN LATERAL (` + lock + `) AS a
			LEFT JOIN c ON c.account_id = a.id
			ORDER BY a.id`
	}
	rows, err := t.bulkQuery(q, append(pairArgs, idArgs...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: lock accounts: %w", err)
	}
	for rows.Next() {
		a := &acctState{}
		var id int64
		var serial, notAfter sql.NullInt64
		var riderKey []byte
		if err := rows.Scan(&id, &a.currency, &a.balance, &a.postings, &a.creditLine, &a.negDenied, &serial, &riderKey,
			&notAfter); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("ledger: lock accounts: %w", err)
		}
		a.id = uint64(id)
		if t.accounts[a.id] == nil {
			t.accounts[a.id] = a
		}
		if serial.Valid {
			out[credKey{a.id, uint32(serial.Int64)}] = issued{riderKey: riderKey, notAfter: notAfter.Int64}
		}
	}
	if err := rows.Close(); err != nil {
		return nil, nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ledger: lock accounts: %w", err)
	}
	if skipBusy {
		if busy, err = t.busyAccounts(sorted); err != nil {
			return nil, nil, err
		}
	}
	for id := range seenID {
		if _, ok := t.accounts[id]; !ok && !busy[id] {
			t.accounts[id] = nil
		}
	}
	return out, busy, nil
}

// busyAccounts returns those of ids that the transaction did not lock
// but that exist: another transaction holds them (skipped by SKIP
// LOCKED). Nothing is read when every id was locked.
func (t *txn) busyAccounts(ids []uint64) (map[uint64]bool, error) {
	var missing []uint64
	for _, id := range ids {
		if _, ok := t.accounts[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	from, where, args := t.matching(int64s(missing), "accounts", "a", "id")
	rows, err := t.bulkQuery(`SELECT a.id FROM `+from+` WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read busy accounts: %w", err)
	}
	defer rows.Close()
	busy := map[uint64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ledger: read busy accounts: %w", err)
		}
		busy[uint64(id)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: read busy accounts: %w", err)
	}
	return busy, nil
}

// readCredentials reads the issued credentials the batch's codes name.
func (t *txn) readCredentials(taps []Tap) (map[credKey]issued, error) {
	out := map[credKey]issued{}
	b := newBulk(tBigint, tBigint)
	seen := map[credKey]bool{}
	for i := range taps {
		k := credKey{taps[i].Account, taps[i].Serial}
		if !seen[k] && t.accounts[k.account] != nil {
			seen[k] = true
			b.add(int64(k.account), int64(k.serial))
		}
	}
	if b.rows == 0 {
		return out, nil
	}
	for _, c := range b.chunks(t.pg()) {
		from, where, args := t.matching(c, "credentials", "c", "account_id", "serial")
		rows, err := t.bulkQuery(`SELECT c.account_id, c.serial, c.rider_public_key, c.not_after_ns FROM `+from+`
			WHERE `+where, args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: read credentials: %w", err)
		}
		for rows.Next() {
			var account, serial int64
			var c issued
			if err := rows.Scan(&account, &serial, &c.riderKey, &c.notAfter); err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: read credentials: %w", err)
			}
			out[credKey{uint64(account), uint32(serial)}] = c
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("ledger: read credentials: %w", err)
		}
	}
	return out, nil
}

// insertTaps stores the batch's new taps, with their flags and (for the
// charged ones) their rating, with one statement per chunk.
func (t *txn) insertTaps(work []tapWork) error {
	b := newBulk(tText, tText, tBigint, tText, tBigint, tBigint, tBigint, tBytes, tBytes, tText, tBigint,
		tBigint, tBigint, tText, tBigint, tText, tText, tBytes, tText, tText, tText, tBigint,
		tBigint, tBool, tBool, tBigint, tBigint)
	for i := range work {
		w := &work[i]
		if !w.isNew {
			continue
		}
		tp := w.tp
		record := tp.Record
		if record == nil {
			record = []byte{}
		}
		t.stat(statTaps, 1)
		if w.flag != "" {
			t.stat(statFlagged, 1)
		}
		b.add(tp.ID, tp.DeviceID, int64(tp.Seq), tp.Epoch, tp.Time.UnixNano(), int64(tp.Account), int64(tp.Serial),
			tp.CodeKey, tp.RiderKey, tp.CodeHash, int64(tp.Profile), w.fare, tp.BaseFare, tp.Currency, int64(tp.FareVersion),
			tp.Route, tp.Vehicle, record, w.day, w.flag, strings.Join(w.notes, ","), int64(w.version),
			w.charge, w.transfer, w.capped, w.postings, t.now)
	}
	// exact: another transaction stored one of these ids (with another
	// account) since markNew: run again, it is a duplicate then.
	return t.bulkWrite("store taps", b, true, func(src string) string {
		return `INSERT INTO taps (tap_id, device_id, seq, epoch, at_ns, account_id, serial, code_key,
				rider_key, code_hash, profile, base_fare, claimed_fare, currency, fare_version, route, vehicle, record,
				service_day, flag, notes, rated_version, charge, transfer, capped, postings, committed_ns)
			` + src + ` ON CONFLICT DO NOTHING`
	})
}

// holder is the current use of a payment code: a tap or an online payment.
type holder struct {
	tapID     string // "" for a payment
	device    string
	vehicle   string
	at        int64 // tap time, or the payment's time
	account   uint64
	day       string
	charge    int64
	postings  int64
	reuses    int64
	reusers   []string // the devices whose records were counted as reuses (see reusersOf)
	paymentID int64
}

// refund is a tap that lost its code to an earlier tap in this commit: it
// is flagged duplicate_code, and its charge goes back to 0.
type refund struct {
	tapID    string
	day      dayKey
	at       int64 // the tap's time
	charge   int64
	postings int64
}

// before orders code uses: earlier tap time first, then tap id.
func before(at1 int64, id1 string, at2 int64, id2 string) bool {
	if at1 != at2 {
		return at1 < at2
	}
	return id1 < id2
}

// codeWrites are what claimCodes decided, written by writeCodes once the
// batch's taps are stored (code uses refer to them).
type codeWrites struct {
	newUses *bulk       // code uses of codes new to the ledger
	moves   []codeCount // code uses that move to an earlier tap (tapID set)
	counts  []codeCount // code uses whose reuse count changes
	flagged []string    // stored taps that lose their code
	note    map[string]string
	refunds []refund
	// renote: stored duplicate uses whose note changes when the code's
	// uses are judged again, tap id → the new note.
	renote map[string]string
}

type codeCount struct {
	key     []byte
	tapID   string
	reuses  int64
	reusers string
}

// maxReusers bounds the devices a code use remembers as reusers: a second
// counted reuse denies the credential, so more are only ever a few.
const maxReusers = 16

// reusersOf reads a code use's reusers column.
func reusersOf(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// claimCodes gives each payment code of the batch's new taps to its
// earliest use and flags the others (new ones in memory: they are stored
// flagged); it denies credentials whose codes were reused. The taps that
// lose a code they held before this commit are returned as refunds.
func (t *txn) claimCodes(work []tapWork, creds map[credKey]issued) (*codeWrites, error) {
	cw := &codeWrites{newUses: newBulk(tBytes, tBigint, tBigint, tText, tBigint, tText, tBigint), note: map[string]string{},
		renote: map[string]string{}}
	byKey := map[string][]*tapWork{}
	var keys [][]byte
	for i := range work {
		w := &work[i]
		if !w.claims() {
			continue
		}
		k := string(w.tp.CodeKey)
		if byKey[k] == nil {
			keys = append(keys, w.tp.CodeKey)
		}
		byKey[k] = append(byKey[k], w)
	}
	if len(keys) == 0 {
		return cw, nil
	}
	holders, err := t.readHolders(keys)
	if err != nil {
		return nil, err
	}
	forgiven := map[dayKey]int{}
	for _, key := range keys {
		ws := byKey[string(key)]
		slices.SortFunc(ws, func(a, b *tapWork) int {
			if before(a.tp.Time.UnixNano(), a.tp.ID, b.tp.Time.UnixNano(), b.tp.ID) {
				return -1
			}
			return 1
		})
		win := ws[0]
		keeper := use{tapID: win.tp.ID, device: win.tp.DeviceID, vehicle: win.tp.Vehicle, at: win.tp.Time.UnixNano(), day: win.day}
		var lost []use // every use that loses the code in this commit
		var losers []*tapWork
		var oldHolder string
		h, held := holders[string(key)]
		switch {
		case !held:
			losers = ws[1:]
		case h.tapID == "" || before(h.at, h.tapID, keeper.at, keeper.tapID):
			// The code stays with the online payment or the earlier tap.
			keeper, losers = use{tapID: h.tapID, device: h.device, vehicle: h.vehicle, at: h.at, day: h.day}, ws
		default:
			// The new tap was made before the tap that held the code: it
			// takes the code over, and the old holder is flagged and
			// refunded.
			losers, oldHolder = ws[1:], h.tapID
			lost = append(lost, use{tapID: h.tapID, device: h.device, vehicle: h.vehicle, at: h.at, day: h.day})
			cw.refunds = append(cw.refunds, refund{tapID: h.tapID, day: dayKey{h.account, h.day}, at: h.at, charge: h.charge,
				postings: h.postings})
			t.s.log.Warn("ledger: an earlier tap of a payment code arrived late and takes the code; the later tap is refunded",
				"tap", keeper.tapID, "refunded_tap", h.tapID, "account", h.account)
		}
		for _, l := range losers {
			lost = append(lost, use{tapID: l.tp.ID, device: l.tp.DeviceID, vehicle: l.tp.Vehicle, at: l.tp.Time.UnixNano(), day: l.day})
		}
		// A use recorded by a device that had recorded one of the code
		// before — the keeper's own device, or one whose record was
		// counted as a reuse — is that device's word alone (see
		// NoteSameDeviceReuse): it is not counted as a reuse of the
		// rider's. A stolen validator that sent a code it was shown twice
		// got the rider's passes and account denied, at once or at their
		// next quick transfer (a review); one shown a code that another
		// validator took did the same by sending it twice (an attack
		// review): each device counts once.
		// The uses of the code are judged together, whatever order they
		// arrived in: the ones stored as duplicates before and this
		// commit's, in time order after the keeper. Counted one commit at
		// a time, the verdict followed the arrival order: a device's
		// second record that came before its first was counted as the
		// rider's reuse, and the first, arriving last, took the code and
		// counted the other device's use as a second reuse, denying the
		// credential that the same records in time order left valid
		// (TestReuseVerdictOrderIndependent).
		var stored []use
		storedNote := map[string]string{}
		if held {
			var err error
			if stored, storedNote, err = t.duplicateUses(win.tp.Account, key); err != nil {
				return nil, err
			}
		}
		isNew := map[string]bool{}
		for _, l := range lost {
			isNew[l.tapID] = true
		}
		all := append(slices.Clone(stored), lost...)
		slices.SortFunc(all, func(a, b use) int {
			if before(a.at, a.tapID, b.at, b.tapID) {
				return -1
			}
			return 1
		})
		spoke := map[string]bool{}
		if keeper.tapID != "" {
			spoke[keeper.device] = true
		}
		var reusers []string
		var counted []use
		newCounted := false
		word := map[string]bool{} // tap ids of uses that are their device's word alone
		for _, l := range all {
			if spoke[l.device] {
				word[l.tapID] = true
				continue
			}
			counted = append(counted, l)
			newCounted = newCounted || isNew[l.tapID]
			spoke[l.device] = true
			if len(reusers) < maxReusers {
				reusers = append(reusers, l.device)
			}
		}
		reuses := int64(len(counted))
		reusersCol := strings.Join(reusers, ",")
		innocent := false
		if len(counted) > 0 {
			var err error
			// A reuse of this code stored as forgiven (that day) is in
			// the other codes' stored count already (their query reads
			// the notes as they were before this commit): not counted
			// again in this commit's.
			again := false
			for _, u := range stored {
				again = again || (strings.Contains(storedNote[u.tapID], NoteCodeReuseWindow) && u.day == counted[0].day)
			}
			if innocent, err = t.innocent(win.tp.Account, key, keeper, counted, reuses, again, forgiven); err != nil {
				return nil, err
			}
		}
		// Each loser's note: its device's word (not counted), or the
		// reuse rule's.
		noteOf := func(tapID string) string {
			switch {
			case word[tapID]:
				return NoteSameDeviceReuse
			case innocent:
				return NoteCodeReuseWindow
			}
			return ""
		}
		for _, l := range losers {
			l.flag, l.notes, l.version = FlagDuplicateCode, nil, 0
			if note := noteOf(l.tp.ID); note != "" {
				l.notes = []string{note}
			}
		}
		if oldHolder != "" {
			cw.flagged = append(cw.flagged, oldHolder)
			cw.note[oldHolder] = noteOf(oldHolder)
		}
		renoted := false
		for _, u := range stored {
			if note := noteOf(u.tapID); note != storedNote[u.tapID] {
				cw.renote[u.tapID] = note
				renoted = true
			}
		}
		switch {
		case !held:
			cw.newUses.add(key, int64(win.tp.Account), int64(win.tp.Serial), win.tp.ID, reuses, reusersCol, t.now)
		case keeper.tapID == win.tp.ID:
			cw.moves = append(cw.moves, codeCount{key: key, tapID: win.tp.ID, reuses: reuses, reusers: reusersCol})
		case len(lost) > 0:
			cw.counts = append(cw.counts, codeCount{key: key, reuses: reuses, reusers: reusersCol})
		}
		if len(lost) == 0 {
			continue
		}
		if len(word) > 0 {
			var devices []string
			for _, l := range lost {
				if word[l.tapID] && !slices.Contains(devices, l.device) {
					devices = append(devices, l.device)
				}
			}
			t.s.log.Warn("ledger: a device recorded a payment code it had recorded before (a validator refuses a code it took): "+
				"its later records not charged nor counted against the rider; look at the device (stolen, tampered, or its queue file put back from a backup)",
				"device", strings.Join(devices, ","), "account", win.tp.Account, "serial", win.tp.Serial, "code_hash", win.tp.CodeHash,
				"records", len(word))
		}
		if !newCounted && !renoted {
			continue // nothing new against the rider
		}
		if err := t.reused(win.tp, reuses, innocent, creds); err != nil {
			return nil, err
		}
	}
	return cw, nil
}

// writeCodes writes what claimCodes decided.
func (t *txn) writeCodes(cw *codeWrites) error {
	// exact: another transaction claimed a code of an account this one has
	// locked: impossible unless the locks failed; run again.
	err := t.bulkWrite("record code uses", cw.newUses, true, func(src string) string {
		return `INSERT INTO code_uses (code_key, account_id, serial, tap_id, reuses, reusers, created_ns)
			` + src + ` ON CONFLICT DO NOTHING`
	})
	if err != nil {
		return err
	}
	for _, m := range cw.moves {
		if _, err := t.exec("move code use", `UPDATE code_uses SET tap_id = $1, reuses = $2, reusers = $3 WHERE code_key = $4`,
			m.tapID, m.reuses, m.reusers, m.key); err != nil {
			return err
		}
	}
	for _, m := range cw.counts {
		if _, err := t.exec("count code reuse", `UPDATE code_uses SET reuses = $1, reusers = $2 WHERE code_key = $3`, m.reuses, m.reusers, m.key); err != nil {
			return err
		}
	}
	// A refunded holder's service day changes with no tap of it
	// committed.
	if len(cw.refunds) > 0 {
		days := make([]string, len(cw.refunds))
		for i, r := range cw.refunds {
			days[i] = r.day.day
		}
		if err := t.markStaleDays(days); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(cw.renote)) {
		if _, err := t.exec("note code reuse", `UPDATE taps SET notes = $1 WHERE tap_id = $2`, cw.renote[id], id); err != nil {
			return err
		}
	}
	for _, id := range cw.flagged {
		n, err := t.execCount("flag tap", `UPDATE taps SET flag = $1, notes = $2 WHERE tap_id = $3 AND flag <> $4`,
			FlagDuplicateCode, cw.note[id], id, FlagVoided)
		if err != nil {
			return err
		}
		if n > 0 {
			t.stat(statFlagged, 1)
			continue
		}
		// A voided tap (VoidTap: counted flagged then, charged nothing)
		// that loses its code: duplicate_code all the same, as the code's
		// reuse count says, but not counted flagged twice.
		if _, err := t.exec("flag tap", `UPDATE taps SET flag = $1, notes = $2 WHERE tap_id = $3`,
			FlagDuplicateCode, cw.note[id], id); err != nil {
			return err
		}
	}
	return nil
}

// markStaleDays has the console sum days again whose summaries change
// with no tap of them committed (a refund, a void): console_stale_days.
// One mark a call, that only grows (a counter, not a count per row, which
// began again at 1 once the row was removed, so that another instance's
// summary could remove a mark it had not summed), written once a day.
func (t *txn) markStaleDays(days []string) error {
	mark, err := t.nextID("stale_mark")
	if err != nil {
		return err
	}
	marked := map[string]bool{}
	for _, day := range days {
		if marked[day] {
			continue
		}
		marked[day] = true
		if _, err := t.exec("mark stale day", `INSERT INTO console_stale_days (service_day, mark) VALUES ($1, $2)
			ON CONFLICT (service_day) DO UPDATE SET mark = excluded.mark`, day, mark); err != nil {
			return err
		}
	}
	return nil
}

// use is one use of a payment code, for the reuse rule.
type use struct {
	tapID   string // "" for an online payment
	device  string
	vehicle string // "" when the device had no assignment
	at      int64
	day     string // the service day of a tap
}

// MaxForgivenReuses is how many reuses the rule forgives an account in a
// service day (see innocent): an honest rider's quick transfers on an
// unrefreshed code are rare; two people sharing one account's codes ride
// twice a trip, every trip. (No least time between the two uses is asked:
// they are the two validators' clocks, each up to 30 s from the server's,
// and an honest transfer would be denied.)
const MaxForgivenReuses = 2

// innocent reports whether a code's reuse looks like an honest rider's: a
// single reuse, on another device and another vehicle than the use that
// keeps the code (a shop's online payment is neither), within ReuseWindow
// of it (one code shown on two buses of a quick transfer, or on a bus and
// at a shop's till), and at most MaxForgivenReuses forgiven on the
// account's service day (forgiven counts those this commit forgave
// already; again: the reuse was stored as forgiven before, and is counted
// among the stored ones for the other codes). Two doors of one bus are no
// transfer.
func (t *txn) innocent(account uint64, key []byte, keeper use, lost []use, reuses int64, again bool, forgiven map[dayKey]int) (bool, error) {
	if reuses != 1 || len(lost) != 1 {
		return false, nil
	}
	l := lost[0]
	d := time.Duration(l.at - keeper.at)
	if d < 0 {
		d = -d
	}
	// A shop's online payment keeps its code too (keeper.tapID ""): the
	// same code shown to an offline validator and at a till within the
	// window (the wallet shows one code a minute and cannot know a bus
	// took it) is judged as a quick transfer, not as sharing.
	if l.device == keeper.device || d > t.s.reuseWindow ||
		(l.vehicle != "" && l.vehicle == keeper.vehicle) {
		return false, nil
	}
	dk := dayKey{account, l.day}
	var stored int64
	// Not this code's own taps: its uses are being judged again.
	if err := t.queryRow(`SELECT COUNT(*) FROM taps WHERE account_id = $1 AND service_day = $2 AND flag = $3 AND notes LIKE $4
			AND code_key <> $5`,
		int64(account), l.day, FlagDuplicateCode, "%"+NoteCodeReuseWindow+"%", key).Scan(&stored); err != nil {
		return false, fmt.Errorf("ledger: count forgiven reuses: %w", err)
	}
	if int(stored)+forgiven[dk] >= MaxForgivenReuses {
		return false, nil
	}
	if !again {
		forgiven[dk]++
	}
	return true, nil
}

// reused denies the credential of a code used more than once, unless the
// reuse looks innocent; the entry expires an hour after the credential.
func (t *txn) reused(tp *Tap, reuses int64, innocent bool, creds map[credKey]issued) error {
	if innocent {
		t.s.log.Info("ledger: payment code shown twice within the reuse window on another device; the second use is free, the credential stays valid",
			"account", tp.Account, "serial", tp.Serial, "code_hash", tp.CodeHash)
		return nil
	}
	expires := int64(0)
	if c, ok := creds[credKey{tp.Account, tp.Serial}]; ok {
		expires = c.notAfter + int64(DenyGrace)
	}
	if _, err := t.deny(tp.Account, tp.Serial, ReasonCodeReused, expires); err != nil {
		return err
	}
	if err := t.denyOtherCredentials(tp.Account, tp.Serial); err != nil {
		return err
	}
	t.s.log.Warn("ledger: payment code used more than once, later uses not charged, credential denied",
		"account", tp.Account, "serial", tp.Serial, "code_hash", tp.CodeHash, "uses", reuses+1)
	return nil
}

// denyOtherCredentials denies the whole account (ReasonCodeReusedAccount,
// until an hour after the last of them expires) if it holds other
// credentials still valid: a rider who fetched several before reusing a
// code would otherwise go on with the next, since a code_reused entry
// stops only new ones. One account entry, not one per credential: nothing
// bounds how many credentials a rider fetches, and every entry goes to
// every validator.
func (t *txn) denyOtherCredentials(account uint64, serial uint32) error {
	var last sql.NullInt64
	if err := t.queryRow(`SELECT MAX(not_after_ns) FROM credentials WHERE account_id = $1 AND serial <> $2 AND not_after_ns > $3`,
		int64(account), int64(serial), t.now-int64(DenyGrace)).Scan(&last); err != nil {
		return fmt.Errorf("ledger: read credentials: %w", err)
	}
	if !last.Valid {
		return nil
	}
	_, err := t.deny(account, 0, ReasonCodeReusedAccount, last.Int64+int64(DenyGrace))
	return err
}

// duplicateUses reads the stored duplicate_code taps of a payment code
// (of account: a code is one account's), with their notes by tap id.
func (t *txn) duplicateUses(account uint64, key []byte) ([]use, map[string]string, error) {
	rows, err := t.query(`SELECT tap_id, device_id, vehicle, at_ns, service_day, notes FROM taps
		WHERE account_id = $1 AND code_key = $2 AND flag = $3`, int64(account), key, FlagDuplicateCode)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: read code uses: %w", err)
	}
	defer rows.Close()
	var out []use
	notes := map[string]string{}
	for rows.Next() {
		var u use
		var note string
		if err := rows.Scan(&u.tapID, &u.device, &u.vehicle, &u.at, &u.day, &note); err != nil {
			return nil, nil, fmt.Errorf("ledger: read code uses: %w", err)
		}
		out = append(out, u)
		notes[u.tapID] = note
	}
	return out, notes, rows.Err()
}

// readHolders reads the current uses of payment codes.
func (t *txn) readHolders(keys [][]byte) (map[string]*holder, error) {
	out := map[string]*holder{}
	b := newBulk(tBytes)
	for _, k := range keys {
		b.add(k)
	}
	for _, c := range b.chunks(t.pg()) {
		from, where, args := t.matching(c, "code_uses", "u", "code_key")
		holderTap := `LEFT JOIN taps t ON t.tap_id = u.tap_id`
		if t.pg() { // an index lookup whatever plan is cached (see matching)
			holderTap = `LEFT JOIN LATERAL (SELECT * FROM taps WHERE taps.tap_id = u.tap_id OFFSET 0) AS t ON TRUE`
		}
		rows, err := t.bulkQuery(`SELECT u.code_key, u.account_id, u.reuses, u.reusers, COALESCE(u.tap_id, ''), COALESCE(u.payment_id, 0),
				COALESCE(t.device_id, ''), COALESCE(t.vehicle, ''), COALESCE(t.at_ns, u.created_ns), COALESCE(t.service_day, ''),
				COALESCE(t.charge, 0), COALESCE(t.postings, 0)
			FROM `+from+` `+holderTap+`
			WHERE `+where, args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: read code uses: %w", err)
		}
		for rows.Next() {
			var key []byte
			var h holder
			var account int64
			var reusers string
			if err := rows.Scan(&key, &account, &h.reuses, &reusers, &h.tapID, &h.paymentID, &h.device, &h.vehicle, &h.at, &h.day, &h.charge,
				&h.postings); err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: read code uses: %w", err)
			}
			h.account, h.reusers = uint64(account), reusersOf(reusers)
			out[string(key)] = &h
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("ledger: read code uses: %w", err)
		}
	}
	return out, nil
}

// rated is a stored, unflagged tap of a day being re-rated.
type rated struct {
	id               string
	account          uint64
	day              string
	at               int64
	profile, base    int64
	version          int64
	charge           int64
	transfer, capped bool
	postings         int64
}

// ratingWrites are the postings and the changes of stored taps a rating
// makes, written by writeRating.
type ratingWrites struct {
	postings *bulk
	taps     *bulk
}

// rate re-rates the account-days with their stored unflagged taps and the
// batch's new charged taps, and refunds the stored taps that lost their
// code. It sets the new taps' charges (stored with them) and returns the
// postings and the stored taps' changes; balances change in the locked
// accounts (written by finish).
func (t *txn) rate(days []dayKey, from map[dayKey]int64, work []tapWork, refunds []refund) (*ratingWrites, error) {
	rw := &ratingWrites{
		postings: newBulk(tBigint, tBigint, tText, tBigint, tText, tBigint, tBigint),
		taps:     newBulk(tText, tBigint, tBool, tBool, tBigint, tBigint),
	}
	if len(days) == 0 {
		return rw, nil
	}
	stored, states, err := t.readDays(days, from)
	if err != nil {
		return nil, err
	}
	post := func(a *acctState, tapID string, postings, amount int64, version uint64) {
		kind := KindFareCorrection
		if postings == 0 {
			kind = KindFare
		}
		a.postings++
		a.balance += amount
		a.dirty = true
		t.stat(statPostings, 1)
		t.stat(statBalance, amount)
		rw.postings.add(int64(a.id), a.postings, kind, amount, tapID, int64(version), t.now)
	}
	refunded := map[string]bool{}
	for _, r := range refunds {
		refunded[r.tapID] = true
		a := t.accounts[r.day.account]
		postings := r.postings
		if r.charge != 0 {
			post(a, r.tapID, postings, r.charge, 0)
			postings++
		}
		rw.taps.add(r.tapID, int64(0), false, false, postings, int64(0))
	}
	fresh := map[dayKey][]*tapWork{}
	for i := range work {
		if w := &work[i]; w.isNew && w.flag == "" {
			k := dayKey{w.tp.Account, w.day}
			fresh[k] = append(fresh[k], w)
		}
	}
	for _, k := range days {
		a := t.accounts[k.account]
		if a == nil {
			continue
		}
		var rides []fare.Ride
		old := map[string]*rated{}
		news := map[string]*tapWork{}
		var rules *fare.Table
		for i := range stored[k] {
			r := &stored[k][i]
			if refunded[r.id] {
				continue
			}
			tbl, err := t.table(uint64(r.version))
			if err != nil {
				return nil, err
			}
			rules = tbl
			rides = append(rides, fare.Ride{ID: r.id, Time: time.Unix(0, r.at), Profile: profileOf(r.profile), Fare: r.base, Rules: tbl})
			old[r.id] = r
		}
		for _, w := range fresh[k] {
			tbl, err := t.table(w.version)
			if err != nil {
				return nil, err
			}
			rules = tbl
			rides = append(rides, fare.Ride{ID: w.tp.ID, Time: w.tp.Time, Profile: w.tp.Profile, Fare: w.fare, Rules: tbl})
			news[w.tp.ID] = w
		}
		if len(rides) == 0 {
			continue
		}
		for _, c := range rules.RateFrom(states[k], rides) {
			if w := news[c.ID]; w != nil {
				w.charge, w.transfer, w.capped = c.Amount, c.Transfer, c.Capped
				if c.Amount != 0 {
					post(a, w.tp.ID, 0, -c.Amount, w.version)
					w.postings = 1
				}
				continue
			}
			r := old[c.ID]
			postings := r.postings
			if c.Amount != r.charge {
				post(a, r.id, postings, r.charge-c.Amount, uint64(r.version))
				postings++
			}
			if c.Amount != r.charge || c.Transfer != r.transfer || c.Capped != r.capped {
				rw.taps.add(r.id, c.Amount, c.Transfer, c.Capped, postings, r.version)
			}
		}
	}
	return rw, nil
}

// writeRating appends the rating's postings and updates the stored taps'
// charges, one statement each (per chunk).
func (t *txn) writeRating(rw *ratingWrites) error {
	err := t.bulkWrite("append postings", rw.postings, true, func(src string) string {
		return `INSERT INTO postings (account_id, seq, kind, amount, tap_id, fare_version, created_ns) ` + src
	})
	if err != nil {
		return err
	}
	// exact: the taps were read by this transaction, their accounts
	// locked.
	return t.bulkWrite("update tap charges", rw.taps, true, func(src string) string {
		return t.updateFrom("taps", "tap_id", []string{"charge", "transfer", "capped", "postings", "rated_version"}, src)
	})
}

// readDays reads the account-days to re-rate, each from the time its
// rating starts (from: the earliest tap of the day that is new in the
// batch or refunded): the unflagged taps at or after it, and the state
// the taps before it leave (fare.DayState: their charges' sum and the
// latest of them not charged the transfer fare). The stored taps' charges
// are their day's rating (an invariant: every commit re-rates what it
// changes), so the taps before are not rated again: a tap arriving in
// time order costs its own rating, not its day's. A tap's charge column
// equals minus the sum of its postings, so no postings are read. One
// statement per chunk.
func (t *txn) readDays(days []dayKey, from map[dayKey]int64) (map[dayKey][]rated, map[dayKey]fare.DayState, error) {
	out := map[dayKey][]rated{}
	states := map[dayKey]fare.DayState{}
	b := newBulk(tBigint, tText, tBigint)
	for _, k := range days {
		b.add(int64(k.account), k.day, from[k])
	}
	for _, c := range b.chunks(t.pg()) {
		q, args := t.daysQuery(c)
		rows, err := t.bulkQuery(q, args...)
		if err != nil {
			return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
		}
		for rows.Next() {
			var r rated
			var kind, account int64
			if err := rows.Scan(&kind, &r.id, &account, &r.day, &r.at, &r.profile, &r.base, &r.version, &r.charge, &r.transfer,
				&r.capped, &r.postings); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
			}
			r.account = uint64(account)
			k := dayKey{r.account, r.day}
			if kind == 1 { // the state before: total in charge, last full fare in at (if profile is 1)
				states[k] = fare.DayState{Total: r.charge, LastFull: time.Unix(0, r.at), HaveFull: r.profile == 1}
				continue
			}
			out[k] = append(out[k], r)
		}
		if err := rows.Close(); err != nil {
			return nil, nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
		}
	}
	return out, states, nil
}

// daysQuery is the read of readDays for the rows (account, day, from) of
// b: the unflagged taps of each account-day at or after from (kind 0),
// and one row (kind 1) with the state the taps before from leave: their
// charges' sum (as charge), the latest time of those not charged the
// transfer fare (as at_ns), and whether there is one (as profile, 1 or 0).
// On PostgreSQL one index scan per account-day for each part (lateral
// subqueries: see matching — it would otherwise hash the days and scan
// every tap of the ledger once it guesses that a batch's days hold a few
// per cent of its taps); on SQLite from the index taps_account_day alone,
// which holds every column read here (migration 0012;
// TestRatingReadsIndexOnly).
func (t *txn) daysQuery(b *bulk) (string, []any) {
	src, args := t.rows(b, 1)
	const cols = `t.tap_id, t.account_id, t.service_day, t.at_ns, t.profile, t.base_fare, t.rated_version, t.charge,
			t.transfer, t.capped, t.postings`
	const state = `CAST(COALESCE(SUM(t.charge), 0) AS BIGINT) AS charge,
			MAX(CASE WHEN t.transfer THEN NULL ELSE t.at_ns END) AS last_full`
	if t.pg() {
		return `WITH v (account_id, service_day, from_ns) AS (` + src + `)
			SELECT 0, ` + cols + ` FROM v CROSS JOIN LATERAL (SELECT * FROM taps
				WHERE taps.account_id = v.account_id AND taps.service_day = v.service_day AND taps.at_ns >= v.from_ns
					AND taps.flag = '' OFFSET 0) AS t
			UNION ALL
			SELECT 1, '', v.account_id, v.service_day, COALESCE(p.last_full, 0), CASE WHEN p.last_full IS NULL THEN 0 ELSE 1 END,
				0, 0, p.charge, FALSE, FALSE, 0
			FROM v CROSS JOIN LATERAL (SELECT ` + state + ` FROM taps AS t
				WHERE t.account_id = v.account_id AND t.service_day = v.service_day AND t.at_ns < v.from_ns
					AND t.flag = '') AS p`, args
	}
	// CROSS JOIN keeps v the outer loop: an index range per account-day.
	return `WITH v (account_id, service_day, from_ns) AS (` + src + `)
		SELECT 0, ` + cols + ` FROM v CROSS JOIN taps AS t
			ON t.account_id = v.account_id AND t.service_day = v.service_day AND t.at_ns >= v.from_ns
		WHERE t.flag = ''
		UNION ALL
		SELECT 1, '', p.account_id, p.service_day, COALESCE(p.last_full, 0), CASE WHEN p.last_full IS NULL THEN 0 ELSE 1 END,
			0, 0, p.charge, FALSE, FALSE, 0
		FROM (SELECT v.account_id, v.service_day, ` + state + `
			FROM v CROSS JOIN taps AS t ON t.account_id = v.account_id AND t.service_day = v.service_day
				AND t.at_ns < v.from_ns AND t.flag = ''
			GROUP BY v.account_id, v.service_day) AS p`, args
}

// readDuplicates fills in the results of taps that were stored before
// (by an earlier commit, or earlier in this batch), and tells a conflict:
// the same id with other contents.
func (t *txn) readDuplicates(work []tapWork, dups []int) error {
	if len(dups) == 0 {
		return nil
	}
	if err := t.flush(); err != nil { // a duplicate of a tap earlier in the batch
		return err
	}
	var ids []string
	seen := map[string]bool{}
	for _, i := range dups {
		if id := work[i].tp.ID; !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	type stored struct {
		account, at  int64
		key, record  []byte
		charge, fare int64
		flag, notes  string
		ratedVersion int64
	}
	got := map[string]stored{}
	for _, c := range texts(ids).chunks(t.pg()) {
		from, where, args := t.matching(c, "taps", "t", "tap_id")
		rows, err := t.bulkQuery(`SELECT t.tap_id, t.account_id, t.at_ns, t.code_key, t.record, t.charge, t.flag, t.notes,
				t.base_fare, t.rated_version
			FROM `+from+` WHERE `+where, args...)
		if err != nil {
			return fmt.Errorf("ledger: read stored taps: %w", err)
		}
		for rows.Next() {
			var id string
			var st stored
			if err := rows.Scan(&id, &st.account, &st.at, &st.key, &st.record, &st.charge, &st.flag, &st.notes, &st.fare,
				&st.ratedVersion); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: read stored taps: %w", err)
			}
			got[id] = st
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: read stored taps: %w", err)
		}
	}
	for _, i := range dups {
		w := &work[i]
		st, ok := got[w.tp.ID]
		if !ok {
			return fmt.Errorf("ledger: tap %s neither stored nor new", w.tp.ID)
		}
		w.res.Charge, w.res.Flag, w.res.Notes = st.charge, st.flag, splitNotes(st.notes)
		if st.flag == "" {
			w.res.Fare, w.res.RatedVersion = st.fare, uint64(st.ratedVersion)
		}
		tp := w.tp
		record := tp.Record
		if record == nil {
			record = []byte{}
		}
		if uint64(st.account) != tp.Account || st.at != tp.Time.UnixNano() || !bytes.Equal(st.key, tp.CodeKey) ||
			!bytes.Equal(st.record, record) {
			w.res.Conflict = true
			w.res.OtherCode = !bytes.Equal(st.key, tp.CodeKey)
			t.s.log.Warn("ledger: tap id committed before with other contents; the stored tap stands",
				"tap", tp.ID, "device", tp.DeviceID, "other_code", w.res.OtherCode)
		}
	}
	return nil
}

func splitNotes(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (t *txn) logFlagged(w *tapWork) {
	switch w.flag {
	case "", FlagDuplicateCode:
	default:
		t.s.log.Warn("ledger: tap flagged, not charged", "tap", w.tp.ID, "account", w.tp.Account, "flag", w.flag)
	}
	if len(w.notes) > 0 {
		t.s.log.Warn("ledger: tap charged by the server's fare table; the validator's claim differs",
			"tap", w.tp.ID, "notes", strings.Join(w.notes, ","), "claimed_fare", w.tp.BaseFare, "fare", w.fare,
			"claimed_version", w.tp.FareVersion, "version", w.version)
	}
}

// TapCount returns the number of taps stored (flagged ones included).
func (s *Store) TapCount(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM taps`).Scan(&n); err != nil {
		return 0, fmt.Errorf("ledger: count taps: %w", err)
	}
	return n, nil
}

// Rides returns an account's taps, newest first (by service day, then tap
// time), with their
// current charges and flags; at most limit of them (limit <= 0: all, up to
// MaxListLimit).
func (s *Store) Rides(ctx context.Context, account uint64, limit int) ([]Ride, error) {
	if _, err := s.Account(ctx, account); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT tap_id, device_id, at_ns, service_day, route, vehicle, profile, base_fare, claimed_fare, charge, transfer,
			capped, flag, notes, fare_version, rated_version, code_hash, committed_ns
		 FROM taps WHERE account_id = $1 ORDER BY service_day DESC, at_ns DESC, tap_id DESC LIMIT $2`,
		int64(account), listLimit(limit, MaxListLimit))
	if err != nil {
		return nil, fmt.Errorf("ledger: read rides: %w", err)
	}
	defer rows.Close()
	var out []Ride
	for rows.Next() {
		var r Ride
		var at, profile, fv, rv, committed int64
		var notes string
		if err := rows.Scan(&r.TapID, &r.DeviceID, &at, &r.ServiceDay, &r.Route, &r.Vehicle, &profile, &r.BaseFare,
			&r.ClaimedFare, &r.Charge, &r.Transfer, &r.Capped, &r.Flag, &notes, &fv, &rv, &r.CodeHash, &committed); err != nil {
			return nil, fmt.Errorf("ledger: read rides: %w", err)
		}
		r.Time, r.Profile, r.FareVersion, r.RatedVersion, r.CommittedAt = time.Unix(0, at).UTC(), profileOf(profile), uint64(fv), uint64(rv), fromNS(committed)
		r.Notes = splitNotes(notes)
		out = append(out, r)
	}
	return out, rows.Err()
}

func profileOf(v int64) paycode.Profile {
	if v < 0 || v > math.MaxUint8 {
		return paycode.Profile(math.MaxUint8)
	}
	return paycode.Profile(v)
}

// Quarantine keeps device records that could not be read as taps, so the
// device's queue can move on; idempotent on device, epoch and seq.
func (s *Store) Quarantine(ctx context.Context, recs []QuarantinedRecord) error {
	_, err := s.QuarantineKept(ctx, recs)
	return err
}

// QuarantineKept is Quarantine that also returns how many of each
// device's records this call kept (those quarantined before, a batch sent
// again, are not counted): what the device's aside budget is charged.
func (s *Store) QuarantineKept(ctx context.Context, recs []QuarantinedRecord) (map[string]int, error) {
	for i, r := range recs {
		if err := validDeviceID(r.DeviceID); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
		// Any seq: a damaged device may send one above what a tap id
		// holds, and refusing it would block its queue for good (the
		// batch never acked). It is stored as its 64 bits (a negative
		// BIGINT above 2^63-1).
		if len(r.Record) > MaxRecordSize*4 {
			return nil, invalid("quarantine %d: record of %d bytes out of range", i, len(r.Record))
		}
		if err := checkText("epoch", r.Epoch, maxName, false); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
		if err := checkText("reason", r.Reason, 256, true); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	var kept map[string]int
	err := s.write(ctx, "quarantine", func(t *txn) error {
		kept = map[string]int{}
		for _, r := range recs {
			n, err := t.execCount("quarantine record",
				`INSERT INTO quarantine (device_id, epoch, seq, reason, record, received_ns) VALUES ($1, $2, $3, $4, $5, $6)
				 ON CONFLICT (device_id, epoch, seq) DO NOTHING`,
				r.DeviceID, r.Epoch, int64(r.Seq), r.Reason, r.Record, t.now)
			if err != nil {
				return err
			}
			kept[r.DeviceID] += int(n)
			// A record kept aside for good is no longer waiting to be
			// checked (a held record found not to be a tap at all).
			if _, err := t.exec("release held tap", `DELETE FROM held_taps WHERE device_id = $1 AND epoch = $2 AND seq = $3`,
				r.DeviceID, r.Epoch, int64(r.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		logByDevice(s.log, "ledger: device records quarantined", len(recs), func(i int) string { return recs[i].DeviceID },
			logKeyReason, recs[0].Reason)
	}
	return kept, err
}

// logByDevice writes msg once per device of n records (device(i) names
// record i's), with its count: a flood of records is a line a device.
func logByDevice(log *slog.Logger, msg string, n int, device func(int) string, args ...any) {
	count := map[string]int{}
	var order []string
	for i := range n {
		d := device(i)
		if count[d] == 0 {
			order = append(order, d)
		}
		count[d]++
	}
	for _, d := range order {
		log.Warn(msg, append([]any{logKeyDevice, d, "count", count[d]}, args...)...)
	}
}

// QuarantineCount returns the number of quarantined records.
func (s *Store) QuarantineCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM quarantine`).Scan(&n)
	return n, err
}
