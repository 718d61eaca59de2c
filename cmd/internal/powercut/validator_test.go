package powercut_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// TestValidatorPowerCuts runs the validator's queue and agent (in this
// process) on a power-cut disk and cuts the power at random moments: while
// a new queue file is being made, while two doors tap, while an uplink
// commits batches to a ledger and acks them (pruning a small archive), and
// while deny lists and fare tables are applied. After every cut it opens
// the queue again, as a rebooting validator does, and checks that every
// tap that got a green light is still queued or in the ledger, that no
// sequence number was reused, that the device state (seen codes, hash
// chain, document versions) agrees with the queue, that a green code shown
// again is refused as already paid, and that the file passes its check. At
// the end everything drains into the ledger, which must hold exactly the
// green taps (and possibly taps the power cut off before their answer).
func TestValidatorPowerCuts(t *testing.T) {
	cuts, perDevice := 120, 10
	if testing.Short() {
		cuts, perDevice = 30, 5
	}
	d := powercut.Mount(t, &powercut.Options{Seed: 11})
	w := newWorld(t, d)
	for i := range cuts {
		dev := fmt.Sprintf("dev-%d", i/perDevice)
		w.life(dev, i%perDevice == 0)
	}
	w.drain()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	n := w.n
	t.Logf("power cuts: %d survived (%d right after a new device started, %d of them while its queue file was being made; %d tore a page, %d discarded unsynced data or entries); "+
		"taps %d: %d green, %d cut off by the power (%d of those reached the ledger), %d green codes shown again and refused; "+
		"%d batches acked, %d deny lists and %d fare tables applied; checks after every cut: %d green taps found queued or in the ledger; "+
		"ledger: %d taps, exactly the green ones; disk: %d writes, %d file syncs, %d directory syncs",
		n.cuts, n.creationCuts, n.creationHit, n.torn, st.Discarded, n.taps, len(w.green), len(w.cutOff), n.cutOffSettled, n.retapRefused,
		n.batches, n.denyApplied, n.faresApplied, n.greenChecked, len(w.ledger), st.Writes, st.FileSyncs, st.DirSyncs)
	if st.Discarded < int64(cuts)/4 {
		t.Errorf("only %d of %d cuts discarded anything: the cuts are not hitting unsynced work", st.Discarded, cuts)
	}
	if n.creationHit == 0 || n.torn == 0 || n.batches == 0 || n.denyApplied == 0 || len(w.green) < cuts {
		t.Errorf("the workload did not cover every case: %+v, %d green", n, len(w.green))
	}
}

// tapRef is where a record lives: its device, queue epoch and sequence number.
type tapRef struct {
	dev, epoch string
	seq        uint64
}

func (r tapRef) String() string { return r.dev + "/" + r.epoch[:8] + "/" + fmt.Sprint(r.seq) }

type counts struct {
	cuts, creationCuts, creationHit, torn, taps, retapRefused, batches, denyApplied, faresApplied, greenChecked, cutOffSettled int
}

type world struct {
	t      *testing.T
	d      *powercut.Disk
	rnd    *rand.Rand
	issuer *paycodetest.Issuer
	riders []*paycodetest.Rider

	mu      sync.Mutex
	green   map[string]tapRef // code hash → its record: the rider saw green
	codes   map[string]string // code hash → code text, for showing green codes again
	cutOff  map[string]bool   // taps refused because the power went (internal error)
	records map[tapRef]string // every record ever seen in a queue → its code hash
	ledger  map[tapRef]string // what the "server" committed → code hash
	settled map[string]tapRef // code hash → the record that settled it
	acked   map[string]map[string]uint64
	n       counts
	history []string
}

