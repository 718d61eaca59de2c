package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/wire"
)

// Suffixes given to a damaged queue file (validator.db.corrupt-<time>)
// once it has been dealt with: its records adopted by the current file, or
// given up by the operator (reset-queue). A damaged file without either is
// pending: the validator salvages it at start, or, if nothing can be read
// from it, stays out of service until the operator resets it.
const (
	salvagedSuffix = ".salvaged"
	resetSuffix    = ".reset"
)

// The validator's own state in the queue file.
const (
	bucketValidator = "validator.state"
	keySalvage      = "salvage" // JSON wire.SalvageStatus of the last salvage
)

// queueFiles is the open queue file and what opening it found.
type queueFiles struct {
	q *queue.Queue
	// unreadable are damaged files nothing could be read from: the
	// validator is out of service until the operator resets them.
	unreadable []string
}

// damagedFiles returns the pending damaged files of the queue file at path,
// oldest first.
func damagedFiles(path string) ([]string, error) {
	all, err := filepath.Glob(path + ".corrupt-*")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, salvagedSuffix) && !strings.HasSuffix(f, resetSuffix) {
			out = append(out, f)
		}
	}
	sort.Strings(out) // the names carry the UTC time they were moved aside
	return out, nil
}

// maxSeqAhead bounds how far above the wall clock in milliseconds a
// damaged file's sequence numbers are believed (2^40: 35 years of a tap a
// millisecond).
const maxSeqAhead = 1 << 40

// openQueue opens the validator's queue file. A damaged one is moved aside
// by the queue and salvaged here: its unsent taps are adopted by the new
// file, to be sent under their own epoch, with the device state it held. A
// new file is never started while the clock is unset (waitClock is called
// until it is set), and it numbers its taps above the wall clock in
// milliseconds and above anything the damaged files handed out. now is
// the validator's clock (the agent's).
func openQueue(ctx context.Context, cfg *Config, log *slog.Logger, minClock time.Time, now func() time.Time, waitClock func(context.Context) error) (*queueFiles, error) {
	path := filepath.Join(cfg.path(cfg.DataDir), queueFile)
	// The first tap after every start is numbered at least the wall clock
	// in milliseconds (once the clock is set), as a new file's first is: a
	// queue file put back from an older backup then skips the numbers it
	// handed out after the copy instead of giving them again under the
	// same epoch (the server would keep those taps aside, uncharged). A
	// file whose numbers run ahead of the clock keeps that lead (seqLead,
	// set once it is open, before its first append).
	var lead uint64
	seqFloor := func() uint64 {
		t := now()
		if !t.After(minClock) {
			return 0
		}
		ms := uint64(t.UnixMilli())
		if lead > math.MaxInt64-ms {
			return ms // a lead past the ledger's range: numbered on from the file
		}
		return ms + lead
	}
	// Append and ack times (the archive's age) on the validator's clock
	// too: the system clock, or a test's skew of it.
	opts := queue.Options{MaxRecords: cfg.Queue.MaxRecords, MaxFileSize: cfg.Queue.MaxFileSize,
		Logger: log.With("part", "queue"), NoCreate: true, SeqFloor: seqFloor, ReserveDisk: true, Now: now}
	q, err := queue.OpenContext(ctx, path, &opts)
	var ce *queue.CorruptError
	switch {
	case err == nil:
		if lead, err = seqLead(q, log); err != nil {
			q.Close()
			return nil, err
		}
	case errors.As(err, &ce) && ce.MovedTo != "":
		// Moved aside and logged by the queue; salvaged below.
	case errors.Is(err, queue.ErrNoFile):
	default:
		return nil, err
	}
	damaged, err := damagedFiles(path)
	if err != nil {
		return nil, err
	}
	out := &queueFiles{}
	var salvages []*queue.Salvage
	defer func() {
		for _, s := range salvages {
			s.Close()
		}
	}()
	for _, f := range damaged {
		s, err := queue.OpenSalvage(f)
		switch {
		case errors.Is(err, queue.ErrUnsalvageable):
			out.unreadable = append(out.unreadable, f)
			log.Error("queue: nothing can be read from a damaged queue file: out of service until an operator runs reset-queue",
				"file", f, "err", err)
			continue
		case err != nil:
			return nil, err
		}
		salvages = append(salvages, s)
	}
	// A damaged file of another device (a card moved to a board with
	// another id) is left pending, as a sound one is refused: salvaged
	// here, its taps were left out as damaged and the file marked
	// salvaged, so that nothing started them again under their device.
	for _, s := range salvages {
		other, n, err := foreignTaps(s, cfg.DeviceID)
		if err == nil && other != "" {
			err = foreignQueueError{fmt.Errorf("%w: data_dir: the damaged queue file %s holds %d unsent taps of device %s, and this validator is %s: "+
				"salvaged here they would not be sent. Start %s's bundle on it (README: Replacing a broken board), "+
				"or give this validator a data_dir of its own", errConfig, s.Path, n, other, cfg.DeviceID, other)}
		}
		if err != nil {
			if q != nil {
				q.Close()
			}
			return nil, err
		}
	}
	fresh := q == nil
	if fresh {
		if err := waitClock(ctx); err != nil {
			return nil, err
		}
		// A new file's sequence numbers start at the wall clock in
		// milliseconds (seqFloor) and above every number a damaged file
		// handed out, so no (device, seq) repeats even apart from the
		// epoch.
		first := seqFloor()
		if first == 0 {
			return nil, fmt.Errorf("queue: the clock is before the minimum clock %s", minClock.UTC().Format(time.RFC3339))
		}
		for _, s := range salvages {
			// A number far above the wall clock is a damaged key, not a
			// number handed out (a device takes a tap a second at most):
			// taken, it would number every later tap past what the
			// server stores, and none would be charged.
			if s.LastSeq >= first+maxSeqAhead {
				log.Warn("queue: the damaged file's highest sequence number is implausible (a damaged key): not numbering above it",
					"file", s.Path, "last_seq", s.LastSeq, "first_seq", first)
				continue
			}
			first = max(first, s.LastSeq+1)
		}
		opts.NoCreate, opts.FirstSeq = false, first
		if q, err = queue.OpenContext(ctx, path, &opts); err != nil {
			return nil, err
		}
	}
	out.q = q
	if !fresh {
		if err := checkQueueOwner(q, cfg.DeviceID); err != nil {
			q.Close()
			return nil, err
		}
	}
	// The damaged files' device state goes into a file made for them. A
	// file found in place was made for them too when it holds no device
	// state yet (agent.HasState: the agent never ran on it): the power
	// went after it was made and before the state was restored. Taken
	// for a sound file, the salvage left the state out for good — codes
	// seen, counters, the documents applied — and a code accepted before
	// was accepted and charged again.
	restore := fresh
	if !fresh && len(salvages) > 0 {
		has, err := agent.HasState(q)
		if err != nil {
			q.Close()
			return nil, err
		}
		if restore = !has; restore {
			log.Warn("queue: the queue file holds no device state yet: a salvage was cut short; restoring the damaged files' state now")
		}
	}
	for _, s := range salvages {
		if err := salvageFile(q, s, cfg.DeviceID, restore, log); err != nil {
			q.Close()
			return nil, err
		}
	}
	return out, nil
}

