package api

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/farego/farego/server/ledger"
)

// TestStolenSecretCannotLockOutRider: a thief with a rider's secret
// issues credentials until refused, replaces the secret (which denies
// them, but they still count towards the 64 not yet expired an account
// may hold), and again: an attack review filled the 64 in 68 requests,
// and the rider, given a new secret by the payment provider, was refused
// every credential (409 too_many_credentials) for a day. The thief's own
// replacement is refused once 48 are held; the provider's reset is not,
// and the rider gets a credential with the new secret. No money moves:
// the balance is the top-up's, and the ledger checks clean (the fixture's
// cleanup).
func TestStolenSecretCannotLockOutRider(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		f, _ := clockFixtureAt(t, dsn)
		r := f.newRider(10_000)
		secret, issued, replaced := r.secret, 1, 0
		var refused map[string]any
		for round := 0; round < 8 && refused == nil; round++ {
			for i := 0; i < ledger.MaxLiveCredentials; i++ {
				if code, _ := f.doAny("POST", path("/v1/accounts/%d/credentials", r.id), secret, ""); code != 201 {
					break
				}
				issued++
			}
			status, out := replaceSecret(t, f, r.id, secret)
			if status != 200 {
				refused = out
				break
			}
			replaced++
			secret = out["secret"].(string)
		}
		t.Logf("the thief issued %d credentials and replaced the secret %d times", issued, replaced)
		if refused == nil || errCode(refused) != "too_many_credentials" {
			t.Fatalf("the thief's secret replacements were never refused (%d credentials, %d replacements): %v", issued, replaced, refused)
		}
		reset := f.do("POST", path("/v1/accounts/%d/secret", r.id), f.tokenFor(ledger.RolePayments, ""), "", 200)["secret"].(string)
		f.do("GET", path("/v1/accounts/%d", r.id), secret, "", 403)
		f.do("POST", path("/v1/accounts/%d/credentials", r.id), reset, "", 201)
		if a := f.do("GET", path("/v1/accounts/%d", r.id), reset, "", 200); a["balance"] != float64(10_000) {
			t.Errorf("balance %v after the attack, want the top-up's 10000", a["balance"])
		}
	})
}

// replaceSecret is a rider's POST /v1/accounts/{id}/secret: its status
// and decoded answer, whatever the status.
func replaceSecret(t *testing.T, f *fixture, id uint64, secret string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+path("/v1/accounts/%d/secret", id), nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer of status %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}
