package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
)

// maxFindings bounds the findings CheckInvariants reports.
const maxFindings = 50

// CheckInvariants recomputes what the ledger caches and checks every rule
// the money logic keeps, in one read snapshot. It returns nil, or the
// findings joined (each wrapping ErrInvariant). It reads the whole ledger:
// run it in tests, after a restore, or in a maintenance window.
//
// The invariants:
//
//  1. Each account's cached balance is the sum of its postings, and its
//     postings are numbered 1..n without gaps.
//  2. Each posting has the shape of its kind: topup > 0 with a reference;
//     payment ≠ 0 with a payment (< 0 the payment, > 0 a refund of it);
//     fare < 0 and fare_correction ≠ 0 with a tap; nothing else set.
//  3. No tap is charged twice: a tap has at most one fare posting, it is the
//     tap's first, and all of its postings are on the tap's account; its
//     cached posting count is right.
//  4. Each tap's postings sum to minus its current charge; 0 ≤ charge ≤ the
//     server's base fare; a flagged tap has charge 0 (a tap flagged after it
//     was charged was refunded; a voided tap, VoidTap, among them) and no
//     rating.
//  5. Re-rating every account's service day, each tap with the fare table
//     that rates it, gives each tap's current charge; each unflagged tap's
//     table is stored and its service day is that table's.
//  6. A payment code paid once, and the earliest tap kept it (an online
//     payment keeps its code, whenever the taps of it were made): every
//     charged or currency-flagged tap and every payment has its code_uses
//     row; a duplicate_code tap's code has a use by something else, a
//     payment or a tap that is not later than it; every code use points at
//     a tap or payment with that code and counts its duplicate uses; a
//     charged tap's credential is one the ledger issued (account, serial
//     and rider key).
//  7. Each payment has exactly one negative posting, of minus its amount, on
//     its account, and one positive posting for each of its refunds, of the
//     refund's amount, each named by its refund; its refunds come to at
//     most its amount, and each refund is of the payment's merchant and
//     account; each top-up has
//     exactly one posting, of its amount.
//  8. Money is conserved: the sum of all balances is top-ups minus payments
//     plus refunds minus tap charges.
//  9. The deny list holds negative_balance for exactly the accounts whose
//     balance is below their credit line, and the account row says so.
//  10. The kept figures (ledger_stats) equal their counts. Counters are
//     ahead of the ids they handed out (and the fare_version
//     counter is the latest stored table's version); tap ids are
//     "device/epoch/seq"; credential serials do not exceed the account's last.
func (s *Store) CheckInvariants(ctx context.Context) error {
	return s.CheckInvariantsProgress(ctx, nil)
}

// InvariantSteps is how many steps CheckInvariantsProgress reports.
var InvariantSteps = len(invariantQueries) + 1

// CheckInvariantsProgress is CheckInvariants calling progress (if not nil)
// as each of its InvariantSteps steps (one query each over the whole
// ledger: a long wait on a large one) begins, numbered from 1, with what
// it checks.
func (s *Store) CheckInvariantsProgress(ctx context.Context, progress func(step int, what string)) error {
	if progress == nil {
		progress = func(int, string) {}
	}
	var findings []error
	add := func(format string, a ...any) {
		if len(findings) < maxFindings {
			findings = append(findings, fmt.Errorf("%w: "+format, append([]any{ErrInvariant}, a...)...))
		}
	}
	err := s.read(ctx, func(tx *sql.Tx) error {
		// check runs a query whose every row is a violation, described by msg
		// with the row's columns (all scanned as strings).
		check := func(msg, query string) error {
			rows, err := tx.QueryContext(ctx, query)
			if err != nil {
				return fmt.Errorf("ledger: check %q: %w", msg, err)
			}
			defer rows.Close()
			cols, err := rows.Columns()
			if err != nil {
				return err
			}
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					return fmt.Errorf("ledger: check %q: %w", msg, err)
				}
				for i, v := range vals {
					if b, ok := v.([]byte); ok {
						vals[i] = fmt.Sprintf("%x", b)
					}
				}
				add("%s: %v", msg, vals)
			}
			return rows.Err()
		}
		for i, c := range invariantQueries {
			what, _, _ := strings.Cut(c.msg, " [")
			progress(i+1, what)
			if err := check(c.msg, c.query); err != nil {
				return err
			}
		}
		progress(len(invariantQueries)+1, "a tap charged other than its service day re-rated gives")
		return s.checkRating(ctx, tx, add)
	})
	if err != nil {
		return err
	}
	return errors.Join(findings...)
}