// seqLead returns how many milliseconds the sequence number of the file's
// newest record runs ahead of that tap's time (0 when it does not). A file
// made while the clock ran ahead (an RTC that came up in a later year, a
// technician's typo, set right since) numbers its taps from that clock
// and on by one: its numbers stay ahead of the wall clock, and the floor
// from the clock alone (seqFloor) was below them at every start. Put back
// from an older backup, such a file handed out again the numbers used
// after the copy, under the same epoch: the server kept those taps aside,
// uncharged; and two validators of one cloned card numbered the same taps
// alike. Kept, the lead makes the first number after a start at least the
// clock plus the file's lead, past every number handed out since the
// newest record (one a millisecond at most).
func seqLead(q *queue.Queue, log *slog.Logger) (uint64, error) {
	r, ok, err := q.Newest()
	if err != nil || !ok {
		return 0, err
	}
	at := r.Time
	if tp, err := record.ParseTap(r.Data); err == nil && !tp.Time.IsZero() {
		at = tp.Time // the validator's clock at the tap, which seqFloor reads
	}
	ms := at.UnixMilli()
	if ms <= 0 || r.Seq <= uint64(ms) {
		return 0, nil
	}
	lead := r.Seq - uint64(ms)
	if lead < uint64(time.Minute/time.Millisecond) {
		return lead, nil // taps in one millisecond, a clock a little behind at the newest: not worth a line
	}
	log.Info("queue: the file's sequence numbers run ahead of the clock (it was made while the clock ran ahead): numbering on from the clock plus that lead",
		"newest_seq", r.Seq, "lead", (time.Duration(min(lead, uint64(math.MaxInt64/time.Millisecond))) * time.Millisecond).String())
	return lead, nil
}

// checkQueueOwner refuses a queue file whose oldest unsent tap is another
// device's: a card or data directory moved to a board provisioned with
// another id. Sent under this device's id, the server keeps such taps
// aside as malformed (uncharged) and acks them, so the device deletes
// green taps the riders were let through on. Nothing is changed: the file
// is kept for its own device's bundle.
//
// The taps the file adopted from a damaged file (a failing card: salvaged,
// then the board replaced) are sent under this device's id too: the
// oldest of each adopted epoch is checked as well, and they are counted
// as ctl status's queue_depth counts them.
func checkQueueOwner(q *queue.Queue, device string) error {
	recs, err := q.Peek(1, 0)
	if err != nil {
		return err
	}
	epochs, err := q.AdoptedEpochs()
	if err != nil {
		return err
	}
	for _, e := range epochs {
		r, err := q.PeekAdopted(e, 0, 1, 0)
		if err != nil {
			return err
		}
		recs = append(recs, r...)
	}
	for _, r := range recs {
		tp, err := record.ParseTap(r.Data)
		if err != nil || tp.DeviceID == device {
			continue // a record that does not decode is the server's to keep aside
		}
		st, _ := q.Stats()
		return foreignQueueError{fmt.Errorf("%w: data_dir: %s holds %d unsent taps of device %s, and this validator is %s: "+
			"sent as %s's, the server would keep them aside uncharged. Run that file with %s's bundle until "+
			"farego-validator ctl status shows \"queue_depth\": 0 (README: Replacing a broken board), "+
			"or give this validator a data_dir of its own",
			errConfig, q.Path(), st.Count+st.Adopted, tp.DeviceID, device, device, tp.DeviceID)}
	}
	return nil
}

