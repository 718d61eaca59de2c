package agent

import (
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/ridertext"
	"github.com/farego/farego/queue"
)

// TestEveryReasonHasAMessage: every reason a tap can be refused for, and
// the accepted text, has its own text in every language of the catalog.
func TestEveryReasonHasAMessage(t *testing.T) {
	keys := []string{ridertext.KeyPaid}
	for _, r := range paycode.Reasons {
		keys = append(keys, string(r))
	}
	for _, r := range Reasons {
		keys = append(keys, string(r))
	}
	for _, lang := range ridertext.Languages() {
		for _, k := range keys {
			if !ridertext.Has(lang, k) {
				t.Errorf("%s: no rider text for %q", lang, k)
			}
		}
	}
}

// TestLanguage: a validator set to Simplified Chinese words its outcomes and
// feedback in it; reasons stay the same.
func TestLanguage(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.Language = ridertext.SimplifiedChinese })
	r := h.issuer.Rider(t, 4242, t0)
	code := r.Code(t, t0.Add(-10*time.Second))
	if out := h.tap(code); !out.Accepted || out.Message != "支付成功" {
		t.Errorf("accepted: %+v, want message 支付成功", out)
	}
	if got := last(h.fb); got != "accepted 300 支付成功" {
		t.Errorf("feedback = %q", got)
	}
	if out := h.tap(code); out.Reason != record.ReasonDuplicate || out.Message != "已支付" {
		t.Errorf("duplicate: %+v, want reason duplicate, message 已支付", out)
	}
	if out := h.tap(r.Code(t, t0.Add(-121*time.Second))); out.Reason != paycode.ReasonCodeExpired || out.Message != "乘车码已过期，请刷新" {
		t.Errorf("expired: %+v", out)
	}
	if got := h.a.RiderMessage(string(record.ReasonDenied)); got != "账户已冻结，请查看应用" {
		t.Errorf("RiderMessage(denied) = %q", got)
	}
	if c := h.a.RiderText(); c.Language() != ridertext.SimplifiedChinese {
		t.Errorf("RiderText language %s", c.Language())
	}
	// The default stays English.
	if got := RiderMessage(record.ReasonDuplicate); got != "Already paid" {
		t.Errorf("RiderMessage(duplicate) = %q", got)
	}
}
