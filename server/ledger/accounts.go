package ledger

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
)

// accountColumns and scanAccount read an Account; the deny reason comes
// from the whole-account deny entries (negative_balance sorts first).
const accountColumns = `a.id, a.profile, a.profile_pending, a.name, a.currency, a.balance, a.credit_line, a.last_serial, a.created_ns,
	(SELECT MIN(d.reason) FROM deny_entries d WHERE d.account_id = a.id AND d.serial = 0 AND d.reason = 'negative_balance'),
	(SELECT MIN(d.reason) FROM deny_entries d WHERE d.account_id = a.id AND d.serial = 0),
	(SELECT l.amount FROM payment_limits l WHERE l.account_id = a.id)`

type rowScanner interface{ Scan(dest ...any) error }

func scanAccount(r rowScanner) (Account, error) {
	var a Account
	var id, profile, serial, created int64
	var neg, any sql.NullString
	var limit sql.NullInt64
	if err := r.Scan(&id, &profile, &a.ProfilePending, &a.Name, &a.Currency, &a.Balance, &a.CreditLine, &serial, &created, &neg,
		&any, &limit); err != nil {
		return a, err
	}
	a.PaymentLimit = limit.Int64
	a.ID, a.Profile, a.LastSerial, a.CreatedAt = uint64(id), paycode.Profile(profile), uint32(serial), fromNS(created)
	switch {
	case neg.Valid:
		a.Denied, a.DenyReason = true, neg.String
	case any.Valid:
		a.Denied, a.DenyReason = true, any.String
	}
	return a, nil
}

func fromNS(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func getAccount(ctx context.Context, q queryer, id uint64) (Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts a WHERE a.id = $1`, int64(id)))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("%w: account %d", ErrNotFound, id)
	}
	if err != nil {
		return a, fmt.Errorf("ledger: read account %d: %w", id, err)
	}
	return a, nil
}

// CreateAccount creates an account with balance 0 and returns it. Account
// ids start at 1000 and are never reused.
func (s *Store) CreateAccount(ctx context.Context, spec AccountSpec) (Account, error) {
	if !spec.Profile.Valid() {
		return Account{}, invalid("rider profile %d is reserved", spec.Profile)
	}
	if err := CheckAccountName(spec.Name); err != nil {
		return Account{}, invalid("%v", err)
	}
	if len(spec.SecretHash) > maxSecret {
		return Account{}, invalid("secret hash is %d bytes, limit %d", len(spec.SecretHash), maxSecret)
	}
	if spec.Currency == "" {
		spec.Currency = s.currency
	}
	if !ValidCurrency(spec.Currency) {
		return Account{}, invalid("currency %q is not an ISO 4217 code", spec.Currency)
	}
	if spec.Currency != s.currency {
		// Its every tap would be flagged currency_mismatch and ride free.
		return Account{}, invalid("an account in %s: the ledger's accounts and fare tables are in %s", spec.Currency, s.currency)
	}
	secret := spec.SecretHash
	if secret == nil {
		secret = []byte{}
	}
	var acct Account
	var forgot int64
	err := s.write(ctx, "create account", func(t *txn) error {
		forgot = 0
		id, err := t.nextID("account_id")
		if err != nil {
			return err
		}
		if _, err := t.exec("create account",
			`INSERT INTO accounts (id, profile, profile_pending, name, secret_hash, currency, created_ns, anonymous)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			id, int64(spec.Profile), profilePending(spec.Profile, spec.ProfileConfirmed), spec.Name, secret, spec.Currency, t.now,
			spec.Anonymous); err != nil {
			return err
		}
		t.stat(statAccounts, 1)
		if spec.Anonymous && s.forgetUnused > 0 {
			if forgot, err = t.forgetUnusedAccounts(t.now - s.forgetUnused.Nanoseconds()); err != nil {
				return err
			}
		}
		acct, err = getAccount(ctx, t.tx, uint64(id))
		return err
	})
	if err != nil {
		return Account{}, err
	}
	// Debug: the API says it at Info, with the profile (each said twice,
	// a line a rider's daily credential among them, doubled the log).
	s.log.Debug("ledger: account created", logKeyAccount, acct.ID)
	if forgot > 0 {
		s.log.Debug("ledger: unused accounts forgotten", "accounts", forgot)
	}
	return acct, nil
}

// unusedAccount is what makes an account made anonymously one that nothing
// was done with (its columns): no posting (top-up, fare, payment, refund),
// no credential, no credit line, never below it, no reduced fare the
// operator or the payment provider confirmed (a rider's eligibility
// checked: TestConfirmedProfileKeepsAccount). The partial index
// accounts_unused holds the anonymous accounts never issued a credential
// (a condition on no column a tap's settlement changes).
const unusedAccount = `anonymous AND postings = 0 AND last_serial = 0 AND credit_line = 0 AND NOT neg_denied
	AND (profile = 0 OR profile_pending)`

// notDenied (its $1 the account) is an account with no deny entry. The
// deletes check it again: a deny committed after forgetUnusedQuery read
// the deny list changes no column of the account, so on PostgreSQL its
// lock comes without a second look at the row, and the entry's foreign
// key refused the delete, failing the sign-up (TestForgetRacesDeny).
const notDenied = `NOT EXISTS (SELECT 1 FROM deny_entries d WHERE d.account_id = $1)`

