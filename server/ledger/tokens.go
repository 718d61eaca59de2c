package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Roles of API credentials.
const (
	RoleOperator = "operator" // everything
	RolePayments = "payments" // top-ups and credit lines: the payment provider
	RoleMerchant = "merchant" // online payments for one merchant id
	RoleAuditor  = "auditor"  // reads everything, changes nothing
)

// ValidRole reports whether role is one of the Role constants.
func ValidRole(role string) bool {
	switch role {
	case RoleOperator, RolePayments, RoleMerchant, RoleAuditor:
		return true
	}
	return false
}

// InitTokenID is the principal id of the operator token file (the token
// init wrote, server/keys): not a token the ledger holds, but the id its
// payments, audit entries and console sessions are recorded under.
const InitTokenID = "init"

// APIToken is an API credential as the ledger keeps it: the token itself is
// never stored, only its SHA-256.
type APIToken struct {
	ID         string
	Role       string
	MerchantID string // the merchant a merchant token may pay for; "" otherwise
	Name       string // what the operator called it
	Created    time.Time
	Revoked    time.Time // zero: in force
}

var tokenIDRE = regexp.MustCompile(`^[a-z0-9]{8,32}$`)

// CheckTokenRole checks a new token's role and merchant id as CreateToken
// does: a merchant token, and only a merchant token, names a merchant id.
func CheckTokenRole(role, merchantID string) error {
	switch {
	case !ValidRole(role):
		return fmt.Errorf("role %q must be operator, payments, merchant or auditor", role)
	case role == RoleMerchant && merchantID == "":
		return errors.New("a merchant token pays for one shop: give its merchant id")
	case role != RoleMerchant && merchantID != "":
		return fmt.Errorf("only a merchant token has a merchant id: leave it empty for a %s token", role)
	}
	return checkText("merchant id", merchantID, maxName, false)
}

// CreateToken stores a new API credential. hash is the SHA-256 of the token
// (32 bytes); a merchant token needs a merchant id, other roles have none.
func (s *Store) CreateToken(ctx context.Context, tok APIToken, hash []byte) (APIToken, error) {
	if !tokenIDRE.MatchString(tok.ID) {
		return APIToken{}, invalid("token id %q must be 8-32 of a-z and 0-9", tok.ID)
	}
	if err := CheckTokenRole(tok.Role, tok.MerchantID); err != nil {
		return APIToken{}, invalid("%v", err)
	}
	if err := CheckTokenName(tok.Name); err != nil {
		return APIToken{}, invalid("%v", err)
	}
	if len(hash) != 32 {
		return APIToken{}, invalid("token hash is %d bytes, want 32", len(hash))
	}
	err := s.write(ctx, "create token", func(t *txn) error {
		tok.Created = fromNS(t.now)
		_, err := t.exec("create token", `INSERT INTO api_tokens (id, role, merchant_id, name, token_hash, created_ns)
			VALUES ($1, $2, $3, $4, $5, $6)`, tok.ID, tok.Role, tok.MerchantID, tok.Name, hash, t.now)
		return err
	})
	if err != nil {
		return APIToken{}, err
	}
	s.log.Info("ledger: API token created", "token", tok.ID, "role", tok.Role, "merchant", tok.MerchantID)
	return tok, nil
}

const tokenColumns = `id, role, merchant_id, name, created_ns, revoked_ns`

func scanToken(r rowScanner) (APIToken, error) {
	var tok APIToken
	var created, revoked int64
	err := r.Scan(&tok.ID, &tok.Role, &tok.MerchantID, &tok.Name, &created, &revoked)
	tok.Created, tok.Revoked = fromNS(created), fromNS(revoked)
	return tok, err
}

// TokenByHash returns the API credential whose token hashes to hash
// (revoked ones too: check Revoked), or ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (APIToken, error) {
	tok, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE token_hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return tok, fmt.Errorf("%w: token", ErrNotFound)
	}
	if err != nil {
		return tok, fmt.Errorf("ledger: read token: %w", err)
	}
	return tok, nil
}

