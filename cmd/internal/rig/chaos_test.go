package rig

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
)

// Every ride costs its base fare: no transfers or caps, so a balance is
// top-up minus fare × rides.
const chaosFares = `{"version": 1, "currency": "EUR", "timezone": "UTC",
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}}}`

const chaosFare = 250

// tapLog classifies every tap a feeder made.
type tapLog struct {
	mu            sync.Mutex
	accepted      map[string]uint64 // code hash → account: the rider saw green
	indeterminate map[string]uint64 // the validator died before answering
	clockRefused  map[string]uint64 // refused while the validator's clock was off: never charged
	refused       []string          // anything else: must not happen here
}

func (l *tapLog) add(kind, hash string, acct uint64, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch kind {
	case "accepted":
		l.accepted[hash] = acct
	case "indeterminate":
		l.indeterminate[hash] = acct
	case "clock":
		l.clockRefused[hash] = acct
	default:
		l.refused = append(l.refused, line)
	}
}

// TestChaos is the Jepsen-style money test with real processes: a broker,
// a settlement server and two validators fed through pseudo-terminals, while
// about 2,000 taps flow and at least 20 faults hit (SIGKILL a validator
// mid-tap and restart it, restart the broker, SIGKILL the server and restart
// it, cut a validator's link, damage a stopped validator's queue file so
// that it is salvaged at the next start, jump a validator's clock two hours
// ahead and back). Afterwards: every tap that got green is in the ledger
// exactly once, nothing else is (a tap cut off by a kill may be there once,
// or not; a tap refused while the clock was off never is), every balance
// is top-up − fare × rides, the ledger's invariants hold, every queue
// (salvaged records included) is drained and every bbolt file is sound.
func TestChaos(t *testing.T) {
	tapsPerDevice, minFaults := 1000, 20
	if testing.Short() {
		tapsPerDevice, minFaults = 150, 6
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "farego-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("chaos run failed: its logs and data are kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	r := New(dir, binDir, nil)
	r.ExternalBroker = true
	defer r.Close()
	must(t, r.Init(ctx, chaosFares))
	must(t, r.StartBroker(ctx))
	must(t, r.StartServer(ctx))

	devs := make([]*Device, 2)
	for i := range devs {
		devs[i] = startDevice(t, ctx, r, fmt.Sprintf("chaos-%d", i), fast...)
		defer devs[i].Close() // before the run's directory goes
	}
	const topUp = 1_000_000
	riders := newRiders(t, ctx, r, 40, topUp)

	log := &tapLog{accepted: map[string]uint64{}, indeterminate: map[string]uint64{}, clockRefused: map[string]uint64{}}
	var faults atomic.Int64
	faultKinds := map[string]*atomic.Int64{}
	for _, k := range []string{"kill-validator", "restart-broker", "kill-server", "cut-link", "corrupt-queue", "clock-jump"} {
		faultKinds[k] = &atomic.Int64{}
	}
	count := func(kind string) { faults.Add(1); faultKinds[kind].Add(1) }
	kill := make([]chan struct{}, len(devs))    // the injector asks a feeder to kill its validator mid-tap
	corrupt := make([]chan struct{}, len(devs)) // … or to stop it, damage its queue file and start it again
	for i := range kill {
		kill[i], corrupt[i] = make(chan struct{}, 1), make(chan struct{}, 1)
	}
	// clockOff[i] is set while validator i's clock is (or may still be) off.
	clockOff := make([]atomic.Bool, len(devs))

	// Feeders: one per validator, tap by tap, classifying each outcome.
	var feeders sync.WaitGroup
	feedErr := make(chan error, len(devs))
	for i, d := range devs {
		feeders.Add(1)
		go func() {
			defer feeders.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 42))
			for n := range tapsPerDevice {
				rd := riders[(n*len(devs)+i)%len(riders)]
				code := rd.Code(time.Now())
				hash := paycode.ShortHash(code)
				select {
				case <-corrupt[i]:
					// A page of its archive (acked taps) is damaged while it
					// is off: the next start moves the file aside and
					// salvages its unsent taps, which must all settle.
					if err := d.Stop(false); err != nil {
						feedErr <- fmt.Errorf("%s: stop: %v", d.ID, err)
						return
					}
					ok, err := d.DamageQueue(queue.ArchiveBucket)
					if err != nil {
						feedErr <- fmt.Errorf("%s: damage: %v", d.ID, err)
						return
					}
					if ok {
						count("corrupt-queue")
					}
					if err := d.Start(ctx); err != nil {
						feedErr <- err
						return
					}
					continue
				case <-kill[i]:
					// Kill the validator while this tap is in flight.
					if err := d.Write(code); err != nil {
						feedErr <- err
						return
					}
					time.Sleep(time.Duration(rnd.IntN(3000)) * time.Microsecond)
					d.Stop(true)
					kind := "indeterminate"
					for l := range d.Lines { // what it said before it died
						if strings.Contains(l, "ACCEPTED") {
							kind = "accepted"
						}
					}
					log.add(kind, hash, rd.ID, "")
					count("kill-validator")
					if err := d.Start(ctx); err != nil {
						feedErr <- err
						return
					}
				default:
					line, err := d.Scan(ctx, code)
					if err != nil {
						feedErr <- fmt.Errorf("%s: %v", d.ID, err)
						return
					}
					switch {
					case strings.Contains(line, "ACCEPTED  2.50 EUR  Paid"):
						log.add("accepted", hash, rd.ID, line)
					case clockOff[i].Load():
						log.add("clock", hash, rd.ID, line)
					default:
						log.add("refused", hash, rd.ID, line)
					}
				}
				time.Sleep(time.Duration(20+rnd.IntN(40)) * time.Millisecond)
			}
		}()
	}
	tapsDone := make(chan struct{})
	go func() { feeders.Wait(); close(tapsDone) }()

	// Injector: a fault every 1 to 2.5 s until the taps are done and at
	// least minFaults have happened; the first two are a damaged queue
	// file and a clock jump, so that every run has both while taps flow.
	rnd := rand.New(rand.NewPCG(7, 7))
	done := false
	for round := 0; !done || faults.Load() < int64(minFaults); round++ {
		select {
		case <-tapsDone:
			done = true
		case err := <-feedErr:
			t.Fatal(err)
		case <-time.After(time.Duration(1000+rnd.IntN(1500)) * time.Millisecond):
		}
		if done && faults.Load() >= int64(minFaults) {
			break
		}
		f := rnd.IntN(6)
		switch round {
		case 0:
			f = 4
		case 1:
			f = 5
		}
		switch {
		case f == 0 && !done:
			select {
			case kill[rnd.IntN(len(devs))] <- struct{}{}:
			default:
			}
		case f == 4 && !done:
			select {
			case corrupt[rnd.IntN(len(devs))] <- struct{}{}:
			default:
			}
		case f == 5:
			// The clock jumps two hours ahead and back. The validator is
			// out of service meanwhile (it knows its offset from the
			// acks; a validator restarted just before may not, and then
			// refuses the codes as expired): either way nothing is charged.
			i := rnd.IntN(len(devs))
			clockOff[i].Store(true)
			must(t, devs[i].SetClockSkew(2*time.Hour))
			time.Sleep(time.Duration(2000+rnd.IntN(2000)) * time.Millisecond)
			must(t, devs[i].SetClockSkew(0))
			count("clock-jump")
			go func() {
				time.Sleep(2 * time.Second) // the validator reads its clock file once a second
				clockOff[i].Store(false)
			}()
		case f == 1:
			r.StopBroker()
			time.Sleep(time.Duration(rnd.IntN(1000)) * time.Millisecond)
			must(t, r.StartBroker(ctx))
			count("restart-broker")
		case f == 2:
			must(t, r.StopServer(true))
			time.Sleep(time.Duration(rnd.IntN(1000)) * time.Millisecond)
			must(t, r.StartServer(ctx))
			count("kill-server")
		default:
			d := devs[rnd.IntN(len(devs))]
			d.Link.Cut()
			count("cut-link")
			outage := time.Duration(1000+rnd.IntN(3000)) * time.Millisecond
			go func() {
				time.Sleep(outage)
				d.Link.Restore()
			}()
		}
	}
	select {
	case err := <-feedErr:
		t.Fatal(err)
	default:
	}
	for _, d := range devs {
		d.Link.Restore()
	}

	// Drain: wait until the ledger holds every green tap, then stop the
	// validators cleanly and look at their queues.
	want := len(log.accepted)
	err = WaitFor(ctx, 3*time.Minute, "every accepted tap in the ledger", func() bool {
		n := 0
		for _, rd := range riders {
			rides, err := r.Rides(ctx, rd.ID)
			if err != nil {
				return false
			}
			for _, ride := range rides {
				if _, ok := log.accepted[ride.CodeHash]; ok {
					n++
				}
			}
		}
		return n >= want
	})
	must(t, err)
	err = WaitFor(ctx, 2*time.Minute, "every validator queue drained", func() bool {
		ds, err := r.Devices(ctx)
		if err != nil || len(ds) != len(devs) {
			return false
		}
		for _, d := range ds {
			if !d.Online || d.QueueDepth != 0 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Error(err)
	}

	// The invariants.
	var problems []string
	inLedger := map[string]int{}
	rides := 0
	for _, rd := range riders {
		rs, err := r.Rides(ctx, rd.ID)
		must(t, err)
		paid := 0
		for _, ride := range rs {
			inLedger[ride.CodeHash]++
			if ride.Flag != "" {
				problems = append(problems, fmt.Sprintf("ride %s flagged %s", ride.TapID, ride.Flag))
			}
			if ride.Charge != chaosFare {
				problems = append(problems, fmt.Sprintf("ride %s charged %d, want %d", ride.TapID, ride.Charge, chaosFare))
			}
			paid++
		}
		rides += paid
		a, err := r.Account(ctx, rd.ID)
		must(t, err)
		if a.Balance != topUp-chaosFare*int64(paid) {
			problems = append(problems, fmt.Sprintf("account %d balance %d, want %d - %d × %d", rd.ID, a.Balance, topUp, chaosFare, paid))
		}
	}
	for h := range log.accepted {
		if inLedger[h] != 1 {
			problems = append(problems, fmt.Sprintf("accepted tap %s is in the ledger %d times", h, inLedger[h]))
		}
	}
	indeterminateSettled := 0
	for h, n := range inLedger {
		_, acc := log.accepted[h]
		_, ind := log.indeterminate[h]
		_, clk := log.clockRefused[h]
		switch {
		case n != 1:
			problems = append(problems, fmt.Sprintf("tap %s is in the ledger %d times", h, n))
		case clk:
			problems = append(problems, fmt.Sprintf("tap %s was refused while the clock was off but is in the ledger", h))
		case ind:
			indeterminateSettled++
		case !acc:
			problems = append(problems, fmt.Sprintf("tap %s is in the ledger but was never accepted", h))
		}
	}
	if len(log.refused) > 0 {
		problems = append(problems, fmt.Sprintf("%d taps refused, e.g. %q", len(log.refused), log.refused[0]))
	}
	if out, err := r.Verify(ctx); err != nil {
		problems = append(problems, "ledger verify: "+err.Error())
	} else {
		t.Log(strings.TrimSpace(out))
	}
	for _, d := range devs {
		if err := d.Stop(false); err != nil {
			problems = append(problems, fmt.Sprintf("%s did not stop cleanly: %v", d.ID, err))
		}
		q, err := queue.Open(d.QueueFile(), nil)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s queue: %v", d.ID, err))
			continue
		}
		st, _ := q.Stats()
		if st.Count != 0 || st.Adopted != 0 {
			problems = append(problems, fmt.Sprintf("%s queue holds %d unacked and %d salvaged records", d.ID, st.Count, st.Adopted))
		}
		if err := q.Check(); err != nil {
			problems = append(problems, fmt.Sprintf("%s queue check: %v", d.ID, err))
		}
		q.Close()
	}

	kinds := []string{}
	for k, v := range faultKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v.Load()))
	}
	t.Logf("chaos: %d taps (%d accepted, %d cut off by a kill, %d of those settled, %d refused while a clock was off), %d faults (%s); %d rides in the ledger",
		len(log.accepted)+len(log.indeterminate)+len(log.refused)+len(log.clockRefused), len(log.accepted), len(log.indeterminate),
		indeterminateSettled, len(log.clockRefused), faults.Load(), strings.Join(kinds, ", "), rides)
	if len(problems) > 0 {
		t.Errorf("invariants violated (%d):\n  %s", len(problems), strings.Join(problems[:min(len(problems), 30)], "\n  "))
	} else {
		t.Log("invariants: every accepted tap settled exactly once, no other tap settled, balances = top-ups - charges, ledger verified, queues drained and consistent")
	}
	if faults.Load() < int64(minFaults) {
		t.Errorf("only %d faults injected, want at least %d", faults.Load(), minFaults)
	}
}