// forgetUnusedQuery finds the oldest accounts made before $1 that nothing
// was done with, not on the deny list, through accounts_unused
// (TestForgetReadsTheUnusedIndex).
const forgetUnusedQuery = `SELECT id FROM accounts a WHERE ` + unusedAccount + ` AND created_ns < $1
		AND NOT EXISTS (SELECT 1 FROM deny_entries d WHERE d.account_id = a.id)
		ORDER BY created_ns, id LIMIT 2`

// forgetUnusedAccounts deletes at most two accounts (forgetUnusedQuery:
// more than one, so that those of a flood drain while sign-ups go on at
// any lower rate) made
// anonymously before cutoff (unix ns) that nothing was done with, oldest
// first, with the payment limit a rider may have set on one, and returns
// how many. An account on the deny list (the operator's entry) is kept.
// The accounts are locked and checked again, the deny list too
// (PostgreSQL: a top-up, a credential or a deny committed meanwhile keeps
// one); any other row that names an account refers to it by a foreign
// key, which refuses the delete.
func (t *txn) forgetUnusedAccounts(cutoff int64) (int64, error) {
	rows, err := t.query(forgetUnusedQuery+t.s.forUpdate(), cutoff)
	if err != nil {
		return 0, fmt.Errorf("ledger: find unused accounts: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("ledger: find unused accounts: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("ledger: find unused accounts: %w", err)
	}
	var forgot int64
	for _, id := range ids {
		if _, err := t.exec("forget unused account", `DELETE FROM payment_limits WHERE account_id = $1
			AND EXISTS (SELECT 1 FROM accounts WHERE id = $1 AND `+unusedAccount+`) AND `+notDenied, id); err != nil {
			return 0, err
		}
		n, err := t.execCount("forget unused account", `DELETE FROM accounts WHERE id = $1 AND `+unusedAccount+` AND `+notDenied, id)
		if err != nil {
			return 0, err
		}
		forgot += n
	}
	t.stat(statAccounts, -forgot)
	return forgot, nil
}

// profilePending reports whether profile p waits for a check: a reduced
// fare that nobody who may confirm it has.
func profilePending(p paycode.Profile, confirmed bool) bool {
	return p != paycode.Adult && !confirmed
}

// SetProfile sets an account's rider profile. confirmed says that whoever
// sets it checked the rider's eligibility (the operator or the payment
// provider): otherwise a reduced profile is a request, pending, and the
// account's credentials carry the adult profile until it is confirmed
// (Account.CredentialProfile); asking for the profile the account holds,
// confirmed, leaves it confirmed. The credentials issued before keep their
// profile until they expire.
func (s *Store) SetProfile(ctx context.Context, account uint64, p paycode.Profile, confirmed bool) (Account, error) {
	if err := checkAccountID(account); err != nil {
		return Account{}, invalid("%v", err)
	}
	if !p.Valid() {
		return Account{}, invalid("rider profile %d is reserved", p)
	}
	var acct Account
	err := s.write(ctx, "set profile", func(t *txn) error {
		if _, err := t.lockExisting(account); err != nil {
			return err
		}
		// Asking again for the profile one holds, confirmed, changes
		// nothing (both sides of SET read the row as it was).
		if _, err := t.exec("set profile", `UPDATE accounts
			SET profile_pending = CASE WHEN profile = $1 AND NOT profile_pending THEN FALSE ELSE $2 END, profile = $1 WHERE id = $3`,
			int64(p), profilePending(p, confirmed), int64(account)); err != nil {
			return err
		}
		var err error
		acct, err = getAccount(ctx, t.tx, account)
		return err
	})
	if err != nil {
		return Account{}, err
	}
	s.log.Info("ledger: profile set", logKeyAccount, account, "profile", p.String(), "pending", acct.ProfilePending)
	return acct, nil
}

// Account returns an account, or ErrNotFound.
func (s *Store) Account(ctx context.Context, id uint64) (Account, error) {
	if id > math.MaxInt64 {
		return Account{}, fmt.Errorf("%w: account %d", ErrNotFound, id)
	}
	return getAccount(ctx, s.db, id)
}

// Accounts lists accounts with ids above after, in id order, at most limit
// of them (limit <= 0: DefaultListLimit; at most MaxListLimit). Pass the last
// id of a page as after to get the next.
func (s *Store) Accounts(ctx context.Context, after uint64, limit int) ([]Account, error) {
	limit = listLimit(limit, DefaultListLimit)
	if after > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+accountColumns+` FROM accounts a WHERE a.id > $1 ORDER BY a.id LIMIT $2`,
		int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: list accounts: %w", err)
	}
	defer rows.Close()
	var out []Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: list accounts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func listLimit(limit, def int) int {
	if limit <= 0 {
		limit = def
	}
	return min(limit, MaxListLimit)
}

// ReplaceSecret stores a new secret hash for an account: the rider's
// (old is the hash of the secret they signed in with; if it is no longer
// the stored one, another replacement came first: ErrSecretChanged), or
// the operator's reset (old nil). The old secret stops working at once, and
// in the same transaction every credential the account holds that has not
// expired goes on the deny list (ReasonSecretReplaced, one entry each: at
// most MaxLiveCredentials), so the passes on a lost phone stop too, on
// every validator once its deny list is updated. It returns how many
// credentials it denied. The time is kept: a pass a restore lost, issued
// before it, is denied when a tap takes it in (adoptCredential).
func (s *Store) ReplaceSecret(ctx context.Context, account uint64, old, new []byte) (int, error) {
	if err := checkAccountID(account); err != nil {
		return 0, invalid("%v", err)
	}
	if len(new) == 0 || len(new) > maxSecret {
		return 0, invalid("secret hash is %d bytes, want 1 to %d", len(new), maxSecret)
	}
	var revoked int
	err := s.write(ctx, "replace secret", func(t *txn) error {
		revoked = 0
		if _, err := t.lockExisting(account); err != nil {
			return err
		}
		q, args := `UPDATE accounts SET secret_hash = $1, secret_replaced_ns = $2 WHERE id = $3`, []any{new, t.now, int64(account)}
		if old != nil {
			q, args = q+` AND secret_hash = $4`, append(args, old)
		}
		res, err := t.exec("replace secret", q, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("ledger: replace secret: %w", err)
		} else if n != 1 {
			return ErrSecretChanged
		}
		if old != nil {
			if err := riderReplaceRoom(t.queryRow, account, t.now); err != nil {
				return err
			}
		}
		revoked, err = t.denyLiveCredentials(account, ReasonSecretReplaced)
		if err != nil {
			return err
		}
		return t.forgetExpiredSecretReplaced(account)
	})
	if err != nil {
		return 0, err
	}
	s.log.Info("ledger: account secret replaced", logKeyAccount, account, "by_rider", old != nil, "credentials_denied", revoked)
	return revoked, nil
}

// forgetExpiredSecretReplaced removes the account's secret_replaced
// entries that have expired: an hour after their credential's end no
// code of it pays anywhere (validators and shops take a pass's codes for
// at most paycode.MaxPolicySkew after its end, and leave an expired entry
// out), so they stop nothing. Kept, they made the deny list, which every
// instance reads whole at each change of it, grow for good: a rider who
// fetches the 64 credentials an account may hold and replaces the secret
// between them left 64 entries a day (an attack review). Other expired
// entries stay: a reused code's stops new credentials until the operator
// clears it. Validators drop expired entries themselves, so the deny
// list's version does not move for this.
func (t *txn) forgetExpiredSecretReplaced(account uint64) error {
	_, err := t.exec("forget expired deny entries", `DELETE FROM deny_entries
		WHERE account_id = $1 AND reason = $2 AND expires_ns <> 0 AND expires_ns <= $3`,
		int64(account), ReasonSecretReplaced, t.now)
	return err
}

// DenyGrace is how long after a credential's end the ledger still treats
// it as paying: validators' clocks may be behind, and shops and validators
// take its codes for the skew after its end (at most
// paycode.MaxPolicySkew). A credential denied keeps its entry until
// DenyGrace after its end, and the credentials denied together with
// another (a replaced secret, a reused code) are those that ended within
// DenyGrace.
const DenyGrace = time.Hour

// denyLiveCredentials puts each credential of the account that has not
// expired, or expired within the last hour, on the deny list with reason,
// until an hour after it expires (validators' clocks may be behind), in
// one statement, and returns how many entries it added. A pass still pays
// for the clock skew after its end (paycode.Policy: shops and validators
// take its codes until then): one that had just expired was left out, and
// a lost phone's code paid at a shop after the rider had replaced the
// secret (TestReplacedSecretStopsPassInItsSkew).
func (t *txn) denyLiveCredentials(account uint64, reason string) (int, error) {
	n, err := t.execCount("deny credentials", `INSERT INTO deny_entries (account_id, serial, reason, since_ns, expires_ns)
		SELECT account_id, serial, $1, $2, not_after_ns + $3 FROM credentials WHERE account_id = $4 AND not_after_ns > $5
		ON CONFLICT (account_id, serial, reason) DO NOTHING`, reason, t.now, int64(DenyGrace), int64(account), t.now-int64(DenyGrace))
	if n > 0 {
		t.denyChanged = true
	}
	return int(n), err
}

// AccountSecretHash returns the secret hash stored with an account.
func (s *Store) AccountSecretHash(ctx context.Context, id uint64) ([]byte, error) {
	if id > math.MaxInt64 {
		return nil, fmt.Errorf("%w: account %d", ErrNotFound, id)
	}
	var h []byte
	err := s.db.QueryRowContext(ctx, `SELECT secret_hash FROM accounts WHERE id = $1`, int64(id)).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: account %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: read account %d: %w", id, err)
	}
	return h, nil
}

