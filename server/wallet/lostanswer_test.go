package wallet_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/server/wallet/wallettest"
)

// TestWalletLostAnswersCostNoPasses: a new rider, topped up, gets a first
// pass on a dropping connection: the server issues it, the answer never
// arrives, the rider taps "Get a pass" again. Each request was for a new
// key, and so a new pass: three lost answers and the rider's pass was
// pass 4, three passes issued that no phone holds; at 16 the server
// refuses the account every pass (too_many_credentials) for a day. The
// wallet asks again with the key of the request that got no answer, and
// the server sends the pass it issued then: pass 1, the only one.
//
// The answer may also be cut within its body (the status line and
// headers came, "201", the JSON did not): the wallet took that for an
// answer and forgot the key, and the next request issued one more pass.
func TestWalletLostAnswersCostNoPasses(t *testing.T) {
	for _, cut := range []string{"no answer", "body cut"} {
		t.Run(cut, func(t *testing.T) { lostAnswers(t, cut == "body cut") })
	}
}

func lostAnswers(t *testing.T, bodyCut bool) {
	url, g := serveWallet(t)
	// The gate serves a credential request, then drops the connection
	// with no answer (or half of one), 3 times: the answer lost on a
	// dropping connection after the server issued.
	var lost atomic.Int32
	lose := func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/credentials") || lost.Load() >= 3 {
			return false
		}
		rec := httptest.NewRecorder()
		g.next.ServeHTTP(rec, r)
		lost.Add(1)
		if bodyCut {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", fmt.Sprint(rec.Body.Len()))
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
			w.(http.Flusher).Flush()
		}
		panic(http.ErrAbortHandler) // the connection closes, the answer whole nowhere
	}
	g.serve.Store(&lose)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 1000, "psp-lost"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	for i := 0; i < 20 && lost.Load() < 3; i++ {
		wallettest.WaitFor(t, b, 30*time.Second, "Get a pass, after an answer lost", `!document.getElementById("get-pass").hidden`)
		wallettest.Eval[bool](t, b, `(document.getElementById("get-pass").click(), true)`)
		wallettest.WaitFor(t, b, 30*time.Second, "the request to end", `(async () => { await new Promise((r) => setTimeout(r, 300));
			return !document.getElementById("get-pass").hidden || !document.getElementById("code-view").hidden; })()`)
	}
	if lost.Load() != 3 {
		t.Fatalf("%d answers lost, want 3", lost.Load())
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("get-pass").hidden || document.getElementById("get-pass").click(), true)`)
	wallettest.WaitFor(t, b, 30*time.Second, "a pass and its code", `!document.getElementById("code-view").hidden`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "pass-after-lost-answers", "#pass")
	if got := wallettest.Eval[string](t, b, passState); !strings.HasPrefix(got, "Pass 1 ") {
		t.Errorf("after 3 lost answers the pass says %q, want pass 1", got)
	}
	creds, err := g.store.Credentials(context.Background(), acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 {
		t.Errorf("after 3 lost answers and one that came the account holds %d passes, want 1", len(creds))
	}
}