func newWorld(t *testing.T, d *powercut.Disk) *world {
	w := &world{t: t, d: d, rnd: rand.New(rand.NewPCG(5, 5)),
		issuer: paycodetest.NewIssuer(t, 7, time.Now()),
		green:  map[string]tapRef{}, codes: map[string]string{}, cutOff: map[string]bool{},
		records: map[tapRef]string{}, ledger: map[tapRef]string{}, settled: map[string]tapRef{},
		acked: map[string]map[string]uint64{}}
	for i := range 30 {
		w.riders = append(w.riders, w.issuer.Rider(t, uint64(1000+i), time.Now()))
	}
	return w
}

func (w *world) queueOptions() *queue.Options {
	return &queue.Options{
		MaxFileSize:       4 << 20,
		ArchiveMaxRecords: 15, // pruned on almost every ack
		FirstSeq:          uint64(time.Now().UnixMilli()),
	}
}

func (w *world) agentConfig(dev string) agent.Config {
	return agent.Config{DeviceID: dev, Route: "42", Vehicle: "bus-" + dev, PassbackWindow: -1, RiskCap: -1}
}

// open opens the queue and agent of dev, as a validator does at boot.
func (w *world) open(dev string) (*queue.Queue, *agent.Agent, error) {
	q, err := queue.Open(filepath.Join(w.d.Path(dev), "validator.db"), w.queueOptions())
	if err != nil {
		return nil, nil, err
	}
	a, err := agent.New(q, feedback.Multi{}, w.agentConfig(dev))
	if err == nil {
		err = errors.Join(a.Seed(record.DocKeyring, mustJSON(w.t, w.issuer.Keyring)), a.Seed(record.DocFares, fares(1)))
	}
	if err != nil {
		q.Close()
		return nil, nil, err
	}
	return q, a, nil
}

// life is one power-on of device dev: boot (and check what the last cut
// left), work until the power goes at a random moment, cut. With fresh, the
// device is new and the power may go while its queue file is being made.
func (w *world) life(dev string, fresh bool) {
	t := w.t
	if fresh {
		// The data directory itself is made durable by its maker (the
		// validator; see the whole-process test).
		if err := os.Mkdir(w.d.Path(dev), 0o700); err != nil {
			t.Fatal(err)
		}
		syncDirT(t, w.d.Dir())
		w.acked[dev] = map[string]uint64{}
	}
	power := make(chan struct{}) // closed when the power is off
	var powerOff sync.WaitGroup
	goDark := func(after time.Duration) {
		powerOff.Go(func() {
			time.Sleep(after)
			if err := w.d.Freeze(); err != nil {
				t.Error(err)
			}
			close(power)
		})
	}
	creation := fresh && w.rnd.IntN(2) == 0
	if creation {
		goDark(time.Duration(w.rnd.IntN(4000)) * time.Microsecond)
	}
	q, a, err := w.open(dev)
	switch {
	case err != nil && creation:
		// The power went while the file was being made.
		w.n.creationHit++
	case err != nil:
		t.Fatalf("%s: boot after a cut: %v", dev, err)
	default:
		if !creation {
			w.check(dev, q, a)
			goDark(time.Duration(5+w.rnd.IntN(60)) * time.Millisecond)
		}
		w.work(dev, q, a, power)
		q.Close() // fails if the power went mid-commit; nothing to keep
	}
	powerOff.Wait()
	tear := w.rnd.IntN(2) == 0
	r, err := w.d.Cut(tear)
	if err != nil {
		t.Fatal(err)
	}
	w.n.cuts++
	w.history = append(w.history, fmt.Sprintf("cut %d %s tear=%t %+v", w.n.cuts, dev, tear, r))
	if creation {
		w.n.creationCuts++
	}
	if r.Torn {
		w.n.torn++
	}
}