// invariantQueries each select the rows that break one rule.
var invariantQueries = []struct{ msg, query string }{
	{"account balance or posting count differs from its postings [account, balance, postings, sum, count, max seq]", `
		SELECT a.id, a.balance, a.postings, CAST(COALESCE(SUM(p.amount), 0) AS BIGINT), COUNT(p.seq), COALESCE(MAX(p.seq), 0)
		FROM accounts a LEFT JOIN postings p ON p.account_id = a.id
		GROUP BY a.id, a.balance, a.postings
		HAVING a.balance <> CAST(COALESCE(SUM(p.amount), 0) AS BIGINT) OR a.postings <> COUNT(p.seq)
			OR a.postings <> COALESCE(MAX(p.seq), 0)`},
	{"posting of the wrong shape [account, seq, kind, amount]", `
		SELECT account_id, seq, kind, amount FROM postings WHERE NOT (
			(kind = 'topup' AND amount > 0 AND topup_ref IS NOT NULL AND tap_id IS NULL AND payment_id IS NULL) OR
			(kind = 'payment' AND amount <> 0 AND payment_id IS NOT NULL AND tap_id IS NULL AND topup_ref IS NULL) OR
			(kind = 'fare' AND amount < 0 AND tap_id IS NOT NULL AND payment_id IS NULL AND topup_ref IS NULL) OR
			(kind = 'fare_correction' AND amount <> 0 AND tap_id IS NOT NULL AND payment_id IS NULL AND topup_ref IS NULL))`},
	{"tap's postings do not match its charge, or it is charged twice [tap, flag, charge, base fare, postings, sum, fare postings, on other accounts]", `
		SELECT t.tap_id, t.flag, t.charge, t.base_fare, COALESCE(p.n, 0), COALESCE(p.total, 0), COALESCE(p.fares, 0),
			CASE WHEN p.n IS NULL OR (p.lo = t.account_id AND p.hi = t.account_id) THEN 0 ELSE 1 END
		FROM taps t LEFT JOIN (
			SELECT tap_id, COUNT(*) AS n, CAST(SUM(amount) AS BIGINT) AS total,
				SUM(CASE WHEN kind = 'fare' THEN 1 ELSE 0 END) AS fares, MIN(account_id) AS lo, MAX(account_id) AS hi
			FROM postings WHERE tap_id IS NOT NULL GROUP BY tap_id) p ON p.tap_id = t.tap_id
		WHERE t.charge <> -COALESCE(p.total, 0)
			OR t.charge < 0 OR t.charge > t.base_fare
			OR (t.flag <> '' AND t.charge <> 0)
			OR t.postings <> COALESCE(p.n, 0)
			OR COALESCE(p.fares, 0) > 1
			OR (COALESCE(p.n, 0) > 0 AND p.fares <> 1)
			OR (p.n IS NOT NULL AND (p.lo <> t.account_id OR p.hi <> t.account_id))`},
	{"posting or code use of a tap that is not stored [tap]", `
		SELECT p.tap_id FROM postings p WHERE p.tap_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM taps t WHERE t.tap_id = p.tap_id)
		UNION ALL
		SELECT u.tap_id FROM code_uses u WHERE u.tap_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM taps t WHERE t.tap_id = u.tap_id)`},
	{"fare correction before the tap's fare posting [account, seq, tap]", `
		SELECT c.account_id, c.seq, c.tap_id FROM postings c
		WHERE c.kind = 'fare_correction' AND NOT EXISTS (
			SELECT 1 FROM postings f WHERE f.tap_id = c.tap_id AND f.kind = 'fare' AND f.seq < c.seq AND f.account_id = c.account_id)`},
	{"flagged tap with an unknown flag, or rated though flagged [tap, flag, rated version]", `
		SELECT tap_id, flag, rated_version FROM taps
		WHERE flag NOT IN ('', 'duplicate_code', 'unknown_account', 'unknown_credential', 'currency_mismatch', 'invalid_code', 'voided')
			OR (flag <> '' AND (rated_version <> 0 OR transfer OR capped))`},
	{"unflagged tap rated by no stored fare table [tap, rated version]", `
		SELECT t.tap_id, t.rated_version FROM taps t WHERE t.flag = '' AND NOT EXISTS (
			SELECT 1 FROM fare_tables f WHERE f.version = t.rated_version)`},
	{"tap that paid has no code use [tap]", `
		SELECT t.tap_id FROM taps t WHERE t.flag IN ('', 'currency_mismatch') AND NOT EXISTS (
			SELECT 1 FROM code_uses u WHERE u.code_key = t.code_key AND u.tap_id = t.tap_id)`},
	{"duplicate_code tap whose code has no other use [tap]", `
		SELECT t.tap_id FROM taps t WHERE t.flag = 'duplicate_code' AND NOT EXISTS (
			SELECT 1 FROM code_uses u WHERE u.code_key = t.code_key AND (u.tap_id IS NULL OR u.tap_id <> t.tap_id))`},
	{"code kept by a later tap than one of its duplicates [code key, holder, earlier duplicate]", `
		SELECT u.code_key, h.tap_id, o.tap_id FROM taps o
		JOIN code_uses u ON u.code_key = o.code_key
		JOIN taps h ON h.tap_id = u.tap_id
		WHERE o.flag = 'duplicate_code' AND (o.at_ns < h.at_ns OR (o.at_ns = h.at_ns AND o.tap_id < h.tap_id))`},
	{"code use's reuse count differs from its duplicate taps [code key, reuses, duplicates]", `
		SELECT u.code_key, u.reuses, COALESCE(d.n, 0) FROM code_uses u
		LEFT JOIN (SELECT code_key, COUNT(*) AS n FROM taps WHERE flag = 'duplicate_code'
			AND COALESCE(notes, '') NOT LIKE '%same_device_reuse%' GROUP BY code_key) d
			ON d.code_key = u.code_key
		WHERE u.reuses <> COALESCE(d.n, 0)`},
	{"tap charged on a credential the ledger did not issue [tap]", `
		SELECT t.tap_id FROM taps t WHERE t.flag IN ('', 'currency_mismatch', 'duplicate_code') AND t.rider_key IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.account_id = t.account_id AND c.serial = t.serial
				AND c.rider_public_key = t.rider_key)`},
	{"code use that points at no tap or payment with its code [code key]", `
		SELECT u.code_key FROM code_uses u
		LEFT JOIN taps t ON t.tap_id = u.tap_id
		LEFT JOIN payments y ON y.id = u.payment_id
		WHERE NOT ((t.tap_id IS NOT NULL AND t.code_key = u.code_key AND t.account_id = u.account_id)
			OR (y.id IS NOT NULL AND y.code_key = u.code_key AND y.account_id = u.account_id))`},
	{"payment without its code use [payment]", `
		SELECT y.id FROM payments y WHERE NOT EXISTS (SELECT 1 FROM code_uses u WHERE u.payment_id = y.id)`},
	{"payment's postings do not match it and its refunds [payment, amount, payments, paid, refund postings, refunded, refunds, refunds' sum]", `
		SELECT y.id, y.amount, COALESCE(p.n, 0), COALESCE(p.paid, 0), COALESCE(p.rn, 0), COALESCE(p.back, 0),
			COALESCE(r.n, 0), COALESCE(r.s, 0)
		FROM payments y
		LEFT JOIN (SELECT payment_id, account_id,
				SUM(CASE WHEN amount < 0 THEN 1 ELSE 0 END) AS n,
				CAST(SUM(CASE WHEN amount < 0 THEN amount ELSE 0 END) AS BIGINT) AS paid,
				SUM(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS rn,
				CAST(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS BIGINT) AS back
			FROM postings WHERE kind = 'payment' GROUP BY payment_id, account_id) p
			ON p.payment_id = y.id AND p.account_id = y.account_id
		LEFT JOIN (SELECT payment_id, COUNT(*) AS n, CAST(SUM(amount) AS BIGINT) AS s FROM refunds GROUP BY payment_id) r
			ON r.payment_id = y.id
		WHERE COALESCE(p.n, 0) <> 1 OR COALESCE(p.paid, 0) <> -y.amount OR COALESCE(p.rn, 0) <> COALESCE(r.n, 0)
			OR COALESCE(p.back, 0) <> COALESCE(r.s, 0) OR COALESCE(r.s, 0) > y.amount`},
	{"money given back on a payment without its refund [account, seq]", `
		SELECT p.account_id, p.seq FROM postings p WHERE p.kind = 'payment' AND p.amount > 0 AND NOT EXISTS (
			SELECT 1 FROM refunds r WHERE r.account_id = p.account_id AND r.posting_seq = p.seq)`},
	{"refund without its posting, or not of its payment's merchant and account [merchant, refund]", `
		SELECT r.merchant_id, r.refund_id FROM refunds r
		JOIN payments y ON y.id = r.payment_id
		LEFT JOIN postings p ON p.account_id = r.account_id AND p.seq = r.posting_seq
		WHERE p.seq IS NULL OR p.kind <> 'payment' OR p.payment_id IS NULL OR p.payment_id <> r.payment_id
			OR p.amount <> r.amount OR y.account_id <> r.account_id OR y.merchant_id <> r.merchant_id`},
	{"top-up's postings do not match it [reference, amount, postings, sum]", `
		SELECT u.reference, u.amount, COUNT(p.seq), CAST(COALESCE(SUM(p.amount), 0) AS BIGINT)
		FROM topups u LEFT JOIN postings p ON p.topup_ref = u.reference AND p.account_id = u.account_id AND p.kind = 'topup'
		GROUP BY u.reference, u.amount
		HAVING COUNT(p.seq) <> 1 OR CAST(COALESCE(SUM(p.amount), 0) AS BIGINT) <> u.amount`},
	{"posting on another account than its payment or top-up [account, seq]", `
		SELECT p.account_id, p.seq FROM postings p
		LEFT JOIN payments y ON y.id = p.payment_id
		LEFT JOIN topups u ON u.reference = p.topup_ref
		WHERE (p.payment_id IS NOT NULL AND y.account_id <> p.account_id)
			OR (p.topup_ref IS NOT NULL AND u.account_id <> p.account_id)`},
	{"money not conserved [balances, top-ups, payments, refunds, charges]", `
		SELECT b.s, u.s, y.s, r.s, c.s FROM
			(SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) AS s FROM accounts) b,
			(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS s FROM topups) u,
			(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS s FROM payments) y,
			(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS s FROM refunds) r,
			(SELECT CAST(COALESCE(SUM(charge), 0) AS BIGINT) AS s FROM taps) c
		WHERE b.s <> u.s - y.s + r.s - c.s`},
	{"balance below the credit line without its deny entry [account, balance, credit line]", `
		SELECT a.id, a.balance, a.credit_line FROM accounts a WHERE a.balance < -a.credit_line AND NOT EXISTS (
			SELECT 1 FROM deny_entries d WHERE d.account_id = a.id AND d.serial = 0 AND d.reason = 'negative_balance')`},
	{"negative_balance deny entry on a balance within the credit line [account, balance, credit line]", `
		SELECT a.id, a.balance, a.credit_line FROM accounts a JOIN deny_entries d
			ON d.account_id = a.id AND d.serial = 0 AND d.reason = 'negative_balance'
		WHERE a.balance >= -a.credit_line`},
	{"account's neg_denied differs from its deny entry [account, neg_denied]", `
		SELECT a.id, a.neg_denied FROM accounts a WHERE a.neg_denied <> EXISTS (
			SELECT 1 FROM deny_entries d WHERE d.account_id = a.id AND d.serial = 0 AND d.reason = 'negative_balance')`},
	{"negative_balance deny entry on a credential [account, serial]", `
		SELECT account_id, serial FROM deny_entries WHERE reason = 'negative_balance' AND serial <> 0`},
	{"counter behind the ids it handed out [counter, value]", `
		SELECT c.name, c.value FROM counters c WHERE
			(c.name = 'account_id' AND c.value < (SELECT COALESCE(MAX(id), 999) FROM accounts)) OR
			(c.name = 'payment_id' AND c.value < (SELECT COALESCE(MAX(id), 0) FROM payments)) OR
			(c.name = 'deny_version' AND c.value < 1 AND EXISTS (SELECT 1 FROM deny_entries)) OR
			(c.name = 'fare_version' AND c.value <> (SELECT COALESCE(MAX(version), 0) FROM fare_tables))`},
	{"account id below 1000 [account]", `SELECT id FROM accounts WHERE id < 1000`},
	{"kept figure differs from the count [figure, kept, counted]", `
		SELECT c.name, COALESCE(k.v, 0), c.v FROM (
			SELECT 'accounts' AS name, COUNT(*) AS v FROM accounts UNION ALL
			SELECT 'balance', CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM accounts UNION ALL
			SELECT 'taps', COUNT(*) FROM taps UNION ALL
			SELECT 'flagged_taps', COUNT(*) FROM taps WHERE flag <> '' UNION ALL
			SELECT 'postings', COUNT(*) FROM postings UNION ALL
			SELECT 'payments', COUNT(*) FROM payments UNION ALL
			SELECT 'refunds', COUNT(*) FROM refunds UNION ALL
			SELECT 'devices', COUNT(*) FROM devices) c
		LEFT JOIN (SELECT name, CAST(SUM(value) AS BIGINT) AS v FROM ledger_stats GROUP BY name) k ON k.name = c.name
		WHERE COALESCE(k.v, 0) <> c.v`},
	{"tap id is not device/epoch/seq [tap]", `
		SELECT tap_id FROM taps WHERE tap_id <> device_id || '/' || epoch || '/' || CAST(seq AS TEXT)
			AND (rider_key IS NOT NULL OR tap_id <> device_id || '/' || CAST(seq AS TEXT))`},
	{"credential serial beyond the account's last [account, serial, last]", `
		SELECT c.account_id, c.serial, a.last_serial FROM credentials c JOIN accounts a ON a.id = c.account_id
		WHERE c.serial > a.last_serial OR c.serial < 1`},
	{"account in another currency than the ledger's [account, currency, ledger's]", `
		SELECT a.id, a.currency, s.value FROM accounts a JOIN ledger_settings s ON s.name = 'currency'
		WHERE a.currency <> s.value`},
	// A restore moves every account's last serial past its credentials
	// (Restored): until the account's next credential, made after the
	// restore, its last serial has none. Accounts made since, and ones
	// with a credential since, are held to the rule again.
	{"account's last serial without its credential [account, last]", `
		SELECT a.id, a.last_serial FROM accounts a WHERE a.last_serial > 0 AND NOT EXISTS (
			SELECT 1 FROM credentials c WHERE c.account_id = a.id AND c.serial = a.last_serial)
			AND NOT EXISTS (SELECT 1 FROM ledger_settings r WHERE r.name = 'restored_at_ns'
				AND a.created_ns <= CAST(r.value AS BIGINT) AND NOT EXISTS (
					SELECT 1 FROM credentials c WHERE c.account_id = a.id AND c.issued_ns > CAST(r.value AS BIGINT)))`},
}