// TopUp adds amount (> 0, minor units) to an account and returns the
// account after it. It is idempotent on reference (1-128 bytes, for example
// the payment provider's transaction id): the same top-up again changes
// nothing and returns the account as it is; the reference with another
// account or amount is ErrTopUpConflict. A top-up that brings the balance
// back to zero or more lifts the account's negative_balance deny entry.
func (s *Store) TopUp(ctx context.Context, account uint64, amount int64, reference string) (Account, error) {
	a, _, err := s.TopUpOnce(ctx, account, amount, reference, "")
	return a, err
}

// TopUpOnce is TopUp that also says whether this call added the money
// (false: the reference's top-up was done before, a retry replayed).
// tokenID is the API token that asks: one revoked meanwhile is refused
// (ErrTokenRevoked, nothing written), as for Pay (see tokenInForce).
func (s *Store) TopUpOnce(ctx context.Context, account uint64, amount int64, reference, tokenID string) (Account, bool, error) {
	return s.topUp(ctx, account, amount, reference, tokenID, "", "")
}

// MaxTopUpReason bounds the reason given with TopUpAs.
const MaxTopUpReason = MaxVoidReason

// TopUpAs is TopUpOnce for a caller with no API token (the command line,
// actor "cli:USER@HOST"): the audit entry (action "topup", the account as
// target, the amount, reference and reason) is written in the top-up's
// own transaction, so money added is never without its entry. A replay
// (the reference's top-up done before: nothing added) is audited too,
// "replayed: nothing added", as the API audits one. reason is required
// (at most MaxTopUpReason bytes of text), as actor.
func (s *Store) TopUpAs(ctx context.Context, account uint64, amount int64, reference, actor, reason string) (Account, bool, error) {
	if err := checkText("actor", actor, maxLongName, true); err != nil {
		return Account{}, false, invalid("top-up: %v", err)
	}
	if err := checkText("reason", reason, MaxTopUpReason, true); err != nil {
		return Account{}, false, invalid("top-up: %v", err)
	}
	return s.topUp(ctx, account, amount, reference, "", actor, reason)
}

