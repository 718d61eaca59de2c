package ledger

// The payment codes of a batch of taps (see CommitTaps): which use of a
// code keeps it, the reuse rule that forgives a quick transfer, and the
// deny entries a reused code makes.

import (
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

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
//
// holders are the current uses of the codes of the batch's new taps when
// read already (markNew on PostgreSQL), or nil: read here.
func (t *txn) claimCodes(work []tapWork, creds map[credKey]issued, holders map[string]*holder) (*codeWrites, error) {
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
	if holders == nil {
		var err error
		if holders, err = t.readHolders(keys); err != nil {
			return nil, err
		}
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
// keeps the code, within ReuseWindow of it (one code shown on two buses of
// a quick transfer), and at most MaxForgivenReuses forgiven on the
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
	// A code an online payment keeps (keeper.tapID "") is never forgiven
	// on a bus: forgiven, the ride is free with no fare paid (in the
	// two-bus case the keeper paid one), so a purchase of a cent at any
	// shop, or a colluding shop's payment and refund of a cent, made each
	// such ride free (an attack review, 7 December 2026, on the change that
	// forgave it for a day).
	if l.device == keeper.device || keeper.tapID == "" || d > t.s.reuseWindow ||
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

// holderColumns are what readHolders reads of a code use u and its tap t
// (see scanHolder).
const holderColumns = `u.code_key, u.account_id, u.reuses, u.reusers, COALESCE(u.tap_id, ''), COALESCE(u.payment_id, 0),
	COALESCE(t.device_id, ''), COALESCE(t.vehicle, ''), COALESCE(t.at_ns, u.created_ns), COALESCE(t.service_day, ''),
	COALESCE(t.charge, 0), COALESCE(t.postings, 0)`

// holderTapPG joins a code use u to its tap t on PostgreSQL: an index
// lookup whatever plan is cached (see matching).
const holderTapPG = `LEFT JOIN LATERAL (SELECT * FROM taps WHERE taps.tap_id = u.tap_id OFFSET 0) AS t ON TRUE`

// scanHolder scans a row of holderColumns, after the columns before.
func scanHolder(rows *sql.Rows, before ...any) ([]byte, *holder, error) {
	var key []byte
	var h holder
	var account int64
	var reusers string
	if err := rows.Scan(append(before, &key, &account, &h.reuses, &reusers, &h.tapID, &h.paymentID, &h.device, &h.vehicle, &h.at,
		&h.day, &h.charge, &h.postings)...); err != nil {
		return nil, nil, err
	}
	h.account, h.reusers = uint64(account), reusersOf(reusers)
	return key, &h, nil
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
		if t.pg() {
			holderTap = holderTapPG
		}
		rows, err := t.bulkQuery(`SELECT `+holderColumns+` FROM `+from+` `+holderTap+` WHERE `+where, args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: read code uses: %w", err)
		}
		for rows.Next() {
			key, h, err := scanHolder(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: read code uses: %w", err)
			}
			out[string(key)] = h
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