// foreignQueueError is a queue file (or a damaged one) holding another
// device's unsent taps: the validator stays out of service until it is
// dealt with (openWhenOwn).
type foreignQueueError struct{ err error }

func (e foreignQueueError) Error() string { return e.err.Error() }
func (e foreignQueueError) Unwrap() error { return e.err }

// foreignTaps returns the device of the first unsent tap of the damaged
// file s that is not device's ("" if none) and how many such taps it
// holds. A file read page by page (Scanned) is not judged: its pages give
// back taps delivered already too, and stale copies in free pages, which
// may be of a device that ran the file before this one.
func foreignTaps(s *queue.Salvage, device string) (other string, n int, err error) {
	if s.Scanned {
		return "", 0, nil
	}
	err = s.Records(func(_ string, r queue.Record) error {
		if tp, err := record.ParseTap(r.Data); err == nil && tp.DeviceID != device {
			if other == "" {
				other = tp.DeviceID
			}
			n++
		}
		return nil
	})
	return other, n, err
}

// salvageFile adopts what can be read from one damaged file, records the
// report for the status and the metrics, and marks the file salvaged.
func salvageFile(q *queue.Queue, s *queue.Salvage, device string, restoreState bool, log *slog.Logger) error {
	rep, err := agent.Salvage(q, s, device, restoreState)
	if err != nil {
		return err
	}
	st := wire.SalvageStatus{File: rep.File, At: time.Now().UTC(), Epoch: rep.Epoch, Records: rep.Records,
		Damaged: rep.Damaged, LostPages: rep.LostPages, State: rep.State, Scanned: rep.Scanned}
	b, _ := json.Marshal(st)
	if err := q.UpdateState(func(s *queue.State) error { return s.Put(bucketValidator, []byte(keySalvage), b) }); err != nil {
		return fmt.Errorf("queue: salvage report: %w", err)
	}
	lvl := slog.LevelWarn
	if rep.LostPages > 0 || rep.Damaged > 0 {
		lvl = slog.LevelError
	}
	log.Log(context.Background(), lvl, "queue: damaged queue file salvaged: its unsent taps are sent under their own epoch",
		"file", s.Path, "epoch", rep.Epoch, "records", rep.Records, "expected", rep.Expected, "damaged", rep.Damaged,
		"lost_pages", rep.LostPages, "state_restored", rep.State, "read_page_by_page", rep.Scanned)
	if err := durable.Rename(s.Path, s.Path+salvagedSuffix); err != nil {
		// Harmless: salvaging it again at the next start adopts nothing new.
		log.Warn("queue: cannot mark the damaged file salvaged", "file", s.Path, "err", err)
	}
	return nil
}

// lastSalvage returns the report of the last salvage, if any.
func lastSalvage(q *queue.Queue) *wire.SalvageStatus {
	var st *wire.SalvageStatus
	q.ViewState(func(s *queue.State) error {
		if b := s.Get(bucketValidator, []byte(keySalvage)); b != nil {
			var v wire.SalvageStatus
			if json.Unmarshal(b, &v) == nil {
				st = &v
			}
		}
		return nil
	})
	return st
}

// watchReset calls released once every file in unreadable has been dealt
// with by the operator (renamed by reset-queue), checking every interval
// until ctx is done.
func watchReset(ctx context.Context, unreadable []string, interval time.Duration, released func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		left := 0
		for _, f := range unreadable {
			if _, err := os.Stat(f); err == nil {
				left++
			}
		}
		if left == 0 {
			released()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// clockWait is the wait for a set clock before a new queue file may start.
type clockWait struct {
	minClock time.Time
	log      *slog.Logger
	waiting  atomic.Bool
	onWait   func() // called once when the wait begins (out-of-service feedback)
}

// wait returns once the clock is past minClock, or ctx is done.
func (w *clockWait) wait(ctx context.Context) error {
	if time.Now().After(w.minClock) {
		return nil
	}
	w.waiting.Store(true)
	defer w.waiting.Store(false)
	w.log.Error("clock unset: not starting a new queue file (its taps are numbered from the clock); out of service until the clock is set",
		"now", time.Now().UTC().Format(time.RFC3339), "min_clock", w.minClock.UTC().Format(time.RFC3339))
	if w.onWait != nil {
		w.onWait()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for time.Now().Before(w.minClock) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	w.log.Info("clock set: starting a new queue file", "now", time.Now().UTC().Format(time.RFC3339))
	return nil
}