// topUp is TopUpOnce, audited in its transaction when actor is set
// (TopUpAs).
func (s *Store) topUp(ctx context.Context, account uint64, amount int64, reference, tokenID, actor, reason string) (Account, bool, error) {
	if err := checkAccountID(account); err != nil {
		return Account{}, false, invalid("%v", err)
	}
	if err := checkAmount("top-up amount", amount); err != nil {
		return Account{}, false, invalid("%v", err)
	}
	if err := checkText("top-up reference", reference, maxLongName, true); err != nil {
		return Account{}, false, invalid("%v", err)
	}
	var acct Account
	added := false
	err := s.write(ctx, "top up", func(t *txn) error {
		added = false
		if err := t.tokenInForce(tokenID, false); err != nil {
			return err
		}
		a, err := t.lockExisting(account)
		if err != nil {
			return err
		}
		var prevAccount, prevAmount int64
		err = t.queryRow(`SELECT account_id, amount FROM topups WHERE reference = $1`, reference).
			Scan(&prevAccount, &prevAmount)
		switch {
		case err == nil && uint64(prevAccount) == account && prevAmount == amount:
			// Already done.
		case err == nil:
			return fmt.Errorf("%w: reference %q", ErrTopUpConflict, reference)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("ledger: read top-up: %w", err)
		default:
			n, err := t.execCount("record top-up",
				`INSERT INTO topups (reference, account_id, amount, created_ns) VALUES ($1, $2, $3, $4)
				 ON CONFLICT (reference) DO NOTHING`,
				reference, int64(account), amount, t.now)
			if err != nil {
				return err
			}
			if n == 0 {
				// A concurrent top-up of another account took the
				// reference: run again to answer as for a retry.
				return errRetry
			}
			if err := t.s.hook("topup"); err != nil {
				return err
			}
			if err := t.appendPosting(a, KindTopUp, amount, postingRef{topupRef: reference}); err != nil {
				return err
			}
			if err := t.tokenInForce(tokenID, true); err != nil { // last: see tokenInForce
				return err
			}
			added = true
		}
		if actor != "" {
			detail := fmt.Sprintf("amount %d reference %q reason %q", amount, reference, reason)
			if !added {
				detail += " replayed: nothing added"
			}
			if err := t.audit(actor, "topup", strconv.FormatUint(account, 10), detail); err != nil {
				return err
			}
		}
		if err := t.finish(); err != nil {
			return err
		}
		acct, err = getAccount(ctx, t.tx, account)
		return err
	})
	if err != nil {
		return Account{}, false, err
	}
	if added {
		s.log.Debug("ledger: topped up", logKeyAccount, account, logKeyAmount, amount, logKeyBalance, acct.Balance)
	}
	return acct, added, nil
}

