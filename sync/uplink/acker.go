package uplink

import (
	"sync"

	"github.com/farego/farego/queue"
)

// ackCommitter writes acked records to the queue (queue.Ack: one fsync per
// call) beside the session, so that sending goes on while the flash is
// busy, and acks that arrive during a commit share the next one.
//
// The session adds seqs and never blocks; the committer goroutine (ackLoop)
// commits whatever is pending and reports the outcome, accumulated, through
// done.
type ackCommitter struct {
	q       *queue.Queue
	onAcked func(seqs []uint64) // Config.OnAcked, may be nil
	wake    chan struct{}       // to the committer: seqs are pending
	done    chan struct{}       // to the session: an outcome is ready

	mu      sync.Mutex
	pending map[string][]uint64 // by epoch; "" is the queue's own
	res     ackOutcome

	fault func() error // tests only: a failing commit (a full disk)
}

// ackOutcome is what the commits since the session last looked came to.
type ackOutcome struct {
	acked int   // records moved out of the queue
	empty bool  // the last commit left the queue empty
	err   error // the first error
}

func newAckCommitter(q *queue.Queue, onAcked func([]uint64)) *ackCommitter {
	return &ackCommitter{q: q, onAcked: onAcked, wake: make(chan struct{}, 1), done: make(chan struct{}, 1)}
}

// add queues seqs of epoch ("" for the queue's own records, otherwise an
// adopted epoch) for the next commit.
func (a *ackCommitter) add(epoch string, seqs []uint64) {
	a.mu.Lock()
	if a.pending == nil {
		a.pending = map[string][]uint64{}
	}
	a.pending[epoch] = append(a.pending[epoch], seqs...)
	a.mu.Unlock()
	signal(a.wake)
}

// loop commits pending acks until stop is closed, then commits what is
// left and returns.
func (a *ackCommitter) loop(stop <-chan struct{}, count func(acked int)) {
	for {
		select {
		case <-a.wake:
			a.commit(count)
		case <-stop:
			a.commit(count)
			return
		}
	}
}

// commit acks the pending seqs: the queue's own in one queue transaction,
// adopted ones in one per epoch.
func (a *ackCommitter) commit(count func(acked int)) {
	a.mu.Lock()
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	n := 0
	var err error
	if a.fault != nil {
		err = a.fault()
	}
	for epoch, seqs := range pending {
		if err != nil {
			break
		}
		var k int
		var e error
		if epoch == "" {
			k, e = a.q.Ack(seqs...)
			if e == nil && a.onAcked != nil {
				a.onAcked(seqs)
			}
		} else {
			k, e = a.q.AckAdopted(epoch, seqs...)
		}
		n += k
		if err == nil {
			err = e
		}
	}
	count(n)
	empty := false
	if err == nil {
		var st queue.Stats
		if st, err = a.q.Stats(); err == nil {
			empty = st.Count == 0 && st.Adopted == 0
		}
	}
	a.mu.Lock()
	a.res.acked += n
	a.res.empty = empty
	if a.res.err == nil {
		a.res.err = err
	}
	a.mu.Unlock()
	signal(a.done)
}

// result returns and clears the accumulated outcome.
func (a *ackCommitter) result() ackOutcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.res
	a.res = ackOutcome{}
	return r
}

// signal wakes the reader of a channel of capacity 1 without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