// work taps at two doors, runs an uplink against the ledger and applies
// state updates until the power goes.
func (w *world) work(dev string, q *queue.Queue, a *agent.Agent, power <-chan struct{}) {
	on := func() bool {
		select {
		case <-power:
			return false
		default:
			return true
		}
	}
	var wg sync.WaitGroup
	for door := range 2 {
		rnd := rand.New(rand.NewPCG(w.rnd.Uint64(), uint64(door)))
		wg.Go(func() {
			for on() {
				w.mu.Lock()
				var text string
				if rnd.IntN(8) == 0 && len(w.codes) > 0 {
					for h := range w.codes { // an already-green code, shown again
						if w.green[h].dev == dev {
							text = w.codes[h]
						}
						break
					}
				}
				w.mu.Unlock()
				again := text != ""
				if !again {
					// Each door has its own riders (a Rider is not safe for
					// concurrent use).
					half := len(w.riders) / 2
					text = w.riders[door*half+rnd.IntN(half)].Code(w.t, time.Now())
				}
				out := a.Tap(context.Background(), scanner.Frame{Scanner: fmt.Sprint("door-", door), Text: text, Time: time.Now()})
				h := paycode.ShortHash(text)
				if out.Reason == record.ReasonInternal {
					// The power went (the disk answers EIO from the moment
					// it is frozen, a moment before power is closed).
					select {
					case <-power:
					case <-time.After(10 * time.Second):
					}
				}
				w.mu.Lock()
				w.n.taps++
				switch {
				case out.Accepted && again:
					w.t.Errorf("%s: a code already paid was accepted again (%s)", dev, h)
				case out.Accepted:
					w.green[h] = tapRef{dev, q.Epoch(), out.Seq}
					w.codes[h] = text
				case again && (out.Reason == record.ReasonDuplicate || out.Reason == record.ReasonCodeUsed):
					// Already paid (a re-read at its door) or code used
					// (at the other door, or after the re-read window).
					w.n.retapRefused++
				case out.Reason == record.ReasonInternal && !on():
					w.cutOff[h] = true
				default:
					w.t.Errorf("%s: tap refused: %s (power on: %t)", dev, out.Reason, on())
				}
				w.mu.Unlock()
			}
		})
	}
	wg.Go(func() { // the uplink: commit to the ledger first, then ack
		for i := 0; on(); i++ {
			recs, err := q.Peek(1+i%12, 0)
			if err != nil || len(recs) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			for _, r := range recs {
				w.settle(dev, q.Epoch(), r.Seq, r.Data)
			}
			if i%2 == 0 {
				_, err = q.Ack(seqs(recs)...)
			} else {
				_, err = q.AckThrough(recs[len(recs)-1].Seq)
			}
			if err == nil {
				w.mu.Lock()
				w.n.batches++
				w.mu.Unlock()
				if i%5 == 0 {
					a.SyncSucceeded()
				}
			}
		}
	})
	wg.Go(func() { // the fleet's downlinks
		for i := 0; on(); i++ {
			time.Sleep(time.Duration(2+i%5) * time.Millisecond)
			kind, body := record.DocDenyList, []byte(nil)
			v := a.Versions()[kind] + 1
			if i%3 == 2 {
				kind = record.DocFares
				v = a.Versions()[kind] + 1
				body = fares(v)
			} else {
				body = mustJSON(w.t, record.DenyList{Version: v, Entries: []record.DenyEntry{{Account: 9000 + v}}})
			}
			if err := a.Apply(kind, v, body); err == nil {
				w.mu.Lock()
				w.acked[dev][kind] = v
				if kind == record.DocFares {
					w.n.faresApplied++
				} else {
					w.n.denyApplied++
				}
				w.mu.Unlock()
			}
			if i%4 == 0 {
				a.Prune()
			}
		}
	})
	wg.Wait()
}