// SetCreditLine sets how far below zero an account's balance may go before
// the account is denied (0 ≤ amount ≤ MaxAmount; 0 for prepaid riders) and
// returns the account after it. The negative_balance deny entry follows at
// once: raising the line may lift it, lowering it may set it. tokenID is
// the API token that asks: one revoked meanwhile is refused
// (ErrTokenRevoked), as for Pay (see tokenInForce).
func (s *Store) SetCreditLine(ctx context.Context, account uint64, amount int64, tokenID string) (Account, error) {
	if err := checkAccountID(account); err != nil {
		return Account{}, invalid("%v", err)
	}
	if amount < 0 || amount > MaxAmount {
		return Account{}, invalid("credit line %d must be between 0 and %d", amount, int64(MaxAmount))
	}
	var acct Account
	err := s.write(ctx, "set credit line", func(t *txn) error {
		if err := t.tokenInForce(tokenID, false); err != nil {
			return err
		}
		a, err := t.lockExisting(account)
		if err != nil {
			return err
		}
		if _, err := t.exec("set credit line", `UPDATE accounts SET credit_line = $1 WHERE id = $2`, amount, int64(account)); err != nil {
			return err
		}
		a.creditLine, a.dirty = amount, true
		if err := t.tokenInForce(tokenID, true); err != nil { // last: see tokenInForce
			return err
		}
		if err := t.finish(); err != nil {
			return err
		}
		acct, err = getAccount(ctx, t.tx, account)
		return err
	})
	if err != nil {
		return Account{}, err
	}
	s.log.Info("ledger: credit line set", "account", account, "credit_line", amount)
	return acct, nil
}

// SetPaymentLimit sets the most one online payment by code may take from
// an account (0 < amount ≤ MaxAmount, minor units), or removes the limit
// (amount 0), and returns the account after it. A shop's scanner names the
// amount it takes for a code it was shown; the limit is the rider's bound
// on it (Pay refuses more with ErrOverLimit, writing nothing). Fares are
// not bounded by it: the ledger rates them itself.
func (s *Store) SetPaymentLimit(ctx context.Context, account uint64, amount int64) (Account, error) {
	if err := checkAccountID(account); err != nil {
		return Account{}, invalid("%v", err)
	}
	if amount < 0 || amount > MaxAmount {
		return Account{}, invalid("payment limit %d must be between 0 (none) and %d", amount, int64(MaxAmount))
	}
	var acct Account
	err := s.write(ctx, "set payment limit", func(t *txn) error {
		if _, err := t.lockExisting(account); err != nil {
			return err
		}
		var err error
		if amount == 0 {
			_, err = t.exec("remove payment limit", `DELETE FROM payment_limits WHERE account_id = $1`, int64(account))
		} else {
			_, err = t.exec("set payment limit", `INSERT INTO payment_limits (account_id, amount, set_ns) VALUES ($1, $2, $3)
				ON CONFLICT (account_id) DO UPDATE SET amount = excluded.amount, set_ns = excluded.set_ns`, int64(account), amount, t.now)
		}
		if err != nil {
			return err
		}
		acct, err = getAccount(ctx, t.tx, account)
		return err
	})
	if err != nil {
		return Account{}, err
	}
	s.log.Info("ledger: payment limit set", logKeyAccount, account, "payment_limit", amount)
	return acct, nil
}

// Postings returns an account's postings, newest first, at most limit of
// them (limit <= 0: all, up to MaxListLimit): the account's statement, each
// with the balance after it and, for a payment or a refund of one, the
// merchant and order (and refund id). One read snapshot.
func (s *Store) Postings(ctx context.Context, account uint64, limit int) ([]Posting, error) {
	return s.PostingsBefore(ctx, account, 0, limit)
}

