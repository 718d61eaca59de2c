package rig

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

// rejectCounts parses scrapeRejects' lines into counts by reason.
func rejectCounts(t *testing.T, r *Rig) map[string]uint64 {
	t.Helper()
	lines, err := scrapeRejects(t.Context(), r.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for l := range strings.SplitSeq(lines, ", ") {
		// {reason="malformed"} 12
		reason, n, ok := strings.Cut(l, "} ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseUint(n, 10, 64)
		out[strings.TrimSuffix(strings.TrimPrefix(reason, `{reason="`), `"`)] += v
	}
	return out
}

// TestAttackInflationBomb: a stolen validator signs messages of a few
// kilobytes that inflate to wire.MaxPayloadSize (4 MiB). On the taps topic
// each was inflated and refused as malformed, charged nothing: an attack
// review sent 800 in 20 s (40 a second, within the broker's budget,
// whose bytes count as sent), 3.2 GB inflated, a third of a core, the
// server's RSS from 38 to 132 MiB. The inflated bytes are now charged to
// the device's verify budget (here 5,000 records: about two such
// batches), so it is refused before anything is inflated; statuses are
// inflated no further than their 8 KiB. An honest device's tap settles;
// the ledger verifies.
func TestAttackInflationBomb(t *testing.T) {
	r, ctx := newRig(t)
	if err := r.StopServer(false); err != nil {
		t.Fatal(err)
	}
	r.ServerArgs = []string{"--device-verify-budget", "5000"}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	a := provisionAttacker(t, ctx, r, "inflater-1")
	victim := startDevice(t, ctx, r, "victim-inflate", fast...)
	c, _, err := a.dial("", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	total := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	const sends = 20
	for _, kind := range []string{wire.KindTaps, wire.KindStatus} {
		typ := wire.TypeBatch
		if kind == wire.KindStatus {
			typ = wire.TypeStatus
		}
		msg, err := wire.Seal(typ, make([]byte, wire.MaxPayloadSize-100), true, a.key)
		if err != nil {
			t.Fatal(err)
		}
		for range sends {
			before := total(rejectCounts(t, r))
			if tok := c.Publish("farego/dev/"+a.id+"/"+kind, 1, false, msg); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
			for deadline := time.Now().Add(20 * time.Second); total(rejectCounts(t, r)) == before; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("a %d-byte %s message was neither taken nor refused", len(msg), kind)
				}
			}
		}
		t.Logf("after %d %s messages of %d bytes: refused %v", sends, kind, len(msg), rejectCounts(t, r))
	}
	got := rejectCounts(t, r)
	if got["verify_budget"] < sends-3 || got["malformed"] > sends+3 {
		t.Errorf("refused %v: want all but 3 of the %d batches refused for the verify budget, uninflated", got, sends)
	}
	if rss, err := r.ServerPeakRSS(); err == nil {
		t.Logf("server peak RSS %d MiB", rss>>20)
	}
	victimSettles(t, ctx, r, victim)
	verifyClean(t, ctx, r)
}