// Tokens lists the API credentials, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY created_ns, id`)
	if err != nil {
		return nil, fmt.Errorf("ledger: list tokens: %w", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: list tokens: %w", err)
		}
		out = append(out, tok)
	}
	return out, rows.Err()
}

// MaxTokensPage is the most tokens TokensPage returns at once.
const MaxTokensPage = 1000

// TokenFilter selects a page of API tokens (TokensPage).
type TokenFilter struct {
	// After is the id of the last token of the page before: the page
	// starts with the token made after it ("": with the first).
	After string
	// Role and Merchant keep only the tokens of that role or merchant
	// ("": any).
	Role, Merchant string
	// InForce keeps only the tokens not revoked.
	InForce bool
	// Limit is the page's size, 1 to MaxTokensPage (0: MaxTokensPage).
	Limit int
}

// TokensPage lists a page of the API tokens f selects, oldest first, and
// whether more follow. An After that names no token is ErrNotFound.
func (s *Store) TokensPage(ctx context.Context, f TokenFilter) ([]APIToken, bool, error) {
	if f.Limit <= 0 || f.Limit > MaxTokensPage {
		f.Limit = MaxTokensPage
	}
	if unstorable(f.After) {
		return nil, false, fmt.Errorf("%w: no token %q", ErrNotFound, f.After)
	}
	if unstorable(f.Role, f.Merchant) {
		return nil, false, nil // no token has such a role or merchant id (PostgreSQL refused the query: 500)
	}
	var afterNS int64 = -1
	if f.After != "" {
		err := s.db.QueryRowContext(ctx, `SELECT created_ns FROM api_tokens WHERE id = $1`, f.After).Scan(&afterNS)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("%w: no token %s", ErrNotFound, f.After)
		}
		if err != nil {
			return nil, false, fmt.Errorf("ledger: list tokens: %w", err)
		}
	}
	inForce := 0
	if f.InForce {
		inForce = 1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens
		WHERE (created_ns > $1 OR (created_ns = $1 AND id > $2))
		  AND ($3 = '' OR role = $3) AND ($4 = '' OR merchant_id = $4) AND ($5 = 0 OR revoked_ns = 0)
		ORDER BY created_ns, id LIMIT $6`,
		afterNS, f.After, f.Role, f.Merchant, inForce, f.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("ledger: list tokens: %w", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, false, fmt.Errorf("ledger: list tokens: %w", err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("ledger: list tokens: %w", err)
	}
	if len(out) > f.Limit {
		return out[:f.Limit], true, nil
	}
	return out, false, nil
}

// RevokeToken revokes an API credential at once, for every settlement
// instance (they look tokens up on every request). Revoking again is a
// no-op; ErrNotFound for an unknown id.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	_, err := s.RevokeTokenOnce(ctx, id)
	return err
}

// tokenInForce refuses (ErrTokenRevoked) a payment or refund asked with an
// API token that is revoked, read in the transaction that writes it. The
// API checks the token when a request comes in, but the money moves when
// the ledger commits, which can be long after (the writer's queue, retries):
// a stolen till token revoked while its requests were in flight went on
// paying and refunding after the revocation had answered, and after the
// operator had listed the token's payments (an attack review: 7 of 80
// concurrent payments committed up to 79 ms after the revocation).
//
// Pay and RefundPayment call it first (refused early, nothing written),
// and on PostgreSQL again with lock after their writes (the payment's id
// counter, the account, then the token: one order for all of them): the
// token's row is then locked FOR NO KEY UPDATE until the commit, the
// lock a revocation's UPDATE takes, so a revocation waits for a payment
// that got there first, and a payment that comes after it sees it. Not FOR
// SHARE: share locks are taken past a waiting UPDATE, and a stream of
// payments with the token (a thief's, with a rider's codes of their own)
// kept its revocation from ever committing (the same review: all 200
// concurrent payments paid, the revocation answered after the last). The
// lock is held from the end of the payment's writes to its commit (the
// payment_id counter already queues every payment that long). SQLite's
// writers run one at a time: the first read is enough there. Token ids the
// ledger does not hold ("init", the operator token file's, and payments
// asked without a token) are not refused: the API authenticated them.
func (t *txn) tokenInForce(id string, lock bool) error {
	if id == "" || id == InitTokenID || (lock && !t.pg()) {
		return nil
	}
	q := `SELECT revoked_ns FROM api_tokens WHERE id = $1`
	if lock {
		q += ` FOR NO KEY UPDATE`
	}
	var revoked int64
	err := t.queryRow(q, id).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("ledger: read token: %w", err)
	case revoked != 0:
		return fmt.Errorf("%w: token %s", ErrTokenRevoked, id)
	}
	return nil
}

// RevokeTokenOnce is RevokeToken that also says whether this call revoked
// the token (false: it was revoked before, nothing changed).
func (s *Store) RevokeTokenOnce(ctx context.Context, id string) (bool, error) {
	if unstorable(id) {
		return false, fmt.Errorf("%w: token %q", ErrNotFound, id)
	}
	revoked := false
	err := s.write(ctx, "revoke token", func(t *txn) error {
		revoked = false
		var at int64
		if err := t.queryRow(`SELECT revoked_ns FROM api_tokens WHERE id = $1`, id).Scan(&at); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: token %q", ErrNotFound, id)
		} else if err != nil {
			return fmt.Errorf("ledger: read token: %w", err)
		}
		if at != 0 {
			return nil
		}
		// Two revocations at once: the row lock lets one change it.
		n, err := t.execCount("revoke token", `UPDATE api_tokens SET revoked_ns = $1 WHERE id = $2 AND revoked_ns = 0`, t.now, id)
		revoked = n == 1
		return err
	})
	if err == nil && revoked {
		s.log.Info("ledger: API token revoked", "token", id)
	}
	return revoked, err
}

// AuditEntry is one line of the operators' audit trail.
type AuditEntry struct {
	ID     uint64
	At     time.Time
	Actor  string // who: "token:ID (role)", "cli", …
	Action string // what: "topup", "deny", "revoke_device", …
	Target string // on what: an account, device, token id
	Detail string // the request, short
}

// MaxAuditDetail bounds an audit entry's detail.
const MaxAuditDetail = 1024

// Audit appends an entry to the audit trail (append-only: the database
// refuses UPDATE and DELETE on it).
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"actor", e.Actor, maxLongName}, {"action", e.Action, maxName}, {"target", e.Target, maxLongName}} {
		if err := checkText(f.name, f.v, f.max, f.name != "target"); err != nil {
			return invalid("audit: %v", err)
		}
	}
	return s.write(ctx, "audit", func(t *txn) error {
		return t.audit(e.Actor, e.Action, e.Target, e.Detail)
	})
}

// audit writes an entry to the audit trail in t (with what it records:
// the entry and the change commit together or not at all); a detail
// longer than MaxAuditDetail is cut.
func (t *txn) audit(actor, action, target, detail string) error {
	if len(detail) > MaxAuditDetail {
		detail = detail[:MaxAuditDetail]
	}
	id, err := t.nextID("audit_id")
	if err != nil {
		return err
	}
	_, err = t.exec("audit", `INSERT INTO audit_log (id, at_ns, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, t.now, actor, action, target, detail)
	return err
}

// AuditLog returns audit entries with ids below before (0: from the
// newest), newest first, at most limit (≤ 0: DefaultListLimit).
func (s *Store) AuditLog(ctx context.Context, before uint64, limit int) ([]AuditEntry, error) {
	if before == 0 || before > 1<<62 {
		before = 1 << 62
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, at_ns, actor, action, target, detail FROM audit_log
		WHERE id < $1 ORDER BY id DESC LIMIT $2`, int64(before), listLimit(limit, DefaultListLimit))
	if err != nil {
		return nil, fmt.Errorf("ledger: read audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var id, at int64
		if err := rows.Scan(&id, &at, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("ledger: read audit log: %w", err)
		}
		e.ID, e.At = uint64(id), fromNS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