// settle is the server side: a record committed to the ledger, idempotent
// on its tap id, never a second time for one code.
func (w *world) settle(dev, epoch string, seq uint64, rec []byte) {
	tap, err := record.ParseTap(rec)
	if err != nil {
		w.t.Errorf("%s/%d: unreadable record: %v", dev, seq, err)
		return
	}
	h := paycode.ShortHash(paycode.EncodeText(tap.Code))
	ref := tapRef{dev, epoch, seq}
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.ledger[ref]; ok {
		if old != h {
			w.t.Errorf("tap id %s settled for two codes (%s, %s): a sequence number was reused", ref, old, h)
		}
		return
	}
	if other, ok := w.settled[h]; ok {
		w.t.Errorf("code %s settled twice, as %s and %s", h, other, ref)
		return
	}
	w.ledger[ref], w.settled[h] = h, ref
}

// check inspects a device right after it booted on what a cut left.
func (w *world) check(dev string, q *queue.Queue, a *agent.Agent) {
	t := w.t
	v, err := powercut.InspectValidator(q)
	if err != nil {
		t.Fatalf("%s: reading the queue after a cut: %v", dev, err)
	}
	for _, p := range v.Problems {
		t.Errorf("%s after a cut: %s", dev, p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	inQueue := map[string]tapRef{}
	for seq, r := range v.Records {
		ref := tapRef{dev, v.Epoch, seq}
		if old, ok := w.records[ref]; ok && old != r.CodeHash {
			t.Errorf("%s: sequence number reused: once code %s, now %s", ref, old, r.CodeHash)
		}
		w.records[ref] = r.CodeHash
		inQueue[r.CodeHash] = ref
	}
	for h, ref := range w.green {
		if ref.dev != dev {
			continue
		}
		if got, ok := inQueue[h]; ok {
			if got != ref {
				t.Errorf("green tap %s is queued as %s", ref, got)
			}
		} else if _, ok := w.settled[h]; !ok {
			t.Errorf("green tap %s (code %s) is neither queued nor in the ledger after a cut (last seq %d); last cuts:\n%s",
				ref, h, v.LastSeq, strings.Join(w.history[max(0, len(w.history)-3):], "\n"))
		}
		if ref.epoch == v.Epoch && ref.seq > v.LastSeq {
			t.Errorf("green tap %s is above the queue's last sequence number %d", ref, v.LastSeq)
		}
		w.n.greenChecked++
	}
	for kind, ver := range w.acked[dev] {
		if have := v.Versions[kind]; have < ver {
			t.Errorf("%s: %s version %d was applied, but after the cut the device has %d", dev, kind, ver, have)
		}
		if have := a.Versions()[kind]; have != v.Versions[kind] {
			t.Errorf("%s: the agent loaded %s version %d, the file holds %d", dev, kind, have, v.Versions[kind])
		}
	}
}

// drain boots every device once more and delivers everything.
func (w *world) drain() {
	t := w.t
	entries, err := os.ReadDir(w.d.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		dev := e.Name()
		q, a, err := w.open(dev)
		if err != nil {
			t.Fatalf("%s: %v", dev, err)
		}
		w.check(dev, q, a)
		for {
			recs, err := q.Peek(100, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				w.settle(dev, q.Epoch(), r.Seq, r.Data)
			}
			if _, err := q.Ack(seqs(recs)...); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for h, ref := range w.green {
		if got, ok := w.settled[h]; !ok || got != ref {
			t.Errorf("green tap %s settled as %v (%t)", ref, got, ok)
		}
	}
	for h, ref := range w.settled {
		_, green := w.green[h]
		switch {
		case green:
		case w.cutOff[h]:
			w.n.cutOffSettled++
		default:
			t.Errorf("tap %s (code %s) is in the ledger but never got a green light", ref, h)
		}
	}
}

func seqs(recs []queue.Record) []uint64 {
	s := make([]uint64, len(recs))
	for i, r := range recs {
		s[i] = r.Seq
	}
	return s
}

func fares(version uint64) []byte {
	return fmt.Appendf(nil, `{"version": %d, "currency": "EUR", "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}}}`, version)
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func syncDirT(tb testing.TB, dir string) {
	tb.Helper()
	f, err := os.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
}
