package ledger

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// redayWindow is how long after a fare table came into force a tap's
// service day may differ between serviceDayAt and the rule of the release
// of 2026-12-04 (schema 22), which put a tap on the day of the table that
// rated it: a claim of the table before is believed for the fare grace,
// and serviceDayAt looks back at the day before the change for three days.
const redayWindow = 72 * time.Hour

// redayStored puts the stored taps near a fare table change on the
// service day serviceDayAt gives them, and re-rates the days they leave
// and join, once a start has migrated the ledger (in the migrations'
// transaction). A release before put such a tap on the day of the table
// that rated it, and those taps keep the day they were given: a rider who
// rode on both sides of an upgrade, in the hours between the old and the
// new start of the day, had one morning on two service days (a transfer
// charged a full fare, two daily caps: 250 + 250 where either release
// alone charged 250 + 0; TestUpgradeKeepsOneServiceDay). A ledger whose
// taps are on their days already is left as it was.
func (t *txn) redayStored() error {
	cat, err := t.loadCatalog()
	if errors.Is(err, ErrNoFareTable) {
		return nil // no tap is rated yet
	}
	if err != nil {
		return err
	}
	// Days differ only where tables differ in their zone or the day's
	// start: with one of each (most ledgers), no tap is read.
	rules := map[[2]string]bool{}
	for _, e := range cat.versions {
		tbl, err := t.table(e.version)
		if err != nil {
			return err
		}
		rules[[2]string{tbl.TimeZone, tbl.ServiceDayStart}] = true
	}
	if len(rules) < 2 {
		return nil
	}
	type moved struct {
		id       string
		account  uint64
		at       int64
		from, to string
	}
	var moves []moved
	seen := map[string]bool{}
	// A claim of the table before was believed for the whole fare grace
	// after a change, which may be longer than serviceDayAt's three days
	// (FareGrace is the operator's; TestUpgradeRedayLongGrace).
	// And a table given back after a restore was believed from its
	// claimable time, which may be long before it came into force
	// (restoreFareTables; TestUpgradeRedayRestoredTable).
	after := max(redayWindow, t.s.fareGrace)
	for _, e := range cat.versions[1:] {
		lo, hi := min(e.since, e.claimable)-int64(t.s.fareGrace), e.since+int64(after)
		rows, err := t.query(`SELECT tap_id, account_id, at_ns, service_day FROM taps
			WHERE account_id >= 0 AND at_ns >= $1 AND at_ns < $2`, lo, hi)
		if err != nil {
			return fmt.Errorf("ledger: read taps near fare table %d: %w", e.version, err)
		}
		for rows.Next() {
			var m moved
			var account int64
			if err := rows.Scan(&m.id, &account, &m.at, &m.from); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: read taps near fare table %d: %w", e.version, err)
			}
			m.account = uint64(account)
			if !seen[m.id] {
				seen[m.id] = true
				moves = append(moves, m)
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: read taps near fare table %d: %w", e.version, err)
		}
	}
	from := map[dayKey]int64{}
	var accounts []uint64
	stale := map[string]bool{}
	n := 0
	for _, m := range moves {
		if m.to, err = serviceDayAt(cat.versions, t.table, m.at); err != nil {
			return err
		}
		if m.to == m.from {
			continue
		}
		n++
		if _, err := t.exec("move tap to its service day", `UPDATE taps SET service_day = $1 WHERE tap_id = $2`, m.to, m.id); err != nil {
			return err
		}
		for _, d := range []string{m.from, m.to} {
			k := dayKey{m.account, d}
			if f, ok := from[k]; !ok || m.at < f {
				from[k] = m.at
			}
			stale[d] = true
		}
		accounts = append(accounts, m.account)
		t.s.log.Debug("ledger: tap moved to the service day of the fare table in force at its time",
			"tap", m.id, "account", m.account, "from", m.from, "to", m.to)
	}
	if n == 0 {
		return nil
	}
	days := slices.Sorted(maps.Keys(stale))
	if err := t.lockAccounts(accounts); err != nil {
		return err
	}
	keys := slices.SortedFunc(maps.Keys(from), func(a, b dayKey) int {
		return cmp.Or(cmp.Compare(a.account, b.account), cmp.Compare(a.day, b.day))
	})
	writes, err := t.rate(keys, from, nil, nil)
	if err != nil {
		return err
	}
	if err := t.writeRating(writes); err != nil {
		return err
	}
	if err := t.markStaleDays(days); err != nil {
		return err
	}
	// One line at Info, however many taps moved (a line a tap was a
	// million lines on a big ledger; each tap's is at Debug;
	// TestUpgradeRedayLogsOnce).
	slices.Sort(accounts)
	t.s.log.Info("ledger: taps moved to the service day of the fare table in force at their time, their days re-rated",
		"taps", n, "accounts", len(slices.Compact(slices.Clone(accounts))), "days", len(days),
		"first_day", days[0], "last_day", days[len(days)-1])
	return nil
}