// checkRating re-rates every account's service day (invariant 5).
func (s *Store) checkRating(ctx context.Context, tx *sql.Tx, add func(string, ...any)) error {
	// Load the fare tables first: a connection runs one query at a time.
	rows, err := tx.QueryContext(ctx, `SELECT version, body, created_ns FROM fare_tables ORDER BY version`)
	if err != nil {
		return fmt.Errorf("ledger: check rating: %w", err)
	}
	tables := map[int64]*fareEntry{}
	var catalog []catalogEntry // when each came into force, for the taps' service days
	for rows.Next() {
		var v, since int64
		var body string
		if err := rows.Scan(&v, &body, &since); err != nil {
			rows.Close()
			return fmt.Errorf("ledger: check rating: %w", err)
		}
		catalog = append(catalog, catalogEntry{version: uint64(v), since: since})
		e, err := s.cacheTable(uint64(v), body)
		if err != nil {
			add("stored fare table %d does not parse: %v", v, err)
			continue
		}
		tables[v] = e
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: check rating: %w", err)
	}
	inOrder(catalog) // as the rating reads them (readCatalog)

	rows, err = tx.QueryContext(ctx, `SELECT account_id, service_day, tap_id, at_ns, profile, base_fare, charge,
			transfer, capped, rated_version, route
		FROM taps WHERE flag = '' ORDER BY account_id, service_day`)
	if err != nil {
		return fmt.Errorf("ledger: check rating: %w", err)
	}
	defer rows.Close()
	var cur dayKey
	var day []rated
	flush := func() {
		if len(day) == 0 {
			return
		}
		rides := make([]fare.Ride, 0, len(day))
		byID := make(map[string]*rated, len(day))
		var rules *fare.Table
		for i := range day {
			r := &day[i]
			e := tables[r.version]
			if e == nil {
				return // reported by the query for unrated taps
			}
			// The day of the table in force at the tap's time (a tap
			// committed before that rule: its own table's).
			if got := e.table.ServiceDay(time.Unix(0, r.at)); got != cur.day {
				inForce := tables[int64(inForce(catalog, r.at))]
				day, err := serviceDayAt(catalog, func(v uint64) (*fare.Table, error) {
					if e := tables[int64(v)]; e != nil {
						return e.table, nil
					}
					return nil, fmt.Errorf("fare table %d does not parse", v)
				}, r.at)
				if inForce == nil || (inForce.table.ServiceDay(time.Unix(0, r.at)) != cur.day && (err != nil || day != cur.day)) {
					// The usual cause: the server that rated it read the
					// zone's rules from another version of the time zone
					// database than this host's (README, Fare tables).
					add("tap %s is on service day %s, its fare table %d puts it on %s by this host's rules of %s "+
						"(a server with another version of the time zone database, tzdata, rated it?)",
						r.id, cur.day, r.version, got, e.table.TimeZone)
				}
			}
			rules = e.table
			rides = append(rides, fare.Ride{ID: r.id, Time: time.Unix(0, r.at), Profile: profileOf(r.profile), Fare: r.base, Rules: e.table})
			byID[r.id] = r
		}
		for _, c := range rules.RateDay(rides) {
			if r := byID[c.ID]; r.charge != c.Amount || r.transfer != c.Transfer || r.capped != c.Capped {
				add("tap %s charged %d (transfer %t, capped %t), re-rating gives %d (%t, %t)",
					r.id, r.charge, r.transfer, r.capped, c.Amount, c.Transfer, c.Capped)
			}
		}
	}
	for rows.Next() {
		var k dayKey
		var account int64
		var r rated
		var route string
		if err := rows.Scan(&account, &k.day, &r.id, &r.at, &r.profile, &r.base, &r.charge, &r.transfer, &r.capped,
			&r.version, &route); err != nil {
			return fmt.Errorf("ledger: check rating: %w", err)
		}
		// The base fare is the server's: its fare table's for the tap's
		// route and profile, never one a row says.
		if e := tables[r.version]; e != nil {
			if f, err := e.table.Fare(route, profileOf(r.profile)); err != nil || f != r.base {
				add("tap %s has base fare %d; its fare table %d gives route %q, profile %s %d (%v)",
					r.id, r.base, r.version, route, profileOf(r.profile), f, err)
			}
		}
		k.account = uint64(account)
		if k != cur {
			flush()
			cur, day = k, day[:0]
		}
		day = append(day, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: check rating: %w", err)
	}
	flush()
	return nil
}
