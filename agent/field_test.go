package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// TestAlreadyPaidOnlyAfterThePaymentIsDurable: a scanner in continuous
// mode sends one code twice within milliseconds; both frames are decided
// at once (two workers) and their appends meet in one queue group. The
// second read is "Already paid" (green, no charge) because of the first's
// write in the same transaction. That green must not be shown before the
// first tap is on disk: a power cut (or a failing commit) between them
// leaves a rider let through with no record of the payment.
func TestAlreadyPaidOnlyAfterThePaymentIsDurable(t *testing.T) {
	h := newHarness(t, nil)
	text := h.issuer.Rider(t, 4242, t0).Code(t, t0)

	// Hold the queue's writer so that both reads form one group.
	release, holding := make(chan struct{}), make(chan struct{})
	go h.q.AppendFunc(context.Background(), func(*queue.State, uint64) ([]byte, error) {
		close(holding)
		<-release
		return nil, errors.New("nothing to record")
	})
	<-holding

	type result struct {
		out     Outcome
		durable int // taps on disk when the outcome was returned
	}
	results := make(chan result, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := h.a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: text, Time: h.clock.Now()})
			recs, err := h.q.Peek(10, 1<<20)
			if err != nil {
				t.Error(err)
			}
			results <- result{out, len(recs)}
		}()
	}
	// Both appends waiting, then release the writer.
	time.Sleep(300 * time.Millisecond) // verified, and waiting for the writer
	close(release)
	wg.Wait()
	close(results)
	var accepted, paid int
	for r := range results {
		switch {
		case r.out.Accepted:
			accepted++
		case r.out.AlreadyPaid():
			paid++
			if r.durable == 0 {
				t.Errorf("green \"Already paid\" (seq %d) shown while no tap was on disk", r.out.Seq)
			}
		default:
			t.Errorf("outcome %+v", r.out)
		}
	}
	if accepted != 1 || paid != 1 {
		t.Errorf("%d accepted, %d already paid; want 1 and 1", accepted, paid)
	}
}
