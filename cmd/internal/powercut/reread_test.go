package powercut_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// TestAlreadyPaidNeedsTheTapOnDisk: a scanner in continuous mode sends one
// code twice within milliseconds; both reads meet in one queue commit, and
// the power goes while it is written. Neither read may be green: the
// second's "Already paid" was answered before the commit, and the rider
// rode with no tap on disk. After the power comes back the same code pays,
// once.
func TestAlreadyPaidNeedsTheTapOnDisk(t *testing.T) {
	d := powercut.Mount(t, nil)
	path := filepath.Join(d.Dir(), "validator.db")
	open := func() (*queue.Queue, *agent.Agent) {
		t.Helper()
		q, err := queue.Open(path, &queue.Options{FirstSeq: uint64(time.Now().UnixMilli())})
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "dev", Route: "42", Vehicle: "bus-1", PassbackWindow: -1, RiskCap: -1})
		if err != nil {
			t.Fatal(err)
		}
		return q, a
	}
	issuer := paycodetest.NewIssuer(t, 7, time.Now())
	seed := func(a *agent.Agent) {
		t.Helper()
		if err := errors.Join(a.Seed(record.DocKeyring, mustJSON(t, issuer.Keyring)), a.Seed(record.DocFares, fares(1))); err != nil {
			t.Fatal(err)
		}
	}
	q, a := open()
	seed(a)
	code := issuer.Rider(t, 4242, time.Now()).Code(t, time.Now())

	// Hold the queue's writer, so that both reads wait for it and are
	// taken into one group when it is free.
	release, holding := make(chan struct{}), make(chan struct{})
	go q.AppendFunc(context.Background(), func(*queue.State, uint64) ([]byte, error) {
		close(holding)
		<-release
		return nil, errors.New("nothing to record")
	})
	<-holding
	outs := make([]agent.Outcome, 2)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() {
			outs[i] = a.Tap(context.Background(), scanner.Frame{Scanner: "door-1", Text: code, Time: time.Now()})
		})
	}
	// Both reads verified and waiting for the writer (if one is not yet,
	// it decides alone after the group, on what is on disk).
	time.Sleep(300 * time.Millisecond)
	if err := d.Freeze(); err != nil { // the power goes: every write fails from now on
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	for i, out := range outs {
		if out.Accepted || out.AlreadyPaid() {
			t.Errorf("read %d: green (%+v) while the power was gone: nothing of the tap is on disk", i+1, out)
		}
	}
	q.Close()
	if _, err := d.Cut(false); err != nil {
		t.Fatal(err)
	}

	q, a = open()
	defer q.Close()
	seed(a)
	if st, err := q.Stats(); err != nil || st.Count != 0 {
		t.Fatalf("after the power cut: %d taps on disk (%v), want none", st.Count, err)
	}
	first := a.Tap(context.Background(), scanner.Frame{Scanner: "door-1", Text: code, Time: time.Now()})
	again := a.Tap(context.Background(), scanner.Frame{Scanner: "door-1", Text: code, Time: time.Now()})
	if !first.Accepted || !again.AlreadyPaid() {
		t.Errorf("after the power came back: %+v then %+v; want paid, then already paid", first, again)
	}
	if st, err := q.Stats(); err != nil || st.Count != 1 {
		t.Errorf("%d taps on disk (%v), want the one paid", st.Count, err)
	}
}
