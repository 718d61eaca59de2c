package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

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
	creds, held, err := t.lockWithCredentials(taps, skipBusy)
	if err != nil {
		return nil, nil, err
	}
	// After the lock, which reads the fare_version counter on PostgreSQL
	// on the way (one round trip less).
	cat, err := t.loadCatalog()
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
	holders, err := t.markNew(work)
	if err != nil {
		return nil, err
	}
	for i := range work {
		if w := &work[i]; w.isNew {
			if err := t.decide(w, cat, creds); err != nil {
				return nil, err
			}
		}
	}
	codes, err := t.claimCodes(work, creds, holders)
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
// the others (the first occurrence of each id in the batch) new. On
// PostgreSQL the same statement reads the current uses of the payment
// codes of those taps (readHolders), returned for claimCodes: a round trip
// less, for a few code uses read that claimCodes may not need (those of
// taps stored already or flagged). nil on SQLite, which has no round trips
// to save.
func (t *txn) markNew(work []tapWork) (map[string]*holder, error) {
	var ids []string
	for i := range work {
		if work[i].first {
			ids = append(ids, work[i].tp.ID)
		}
	}
	var stored map[string]bool
	var holders map[string]*holder
	var err error
	if t.pg() {
		stored, holders, err = t.storedWithHolders(work, ids)
	} else {
		stored, err = t.storedTapIDs(ids)
	}
	if err != nil {
		return nil, err
	}
	for i := range work {
		w := &work[i]
		w.isNew = w.first && !stored[w.tp.ID]
	}
	return holders, nil
}

// storedTapIDs returns which of ids the ledger stores already.
func (t *txn) storedTapIDs(ids []string) (map[string]bool, error) {
	stored := map[string]bool{}
	for _, c := range texts(ids).chunks(t.pg()) {
		from, where, args := t.matching(c, "taps", "t", "tap_id")
		rows, err := t.bulkQuery(`SELECT t.tap_id FROM `+from+` WHERE `+where, args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: read stored tap ids: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: read stored tap ids: %w", err)
			}
			stored[id] = true
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("ledger: read stored tap ids: %w", err)
		}
	}
	return stored, nil
}

// storedWithHolders is storedTapIDs on PostgreSQL, with the code uses of
// the keys of the batch's first taps, in one statement.
func (t *txn) storedWithHolders(work []tapWork, ids []string) (map[string]bool, map[string]*holder, error) {
	keys := newBulk(tBytes)
	seen := map[string]bool{}
	for i := range work {
		if k := work[i].tp.CodeKey; work[i].first && !seen[string(k)] {
			seen[string(k)] = true
			keys.add(k)
		}
	}
	tapsFrom, tapsWhere, args := t.matching(texts(ids), "taps", "t", "tap_id")
	usesFrom, usesWhere, usesArgs := matchingAt(true, keys, len(args)+1, "code_uses", "u", "code_key")
	args = append(args, usesArgs...)
	// Kind 0: a stored tap id; kind 1: a code use (holderColumns).
	rows, err := t.bulkQuery(`SELECT 0, t.tap_id, NULL::BYTEA, 0, 0, '', '', 0, '', '', 0, '', 0, 0
			FROM `+tapsFrom+` WHERE `+tapsWhere+`
		UNION ALL
		SELECT 1, '', `+holderColumns+` FROM `+usesFrom+` `+holderTapPG+` WHERE `+usesWhere, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: read stored tap ids and code uses: %w", err)
	}
	defer rows.Close()
	stored := map[string]bool{}
	holders := map[string]*holder{}
	for rows.Next() {
		var kind int64
		var id string
		key, h, err := scanHolder(rows, &kind, &id)
		if err != nil {
			return nil, nil, fmt.Errorf("ledger: read stored tap ids and code uses: %w", err)
		}
		if kind == 0 {
			stored[id] = true
			continue
		}
		holders[string(key)] = h
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ledger: read stored tap ids and code uses: %w", err)
	}
	return stored, holders, nil
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
				c.serial, c.rider_public_key, c.not_after_ns, fv.value
			FROM (` + idSrc + `) AS v (id) CROSS JOIN LATERAL (` + lock + `) AS a
			LEFT JOIN c ON c.account_id = a.id
			CROSS JOIN (` + fareVersionQuery + `) AS fv
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
		dest := []any{&id, &a.currency, &a.balance, &a.postings, &a.creditLine, &a.negDenied, &serial, &riderKey, &notAfter}
		if t.pg() {
			// The fare_version counter, read in the lock's snapshot,
			// as loadCatalog would have read it before the lock.
			dest = append(dest, &t.fareVersion)
			t.fareVersionRead = true
		}
		if err := rows.Scan(dest...); err != nil {
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