// PostingsBefore is Postings from the posting before seq before on (0:
// from the newest): pass the last seq of a page to read the next one. The
// balances are the ones after each posting, as on the first page.
func (s *Store) PostingsBefore(ctx context.Context, account, before uint64, limit int) ([]Posting, error) {
	if account > math.MaxInt64 {
		return nil, fmt.Errorf("%w: account %d", ErrNotFound, account)
	}
	if before == 0 || before > math.MaxInt64 {
		before = math.MaxInt64
	}
	var out []Posting
	err := s.read(ctx, func(tx *sql.Tx) error {
		var bal int64
		// The balance after the posting before seq before: today's less
		// what the newer postings moved.
		err := tx.QueryRowContext(ctx, `SELECT a.balance - CAST(COALESCE((SELECT SUM(p.amount) FROM postings p
			WHERE p.account_id = a.id AND p.seq >= $2), 0) AS BIGINT) FROM accounts a WHERE a.id = $1`, int64(account), int64(before)).Scan(&bal)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: account %d", ErrNotFound, account)
		}
		if err != nil {
			return fmt.Errorf("ledger: read account: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT p.seq, p.kind, p.amount, p.tap_id, p.payment_id, p.topup_ref, p.fare_version,
				p.created_ns, COALESCE(y.merchant_id, ''), COALESCE(y.order_id, ''), COALESCE(r.refund_id, ''), COALESCE(y.code_hash, ''),
				COALESCE(r.reason, '')
			FROM postings p
			LEFT JOIN payments y ON y.id = p.payment_id
			LEFT JOIN refunds r ON r.payment_id = p.payment_id AND r.account_id = p.account_id AND r.posting_seq = p.seq
			WHERE p.account_id = $1 AND p.seq < $3 ORDER BY p.seq DESC LIMIT $2`, int64(account), listLimit(limit, MaxListLimit),
			int64(before))
		if err != nil {
			return fmt.Errorf("ledger: read postings: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			p := Posting{Account: account, Balance: bal}
			var seq, fv, created int64
			var tap, ref sql.NullString
			var pay sql.NullInt64
			if err := rows.Scan(&seq, &p.Kind, &p.Amount, &tap, &pay, &ref, &fv, &created, &p.MerchantID, &p.OrderID,
				&p.RefundID, &p.CodeHash, &p.RefundReason); err != nil {
				return fmt.Errorf("ledger: read postings: %w", err)
			}
			p.Seq, p.TapID, p.PaymentID, p.Reference = uint64(seq), tap.String, uint64(pay.Int64), ref.String
			p.FareVersion, p.CreatedAt = uint64(fv), fromNS(created)
			bal -= p.Amount
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, err
}

// MaxLiveCredentials is the most credentials not yet expired and not
// deny-listed an account may hold: a wallet renews its credential at half
// its lifetime (two a day), a rider may have a few phones, and nothing else
// needs more. Credentials on the deny list do not count (a thief who took
// 16 before the rider replaced the secret must not keep the rider from a
// new one), up to MaxUnexpiredCredentials in all: together they bound the
// rows (and the deny entries a reuse may bring) one rider can make the
// ledger hold.
const (
	MaxLiveCredentials      = 16
	MaxUnexpiredCredentials = 4 * MaxLiveCredentials
)

// IssueCredentialSerial records a credential issuance for an account and
// returns its serial: 1 for the first, then increasing. The caller (the
// credential API) signs the credential with that serial; the token seed is
// never given to the ledger. An account holding MaxLiveCredentials not yet
// expired and not deny-listed, or MaxUnexpiredCredentials not yet expired,
// gets ErrTooManyCredentials.
func (s *Store) IssueCredentialSerial(ctx context.Context, account uint64, notAfter time.Time, riderPublicKey []byte) (uint32, error) {
	return s.issueCredentialSerial(ctx, account, nil, notAfter, riderPublicKey)
}

// IssueRiderCredentialSerial is IssueCredentialSerial for a rider who
// signed in with the secret whose hash is secretHash: if the account's
// secret is no longer that one when the credential is recorded (replaced
// while the request was under way), nothing is recorded and the error is
// ErrSecretChanged. ReplaceSecret deny-lists the credentials recorded
// before it; this keeps one recorded after it from going to whoever held
// the old secret.
func (s *Store) IssueRiderCredentialSerial(ctx context.Context, account uint64, secretHash []byte, notAfter time.Time,
	riderPublicKey []byte) (uint32, error) {
	if len(secretHash) == 0 {
		return 0, invalid("no secret hash")
	}
	return s.issueCredentialSerial(ctx, account, secretHash, notAfter, riderPublicKey)
}

func (s *Store) issueCredentialSerial(ctx context.Context, account uint64, secretHash []byte, notAfter time.Time,
	riderPublicKey []byte) (uint32, error) {
	if err := checkAccountID(account); err != nil {
		return 0, invalid("%v", err)
	}
	if err := paycode.CheckPublicKey(riderPublicKey); err != nil {
		return 0, invalid("rider public key: %v", err)
	}
	if notAfter.Unix() > maxTimestamp || !notAfter.After(s.now()) {
		return 0, invalid("not after %v must be in the future and before 2106", notAfter)
	}
	// An account that can take no more is refused with a read, before
	// the write transaction (which checks again): a rider's secret asking
	// again and again (1,500 refusals a second from one account and 50
	// connections, an attack review) took the ledger's one writer each
	// time, and every other write waited behind them (a top-up's p50
	// 4 ms -> 66 ms, p99 32 ms -> 251 ms).
	read := func(query string, args ...any) rowScanner { return s.db.QueryRowContext(ctx, query, args...) }
	if err := credentialRoom(read, account, s.now().UnixNano()); err != nil {
		return 0, err
	}
	var serial uint32
	err := s.write(ctx, "issue credential", func(t *txn) error {
		if _, err := t.lockExisting(account); err != nil {
			return err
		}
		var last int64
		var secret []byte
		if err := t.queryRow(`SELECT last_serial, secret_hash FROM accounts WHERE id = $1`, int64(account)).Scan(&last,
			&secret); err != nil {
			return fmt.Errorf("ledger: read last serial: %w", err)
		}
		if secretHash != nil && subtle.ConstantTimeCompare(secret, secretHash) != 1 {
			return ErrSecretChanged
		}
		if last >= math.MaxUint32 {
			return invalid("account %d has used every credential serial", account)
		}
		if err := credentialRoom(t.queryRow, account, t.now); err != nil {
			return err
		}
		serial = uint32(last + 1)
		if _, err := t.exec("record credential",
			`INSERT INTO credentials (account_id, serial, not_after_ns, rider_public_key, issued_ns) VALUES ($1, $2, $3, $4, $5)`,
			int64(account), int64(serial), notAfter.UnixNano(), riderPublicKey, t.now); err != nil {
			return err
		}
		_, err := t.exec("update last serial", `UPDATE accounts SET last_serial = $1 WHERE id = $2`, int64(serial), int64(account))
		return err
	})
	if err != nil {
		return 0, err
	}
	s.log.Debug("ledger: credential issued", logKeyAccount, account, logKeySerial, serial)
	return serial, nil
}

// LiveCredentialOfKey returns the serial and end of the account's newest
// credential for riderPublicKey that is not yet expired and not on the
// deny list; ok is false if there is none. A wallet whose request for a
// credential got no answer (the connection dropped, or it gave up
// waiting) asks again with the same key: the credential issued then is
// sent again (api), not one more issued. Each lost answer left a
// credential no phone holds, and 16 of them (MaxLiveCredentials) refused
// the rider any pass for up to a day.
func (s *Store) LiveCredentialOfKey(ctx context.Context, account uint64, riderPublicKey []byte) (serial uint32,
	notAfter time.Time, ok bool, err error) {
	if err := checkAccountID(account); err != nil {
		return 0, time.Time{}, false, invalid("%v", err)
	}
	var ser, na int64
	err = s.db.QueryRowContext(ctx, `SELECT c.serial, c.not_after_ns FROM credentials c
		WHERE c.account_id = $1 AND c.rider_public_key = $2 AND c.not_after_ns > $3
			AND NOT EXISTS (SELECT 1 FROM deny_entries d WHERE d.account_id = c.account_id AND d.serial = c.serial)
		ORDER BY c.serial DESC LIMIT 1`, int64(account), riderPublicKey, s.now().UnixNano()).Scan(&ser, &na)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, false, nil
	}
	if err != nil {
		return 0, time.Time{}, false, fmt.Errorf("ledger: read credential of key: %w", err)
	}
	return uint32(ser), time.Unix(0, na), true, nil
}

// riderReplaceRoom is ErrTooManyCredentials when the account holds
// MaxUnexpiredCredentials-MaxLiveCredentials credentials not yet expired
// (at now, unix ns), deny-listed or not: a rider's own secret replacement
// is then refused, the payment provider's or the operator's is not. Each
// replacement denies the live credentials, which still count towards
// MaxUnexpiredCredentials until they expire, so a stolen secret used to
// issue 16, replace the secret, issue 16 more … filled the 64 in 68
// requests (an attack review), and the rider, given a new secret by the
// operator, was refused every credential (409 too_many_credentials) for a
// day, with nothing the operator could do. Refused here, the thief stops
// at 48 denied ones plus 16 live, which the operator's reset denies,
// leaving the rider room for at least one; a rider who replaces their own
// secret holds a few credentials, never 48.
func riderReplaceRoom(queryRow func(query string, args ...any) rowScanner, account uint64, now int64) error {
	unexpired, _, err := countCredentials(queryRow, account, now)
	if err != nil {
		return err
	}
	if limit := int64(MaxUnexpiredCredentials - MaxLiveCredentials); unexpired >= limit {
		return fmt.Errorf("%w: account %d holds %d credentials not yet expired (a rider replaces their own secret below %d): "+
			"the payment provider or the operator can replace it", ErrTooManyCredentials, account, unexpired, limit)
	}
	return nil
}

// countCredentials counts an account's credentials not yet expired (at
// now, unix ns), and how many of them are deny-listed: what both bounds
// on them (credentialRoom, riderReplaceRoom) are of.
func countCredentials(queryRow func(query string, args ...any) rowScanner, account uint64, now int64) (unexpired, denied int64, err error) {
	if err := queryRow(`SELECT COUNT(*), COUNT(CASE WHEN EXISTS (SELECT 1 FROM deny_entries d
			WHERE d.account_id = c.account_id AND d.serial = c.serial) THEN 1 END)
		FROM credentials c WHERE c.account_id = $1 AND c.not_after_ns > $2`,
		int64(account), now).Scan(&unexpired, &denied); err != nil {
		return 0, 0, fmt.Errorf("ledger: count credentials: %w", err)
	}
	return unexpired, denied, nil
}

// credentialRoom is ErrTooManyCredentials when the account holds
// MaxLiveCredentials not yet expired (at now, unix ns) and not deny-listed,
// or MaxUnexpiredCredentials not yet expired.
func credentialRoom(queryRow func(query string, args ...any) rowScanner, account uint64, now int64) error {
	unexpired, denied, err := countCredentials(queryRow, account, now)
	if err != nil {
		return err
	}
	if live := unexpired - denied; live >= MaxLiveCredentials || unexpired >= MaxUnexpiredCredentials {
		return fmt.Errorf("%w: account %d holds %d not yet expired, %d of them deny-listed (limits %d not denied, %d in all)",
			ErrTooManyCredentials, account, unexpired, denied, MaxLiveCredentials, MaxUnexpiredCredentials)
	}
	return nil
}

// Credentials returns the credentials issued to an account, newest first.
func (s *Store) Credentials(ctx context.Context, account uint64) ([]Credential, error) {
	return s.CredentialsBefore(ctx, account, 0, 0)
}

// CredentialsBefore returns an account's credentials with a serial below
// before (0: from the newest), newest first, at most limit (limit <= 0:
// all): pass the last serial of a page to read the next one. A wallet
// renews twice a day, so an account holds hundreds of credentials a year.
func (s *Store) CredentialsBefore(ctx context.Context, account uint64, before uint32, limit int) ([]Credential, error) {
	if _, err := s.Account(ctx, account); err != nil {
		return nil, err
	}
	upper := int64(before)
	if before == 0 {
		upper = math.MaxInt64
	}
	lim := int64(limit)
	if limit <= 0 {
		lim = math.MaxInt64
	}
	rows, err := s.db.QueryContext(ctx, `SELECT serial, not_after_ns, rider_public_key, issued_ns
		FROM credentials WHERE account_id = $1 AND serial < $2 ORDER BY serial DESC LIMIT $3`, int64(account), upper, lim)
	if err != nil {
		return nil, fmt.Errorf("ledger: read credentials: %w", err)
	}
	defer rows.Close()
	var out []Credential
	for rows.Next() {
		c := Credential{Account: account}
		var serial, notAfter, issued int64
		if err := rows.Scan(&serial, &notAfter, &c.RiderPublicKey, &issued); err != nil {
			return nil, fmt.Errorf("ledger: read credentials: %w", err)
		}
		c.Serial, c.NotAfter, c.IssuedAt = uint32(serial), fromNS(notAfter), fromNS(issued)
		out = append(out, c)
	}
	return out, rows.Err()
}

// DefaultRestoreMargin is how far Restored moves the id counters, and
// MaxRestoreMargin the most it may.
const (
	DefaultRestoreMargin = 100_000
	MaxRestoreMargin     = 1 << 40
)

// Restored makes the ledger safe to use after it was restored from a
// backup: the account and payment id counters jump forward by margin
// (DefaultRestoreMargin if 0), past any id the lost part of the history may
// have handed out (riders and shops hold those ids; a code of a lost
// account is refused anyway, as its credential is not in the restored
// ledger), and the deny-list version moves to at least the current time
// (validators refuse a list older than theirs). It writes an audit entry and
// returns the counters' new values.
//
// lost are the fare tables published after the backup, in any order (see
// restoreFareTables); each is checked as publishing it is, and one refused
// changes nothing.
func (s *Store) Restored(ctx context.Context, margin int64, actor string, lost ...*fare.Table) (accountID, paymentID int64, err error) {
	if margin == 0 {
		margin = DefaultRestoreMargin
	}
	if margin < 0 || margin > MaxRestoreMargin {
		return 0, 0, invalid("restore margin %d out of range", margin)
	}
	tables, err := s.lostFareTables(lost)
	if err != nil {
		return 0, 0, err
	}
	var window restoreWindow
	err = s.write(ctx, "restored", func(t *txn) error {
		for _, c := range []struct {
			name string
			to   *int64
		}{{"account_id", &accountID}, {"payment_id", &paymentID}} {
			if err := t.queryRow(`UPDATE counters SET value = value + $1 WHERE name = $2 RETURNING value`, margin, c.name).
				Scan(c.to); err != nil {
				return fmt.Errorf("ledger: move %s: %w", c.name, err)
			}
		}
		if err := t.bumpDenyVersion(); err != nil {
			return err
		}
		// Credentials issued since the backup are in riders' phones but
		// not here: new ones get serials past theirs, and taps of theirs
		// (issued between the newest credential here and now) are taken
		// in as issued (lostCredential).
		if _, err := t.exec("move credential serials", `UPDATE accounts SET last_serial = CASE
			WHEN last_serial > $1 THEN $2 ELSE last_serial + $3 END`,
			int64(math.MaxUint32-RestoreSerialMargin), int64(math.MaxUint32), int64(RestoreSerialMargin)); err != nil {
			return err
		}
		if err := t.queryRow(`SELECT COALESCE(MAX(issued_ns), 0) FROM credentials`).Scan(&window.from); err != nil {
			return fmt.Errorf("ledger: read the newest credential: %w", err)
		}
		// Run again (--fares forgotten the first time) after the server
		// has served, the newest credential is one issued since: the
		// window keeps its earlier start, or the passes and fare tables
		// of the lost hours would no longer be taken.
		var kept string
		err := t.queryRow(`SELECT value FROM ledger_settings WHERE name = 'restored_from_ns'`).Scan(&kept)
		switch {
		case err == nil:
			if v, perr := strconv.ParseInt(kept, 10, 64); perr == nil {
				window.from = min(window.from, v)
			}
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("ledger: read the restore window: %w", err)
		}
		window.at = t.now
		// Device assignments made since the backup are applied on the
		// validators, which refuse a version not above theirs: the next
		// ones are numbered past any (the time in milliseconds, as the
		// deny list's version: it keeps increasing across restores).
		floor := t.now / int64(time.Millisecond)
		for name, v := range map[string]int64{"restored_from_ns": window.from, "restored_at_ns": window.at, "assignment_floor": floor} {
			if _, err := t.exec("keep the restore window", `INSERT INTO ledger_settings (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, strconv.FormatInt(v, 10)); err != nil {
				return err
			}
		}
		if err := t.restoreFareTables(tables, window.from, actor); err != nil {
			return err
		}
		return t.audit(actor, "restored", "", fmt.Sprintf("id counters +%d: next account %d, next payment %d; credential serials +%d",
			margin, accountID+1, paymentID+1, RestoreSerialMargin))
	})
	if err == nil {
		s.restore.Store(&window)
		s.log.Warn("ledger: marked as restored from a backup; id counters moved forward", "margin", margin,
			"account_id", accountID, "payment_id", paymentID)
	}
	return accountID, paymentID, err
}
