package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/farego/farego/server/ledger"
)

// Who may call what. Riders authenticate with their account secret; the
// operator with the token init wrote (operator.token) or a token made with
// POST /v1/tokens (or farego-settlement token create), whose role is one of:
//
//	operator  everything
//	payments  top-ups and credit lines (the payment provider)
//	merchant  online payments for its own merchant id, and reading them
//	auditor   every read, no change
//
// Tokens are looked up on every request (by their SHA-256), so a revoked
// token stops working at once on every settlement instance.

// TokenPrefix starts every API token the ledger keeps.
const TokenPrefix = "fgt_"

// principal is who a request comes from.
type principal struct {
	role     string // a ledger.Role*, or roleRider
	tokenID  string // "init" for the operator token file
	merchant string // of a merchant token
	account  uint64 // of a rider
	via      string // the part that authenticated it (ServeAs), for the audit trail
}

const roleRider = "rider"

// actor names the principal in the audit trail.
func (p principal) actor() string {
	if p.role == roleRider {
		return "rider:" + strconv.FormatUint(p.account, 10)
	}
	if p.via != "" {
		return "token:" + p.tokenID + " (" + p.role + ") via " + p.via
	}
	return "token:" + p.tokenID + " (" + p.role + ")"
}

func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

// staffToken identifies a staff token, or returns (false, nil) if tok is not
// one (it may be a rider's secret).
func (h *Handler) staffToken(r *http.Request, tok string) (principal, bool, error) {
	if h.cfg.Keys.CheckToken(tok) {
		return principal{role: ledger.RoleOperator, tokenID: ledger.InitTokenID}, true, nil
	}
	if !strings.HasPrefix(tok, TokenPrefix) {
		return principal{}, false, nil
	}
	t, err := TokenByText(r.Context(), h.cfg.Ledger, tok)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return principal{}, true, errorf(http.StatusForbidden, "forbidden", "unknown token")
	case err != nil:
		return principal{}, true, err
	case !t.Revoked.IsZero():
		return principal{}, true, errorf(http.StatusForbidden, "forbidden", "token %s was revoked", t.ID)
	}
	return principal{role: t.Role, tokenID: t.ID, merchant: t.MerchantID}, true, nil
}

// staff checks that the request carries a staff token whose role is one of
// roles (the operator may do everything).
func (h *Handler) staff(r *http.Request, roles ...string) (principal, error) {
	if p, ok := servedAs(r); ok {
		if !p.allowed(roles) {
			return p, errorf(http.StatusForbidden, "forbidden", "%s token may not do this", withArticle(p.role))
		}
		return p, nil
	}
	tok := bearer(r)
	if tok == "" {
		return principal{}, errorf(http.StatusUnauthorized, "unauthorized", "an API token is required (Authorization: Bearer …)")
	}
	p, ok, err := h.staffToken(r, tok)
	if err != nil {
		return p, err
	}
	if !ok {
		return p, errorf(http.StatusForbidden, "forbidden", "not an API token")
	}
	if p.role != ledger.RoleOperator && !slices.Contains(roles, p.role) {
		return p, errorf(http.StatusForbidden, "forbidden", "%s token may not do this", withArticle(p.role))
	}
	return p, nil
}

// readers are the roles that may read the fleet's and riders' data.
var readers = []string{ledger.RoleAuditor}

// hashSecret is how account secrets are stored: they are 32 random bytes,
// so a plain SHA-256 is enough.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte("farego-account-secret-v1:" + secret))
	return h[:]
}

// accountPrincipal reads {id} and checks that the caller is that account's
// rider or holds a staff token of one of staffRoles (none: riders only).
func (h *Handler) accountPrincipal(r *http.Request, staffRoles ...string) (uint64, principal, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, principal{}, errorf(http.StatusBadRequest, "bad_account", "account id must be a positive integer, got %q", r.PathValue("id"))
	}
	if p, ok := servedAs(r); ok {
		if len(staffRoles) == 0 || !p.allowed(staffRoles) {
			return 0, p, errorf(http.StatusForbidden, "forbidden", "%s token may not do this", withArticle(p.role))
		}
		return id, p, nil
	}
	tok := bearer(r)
	if tok == "" {
		return 0, principal{}, errorf(http.StatusUnauthorized, "unauthorized", "account secret required (Authorization: Bearer …)")
	}
	p, isStaff, err := h.staffToken(r, tok)
	if err != nil {
		return 0, p, err
	}
	if isStaff {
		if len(staffRoles) == 0 || (p.role != ledger.RoleOperator && !slices.Contains(staffRoles, p.role)) {
			return 0, p, errorf(http.StatusForbidden, "forbidden", "%s token may not do this", withArticle(p.role))
		}
		return id, p, nil
	}
	want, err := h.cfg.Ledger.AccountSecretHash(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) || (err == nil && subtle.ConstantTimeCompare(want, hashSecret(tok)) != 1) {
		// The same answer for a missing account and a wrong secret; where
		// staff may call too, it says a token was looked for (an
		// operator's mistyped token read as a rider's wrong secret).
		if len(staffRoles) > 0 {
			return 0, p, errorf(http.StatusForbidden, "forbidden", "wrong account or secret (nor an API token of this server)")
		}
		return 0, p, errorf(http.StatusForbidden, "forbidden", "wrong account or secret")
	}
	if err != nil {
		return 0, p, err
	}
	return id, principal{role: roleRider, account: id}, nil
}

// audit writes a change made by a staff token to the audit trail. A failure
// is logged, not returned: the change is made.
func (h *Handler) audit(r *http.Request, p principal, action, target string, detail any) {
	d := fmt.Sprint(detail)
	// Not cancelled with the request: a client that hangs up once the
	// money has moved does not take the trail's entry with it.
	if err := h.cfg.Ledger.Audit(context.WithoutCancel(r.Context()), ledger.AuditEntry{Actor: p.actor(), Action: action, Target: target, Detail: d}); err != nil {
		h.log.Error("writing the audit trail failed", "action", action, "target", target, "err", err)
	}
}

// newToken returns a new API token and its id: "fgt_" + id + "_" + 32
// random bytes in base32.
func newToken() (id, token string) {
	b := make([]byte, 37)
	rand.Read(b)
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	id = strings.ToLower(enc.EncodeToString(b[:5]))
	return id, TokenPrefix + id + "_" + strings.ToLower(enc.EncodeToString(b[5:]))
}

// TokenByText returns the API credential whose token is tok (revoked
// ones too: check Revoked), or an error matching ledger.ErrNotFound: the
// ledger keeps a token's SHA-256 (CreateToken), and this is the one
// lookup by its text, the API's and the console sign-in's.
func TokenByText(ctx context.Context, l *ledger.Store, tok string) (ledger.APIToken, error) {
	return l.TokenByHash(ctx, sha256Sum(tok))
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// withArticle is a role with its indefinite article ("an auditor", "a
// merchant").
func withArticle(role string) string {
	if role != "" && strings.ContainsRune("aeiou", rune(role[0])) {
		return "an " + role
	}
	return "a " + role
}
