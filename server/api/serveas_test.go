package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/farego/farego/server/ledger"
)

// A request served as a staff principal (the console's session) goes
// through the same checks and audit trail as one with that token: the
// operator changes things, written "via console"; an auditor reads and
// changes nothing, whatever Authorization header the request carries.
func TestServeAs(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Ledger: f.store, Keys: f.keys})
	r := f.newRider(1000)
	serve := func(s Staff, method, path, body, header string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if header != "" {
			req.Header.Set("Authorization", "Bearer "+header)
		}
		w := httptest.NewRecorder()
		h.ServeAs(s, w, req)
		return w
	}
	deny := `{"account":` + jsonNum(r.id) + `,"reason":"lost_phone"}`
	auditor := Staff{Role: ledger.RoleAuditor, TokenID: "aud12345", Via: "console"}
	before := f.snapshot()
	for _, tc := range []struct {
		s      Staff
		header string
	}{{auditor, ""}, {auditor, f.token}, {Staff{Role: ledger.RoleMerchant, TokenID: "m1234567", Via: "console"}, ""},
		{Staff{Role: ledger.RolePayments, TokenID: "p1234567", Via: "console"}, f.token}} {
		for _, req := range [][3]string{{"POST", "/v1/denylist", deny}, {"POST", "/v1/keyring/rotate", ""},
			{"POST", "/v1/tokens", `{"role":"operator"}`}, {"POST", "/v1/devices/bus-1/revoke", ""}} {
			if w := serve(tc.s, req[0], req[1], req[2], tc.header); w.Code != http.StatusForbidden {
				t.Errorf("%s as %s (header %t): %d %s, want 403", req[1], tc.s.Role, tc.header != "", w.Code, w.Body)
			}
		}
	}
	if w := serve(auditor, "GET", "/v1/accounts/"+jsonNum(r.id), "", ""); w.Code != http.StatusOK {
		t.Errorf("an auditor reading an account: %d %s", w.Code, w.Body)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused requests changed the ledger:\n%s\n%s", before, after)
	}
	op := Staff{Role: ledger.RoleOperator, TokenID: "init", Via: "console"}
	if w := serve(op, "POST", "/v1/denylist", deny, ""); w.Code != http.StatusOK {
		t.Fatalf("the operator denying: %d %s", w.Code, w.Body)
	}
	if w := serve(op, "POST", "/v1/denylist", `{"account":`+jsonNum(r.id)+`,"reason":"x","extra":1}`, ""); w.Code != http.StatusBadRequest {
		t.Errorf("a bad body as the operator: %d, want 400", w.Code)
	}
	es, err := f.store.AuditLog(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) == 0 || es[0].Action != "deny" || es[0].Actor != "token:init (operator) via console" {
		t.Fatalf("audit trail = %+v", es)
	}
}

func jsonNum(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
