package api

import (
	"context"
	"net/http"
	"slices"

	"github.com/farego/farego/server/ledger"
)

// Staff is a staff principal another part of the server has authenticated
// itself: the operator's console, from its sign-in session. A request
// served with ServeAs goes through the very handler, checks and audit trail
// a request with that token's Authorization header would.
type Staff struct {
	Role    string // a ledger.Role* constant
	TokenID string // the token's id; "init" for the operator token file
	// Via names the part in the audit trail ("console"): the actor is
	// "token:ID (role) via console".
	Via string
}

// staffKey carries a Staff through a request's context; only ServeAs sets
// it, so no HTTP request can.
type staffKey struct{}

// ServeAs serves r as s: the request's Authorization header is ignored,
// and s's role is checked against each endpoint's exactly as a token's
// would be (an auditor changes nothing, a merchant pays only for itself).
func (h *Handler) ServeAs(s Staff, w http.ResponseWriter, r *http.Request) {
	p := principal{role: s.Role, tokenID: s.TokenID, via: s.Via}
	if s.Role == ledger.RoleMerchant {
		p.role = "" // a merchant's id is not known here: no role at all
	}
	r = r.WithContext(context.WithValue(r.Context(), staffKey{}, p))
	r.Header.Del("Authorization")
	h.ServeHTTP(w, r)
}

// servedAs returns the principal ServeAs put in the request, if any.
func servedAs(r *http.Request) (principal, bool) {
	p, ok := r.Context().Value(staffKey{}).(principal)
	return p, ok
}

// allowed reports whether a staff principal may do what needs one of roles
// (the operator may do everything).
func (p principal) allowed(roles []string) bool {
	return p.role == ledger.RoleOperator || (p.role != "" && slices.Contains(roles, p.role))
}
