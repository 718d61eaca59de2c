package rig

import (
	"context"
	"errors"
	"fmt"
	"github.com/farego/farego/agent/record"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
)

// TestValidatorPowerCutsProcesses runs a real farego-validator process
// whose data directory is on a power-cut disk (it makes the directory
// itself, as on first boot), feeds taps through its pseudo-terminal, and
// cuts the power at random moments: while it boots and makes its queue
// file, in the middle of a tap, while the uplink sends, acks and prunes, and
// while a new deny list arrives. A power cut is SIGKILL plus the disk
// discarding whatever was not fsynced. After each cut, on a copy of what
// survived: every tap that got a green light (ACCEPTED on the console) is
// still queued or in the ledger, no sequence number is reused, the device
// state agrees with the queue (powercut.InspectValidator), every deny list
// the validator logged as applied is still there, and the bbolt file passes
// its check. Finally everything drains and the ledger holds exactly the
// green taps, and farego-settlement verify is clean.
func TestValidatorPowerCutsProcesses(t *testing.T) {
	cuts := 40
	if testing.Short() {
		cuts = 8
	}
	disk := powercut.Mount(t, &powercut.Options{Seed: 3})
	r, ctx := newRig(t)
	dev, err := r.Provision(ctx, "cut-0", "42")
	must(t, err)
	defer dev.Close()
	dataDir := disk.Path("var", "lib", "farego")
	must(t, dev.SetPolicy("passback_window", `"-1s"`))
	must(t, dev.SetPolicy("risk_cap", "-1"))
	must(t, dev.SetConfig("data_dir", strconv.Quote(dataDir)))
	must(t, dev.AppendConfig("[queue]\nmax_file_size = 4194304"))
	riders := newRiders(t, ctx, r, 8, 1_000_000)
	denied, err := r.NewAPIRider(ctx, "adult", 0)
	must(t, err)
	rnd := rand.New(rand.NewPCG(19, 19))
	c := newCutChecker(t, r, riders, dev.ID)
	var bootCuts, midTap, denyUpdates, torn, discarded, killed int
	for i := range cuts {
		if i == 0 {
			// First boot: it makes its data directory and queue file, and
			// the power goes meanwhile (or just after).
			if err := dev.StartKilled(ctx, time.Duration(20+rnd.IntN(200))*time.Millisecond); err != nil {
				bootCuts++
			}
		} else {
			must(t, dev.Start(ctx))
		}
		if i > 0 {
			for range rnd.IntN(5) {
				rd := riders[rnd.IntN(len(riders))]
				code := rd.Code(time.Now())
				line, err := dev.Scan(ctx, code)
				if err != nil {
					t.Fatalf("cut %d: %v", i, err)
				}
				c.feedback(code, line)
			}
			if rnd.IntN(3) == 0 { // a new deny-list version: deny or lift an account that does not ride
				method := map[bool]string{true: "POST", false: "DELETE"}[denyUpdates%2 == 0]
				must(t, r.API(ctx, method, "/v1/denylist", map[string]any{"account": denied.ID, "reason": "power_cut_test"}, nil))
				denyUpdates++
				time.Sleep(time.Duration(rnd.IntN(60)) * time.Millisecond)
			}
			if rnd.IntN(4) == 0 {
				// Killed and started again (a crash, the watchdog)
				// before this cut: what the killed one wrote and did not
				// sync is in the page cache, and the next start must make
				// what it builds on durable before it answers.
				dev.Stop(true)
				for l := range dev.Lines {
					c.feedback("", l)
				}
				must(t, dev.Start(ctx))
				killed++
				for range 1 + rnd.IntN(3) {
					code := riders[rnd.IntN(len(riders))].Code(time.Now())
					line, err := dev.Scan(ctx, code)
					if err != nil {
						t.Fatalf("cut %d, after a kill: %v", i, err)
					}
					c.feedback(code, line)
				}
			}
			switch rnd.IntN(3) {
			case 0: // in the middle of a tap
				code := riders[rnd.IntN(len(riders))].Code(time.Now())
				must(t, dev.Write(code))
				time.Sleep(time.Duration(rnd.IntN(12000)) * time.Microsecond)
				c.inFlight(code)
				midTap++
			case 1: // while the uplink sends, acks and prunes
				time.Sleep(time.Duration(rnd.IntN(300)) * time.Millisecond)
			}
		}
		dev.Stop(true)
		for l := range dev.Lines { // what it said before the power went
			c.feedback("", l)
		}
		c.settleInFlight()
		rep, err := disk.Cut(rnd.IntN(2) == 0)
		must(t, err)
		if rep.Torn {
			torn++
		}
		if rep.FilesRolledBack+rep.EntriesDiscarded+rep.FilesRemoved > 0 {
			discarded++
		}
		c.check(ctx, fmt.Sprintf("cut %d", i+1), filepath.Join(dataDir, "validator.db"), filepath.Join(dev.Dir, "validator.log"))
	}

	must(t, dev.Start(ctx))
	c.drain(ctx, []*Device{dev})
	dev.Stop(false)
	c.check(ctx, "after the drain", filepath.Join(dataDir, "validator.db"), filepath.Join(dev.Dir, "validator.log"))
	t.Logf("validator power cuts: %d survived (%d while it booted and made its queue file, %d in the middle of a tap, %d after a kill and a restart, %d tore a page, %d discarded unsynced data or entries), %d deny-list updates; "+
		"%d taps, %d green; checks after every cut: %d green taps found queued or in the ledger, %d documents and deny-list shards logged as applied found; "+
		"ledger: %d rides, exactly the green ones (+%d of %d cut off mid-tap)",
		cuts, bootCuts, midTap, killed, torn, discarded, denyUpdates, c.taps, len(c.green), c.greenChecked, c.appliedChecked, c.rides, c.cutOffSettled, len(c.cutOff))
	if denyUpdates > 0 && c.appliedChecked == 0 {
		t.Errorf("%d deny-list updates, yet no document the validator logged as applied was checked after a cut", denyUpdates)
	}
	// Whole processes are mostly idle between fsyncs (the in-process test
	// hits unsynced work in about half its cuts): require that the cuts bit
	// at all, by discarding something or cutting a tap off.
	if discarded+len(c.cutOff) == 0 {
		t.Errorf("no cut discarded anything or cut a tap off: the cuts are not hitting unsynced work")
	}
}

// cutChecker keeps what the riders saw and checks what survives each cut.
type cutChecker struct {
	t      *testing.T
	r      *Rig
	riders []*APIRider
	device string

	mu            sync.Mutex
	green         map[string]bool   // code hash → the rider saw green
	cutOff        map[string]bool   // taps in flight when the power went, with no answer
	pending       string            // the tap in flight, if any
	records       map[string]string // epoch/seq → code hash, every record ever seen
	taps          int
	greenChecked  int
	rides         int
	cutOffSettled int
	// appliedChecked counts the documents (and deny-list shards) the
	// validator logged as applied, found after a cut.
	appliedChecked int
}

func newCutChecker(t *testing.T, r *Rig, riders []*APIRider, device string) *cutChecker {
	return &cutChecker{t: t, r: r, riders: riders, device: device,
		green: map[string]bool{}, cutOff: map[string]bool{}, records: map[string]string{}}
}

// feedback classifies a console line; code is the tap's text, or "" for
// the answer to the tap in flight.
func (c *cutChecker) feedback(code, line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if code == "" {
		if c.pending == "" {
			return
		}
		code = c.pending
	}
	h := paycode.ShortHash(code)
	switch {
	case strings.Contains(line, "ACCEPTED"):
		c.green[h] = true
	case code == c.pending:
	default:
		c.t.Errorf("tap refused: %q", line)
	}
	if code == c.pending {
		c.pending = ""
	} else {
		c.taps++
	}
}

func (c *cutChecker) inFlight(code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = code
	c.taps++
}

// settleInFlight: a tap with no answer before the power went may be
// recorded or not.
func (c *cutChecker) settleInFlight() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != "" {
		c.cutOff[paycode.ShortHash(c.pending)] = true
		c.pending = ""
	}
}

// ledger returns the rides in the ledger: code hash → tap ids.
func (c *cutChecker) ledger(ctx context.Context) map[string][]string {
	out := map[string][]string{}
	for _, rd := range c.riders {
		rides, err := c.r.Rides(ctx, rd.ID)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, ride := range rides {
			out[ride.CodeHash] = append(out[ride.CodeHash], ride.TapID)
		}
	}
	return out
}

// inspectCopy opens a copy of a validator's queue file (the process that
// owns it may be running) and inspects it; nil if there is no file.
func inspectCopy(t *testing.T, path string) *powercut.Validator {
	t.Helper()
	src, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	must(t, err)
	defer src.Close()
	cp := filepath.Join(t.TempDir(), "validator.db")
	dst, err := os.Create(cp)
	must(t, err)
	_, err = io.Copy(dst, src)
	must(t, errors.Join(err, dst.Close()))
	q, err := queue.Open(cp, nil)
	if err != nil {
		t.Fatalf("the queue file after a cut: %v", err)
	}
	defer q.Close()
	v, err := powercut.InspectValidator(q)
	must(t, err)
	return v
}

// appliedRE matches a document the validator logged as applied, in its
// text log or its JSON one (the provisioned config's): a keyring, fare
// table or whole deny list ("device state updated"), or a deny-list shard
// ("deny-list shard updated", at debug level). The text form alone
// matched nothing in the JSON log: the check below was empty.
var appliedRE = regexp.MustCompile(`msg="device state updated".* kind=(\S+) version=(\d+)` +
	`|"msg":"device state updated".*"kind":"([^"]+)","version":(\d+)` +
	`|msg="deny-list shard updated".* shard=(\d+) version=(\d+)` +
	`|"msg":"deny-list shard updated".*"shard":(\d+),"version":(\d+)`)

// appliedDocs returns each document version a validator's log says it
// applied, by kind (a deny-list shard's under record.DenyShardKey).
func appliedDocs(log string) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range appliedRE.FindAllStringSubmatch(log, -1) {
		for g := 1; g < len(m); g += 2 {
			if m[g] == "" {
				continue
			}
			kind := m[g]
			if g >= 5 { // a shard's number
				n, _ := strconv.Atoi(m[g])
				kind = record.DenyShardKey(n)
			}
			ver, _ := strconv.ParseUint(m[g+1], 10, 64)
			out[kind] = max(out[kind], ver)
		}
	}
	return out
}

// check looks at what survived a cut, on a copy of the queue file.
func (c *cutChecker) check(ctx context.Context, when, queueFile, logFile string) {
	t := c.t
	v := inspectCopy(t, queueFile)
	ledger := c.ledger(ctx)
	inQueue := map[string]bool{}
	if v != nil {
		for _, p := range v.Problems {
			t.Errorf("%s: %s", when, p)
		}
		for seq, rec := range v.Records {
			key := v.Epoch + "/" + strconv.FormatUint(seq, 10)
			if old, ok := c.records[key]; ok && old != rec.CodeHash {
				t.Errorf("%s: sequence number %d reused: once code %s, now %s", when, seq, old, rec.CodeHash)
			}
			c.records[key] = rec.CodeHash
			inQueue[rec.CodeHash] = true
			id := record.TapID(c.device, v.Epoch, seq)
			for h, ids := range ledger {
				for _, lid := range ids {
					if lid == id && h != rec.CodeHash {
						t.Errorf("%s: tap id %s is code %s in the ledger but code %s on the device", when, id, h, rec.CodeHash)
					}
				}
			}
		}
		// Every document the validator logged as applied is still there.
		if b, err := os.ReadFile(logFile); err == nil {
			for kind, ver := range appliedDocs(string(b)) {
				if v.Versions[kind] < ver {
					t.Errorf("%s: %s version %d was applied, the device has %d", when, kind, ver, v.Versions[kind])
				}
				c.appliedChecked++
			}
		}
	}
	for h := range c.green {
		if !inQueue[h] && len(ledger[h]) == 0 {
			t.Errorf("%s: green tap (code %s) is neither queued nor in the ledger", when, h)
		}
		c.greenChecked++
	}
}

// drain waits until the ledger holds every green tap and the validators'
// queues are empty, then checks the ledger against the green lights.
func (c *cutChecker) drain(ctx context.Context, devs []*Device) {
	t := c.t
	must(t, WaitFor(ctx, 3*time.Minute, "every green tap in the ledger", func() bool {
		l := c.ledger(ctx)
		for h := range c.green {
			if len(l[h]) == 0 {
				return false
			}
		}
		return true
	}))
	must(t, WaitFor(ctx, 2*time.Minute, "the validator queues drained", func() bool {
		ds, err := c.r.Devices(ctx)
		if err != nil {
			return false
		}
		for _, d := range ds {
			if !d.Online || d.QueueDepth != 0 {
				return false
			}
		}
		return len(ds) >= len(devs)
	}))
	for h, ids := range c.ledger(ctx) {
		c.rides += len(ids)
		switch {
		case len(ids) != 1:
			t.Errorf("code %s is in the ledger %d times: %v", h, len(ids), ids)
		case c.green[h]:
		case c.cutOff[h]:
			c.cutOffSettled++
		default:
			t.Errorf("tap %s (code %s) is in the ledger but never got a green light", ids[0], h)
		}
	}
	l := c.ledger(ctx)
	for h := range c.green {
		if len(l[h]) != 1 {
			t.Errorf("green code %s is in the ledger %d times", h, len(l[h]))
		}
	}
	out, err := c.r.Verify(ctx)
	if err != nil {
		t.Errorf("farego-settlement verify: %v", err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
}

// TestSettlementPowerCuts puts the settlement server's data directory
// (SQLite ledger in WAL mode with synchronous=FULL, and its keys) on a
// power-cut disk, made there by farego-settlement init, and cuts the power
// right after init, after accounts, top-ups and devices were registered,
// and at random moments while two validators' batches arrive. After each
// cut the server must start on what survived; every tap a validator holds
// as acked (its archive) must be in the ledger; farego-settlement verify
// must be clean. Finally everything drains: the ledger holds exactly the
// green taps, none flagged.
func TestSettlementPowerCuts(t *testing.T) {
	cuts := 12
	if testing.Short() {
		cuts = 4
	}
	disk := powercut.Mount(t, &powercut.Options{Seed: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r := New(dir, binDir, nil)
	r.ServerData = disk.Path("srv", "farego")
	defer func() {
		r.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil {
				t.Logf("server.log (tail):\n%s", tail(string(b), 40))
			}
		}
	}()
	var acked, tornCuts, discarded, n int
	cut := func(when string) {
		t.Helper()
		must(t, r.StopServer(true))
		rep, err := disk.Cut(n%2 == 1)
		must(t, err)
		n++
		if rep.Torn {
			tornCuts++
		}
		if rep.FilesRolledBack+rep.EntriesDiscarded+rep.FilesRemoved > 0 {
			discarded++
		}
		if err := r.StartServer(ctx); err != nil {
			t.Fatalf("power cut %s: the server does not start on what survived: %v", when, err)
		}
		if out, err := r.Verify(ctx); err != nil {
			t.Errorf("power cut %s: %v", when, err)
		} else if n == 1 {
			t.Log(strings.TrimSpace(out))
		}
	}
	must(t, r.Init(ctx, chaosFares))
	// The first cut comes right after init, before the server ever ran:
	// keys, ledger and fare table must all be there.
	must(t, disk.Freeze())
	rep, err := disk.Cut(false)
	must(t, err)
	n++
	if rep.FilesRolledBack+rep.EntriesDiscarded+rep.FilesRemoved > 0 {
		discarded++
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatalf("power cut after init: the server does not start on what survived: %v", err)
	}

	riders := newRiders(t, ctx, r, 8, 1_000_000)
	devs := make([]*Device, 2)
	for i := range devs {
		devs[i], err = r.Provision(ctx, fmt.Sprintf("srvcut-%d", i), "42")
		must(t, err)
		must(t, devs[i].SetPolicy("passback_window", `"-1s"`))
		must(t, devs[i].SetPolicy("risk_cap", "-1"))
		defer devs[i].Close()
	}
	cut("after accounts, top-ups and devices were registered")
	for _, d := range devs {
		must(t, d.Start(ctx))
	}

	c := newCutChecker(t, r, riders, "")
	var gate sync.RWMutex // held by the cutter while the power is off and it checks
	stop := make(chan struct{})
	var feeders sync.WaitGroup
	for i, d := range devs {
		feeders.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 77))
			for {
				select {
				case <-stop:
					return
				default:
				}
				gate.RLock()
				code := riders[rnd.IntN(len(riders))].Code(time.Now())
				line, err := d.Scan(ctx, code)
				gate.RUnlock()
				if err != nil {
					t.Error(err)
					return
				}
				c.feedback(code, line)
				time.Sleep(time.Duration(5+rnd.IntN(40)) * time.Millisecond)
			}
		})
	}
	rnd := rand.New(rand.NewPCG(23, 23))
	killed := 0
	for i := range cuts {
		time.Sleep(time.Duration(200+rnd.IntN(1200)) * time.Millisecond)
		when := fmt.Sprintf("%d while batches arrive", i+1)
		if i%2 == 1 {
			// Every other cut comes some time after the server was
			// killed and started again (a crash, the OOM killer): what
			// the killed one wrote and did not sync is in the page cache,
			// and the next one must not answer for it before it is on
			// the disk.
			gate.Lock()
			must(t, r.StopServer(true))
			if err := r.StartServer(ctx); err != nil {
				t.Fatalf("kill before cut %d: the server does not start again: %v", i+1, err)
			}
			gate.Unlock()
			killed++
			when += ", the server killed and started again before"
			time.Sleep(time.Duration(rnd.IntN(600)) * time.Millisecond)
		}
		gate.Lock()
		cut(when)
		// Every tap a validator holds as acked is in the ledger. The
		// validators' uplinks keep running against the restarted server:
		// read their queues first, the ledger after, so that a tap acked in
		// between is found in the ledger too (the other order would report
		// it as missing).
		views := make([]*powercut.Validator, len(devs))
		for i, d := range devs {
			views[i] = inspectCopy(t, d.QueueFile())
		}
		inLedger := map[string]bool{}
		for _, ids := range c.ledger(ctx) {
			for _, id := range ids {
				inLedger[id] = true
			}
		}
		for i, d := range devs {
			v := views[i]
			for _, p := range v.Problems {
				t.Errorf("%s: %s: %s", when, d.ID, p)
			}
			for seq, rec := range v.Records {
				if !rec.Archived {
					continue
				}
				acked++
				if id := record.TapID(d.ID, v.Epoch, seq); !inLedger[id] {
					t.Errorf("power cut %s: %s was acked by the server but is not in the ledger", when, id)
				}
			}
		}
		gate.Unlock()
	}
	close(stop)
	feeders.Wait()
	c.drain(ctx, devs)
	for _, rd := range riders {
		rides, err := r.Rides(ctx, rd.ID)
		must(t, err)
		for _, ride := range rides {
			if ride.Flag != "" {
				t.Errorf("ride %s flagged %s", ride.TapID, ride.Flag)
			}
		}
	}
	t.Logf("settlement power cuts: %d survived (1 right after init, 1 after registrations, %d while batches arrived, %d of them some time after a kill and a restart; %d tore a page, %d discarded unsynced data or entries); "+
		"%d taps, %d green; %d acked taps checked against the ledger after the cuts; ledger: %d rides, exactly the green ones",
		n, cuts, killed, tornCuts, discarded, c.taps, len(c.green), acked, c.rides)
	if acked == 0 || discarded < n/2 {
		t.Errorf("the cuts did not bite: %d acked taps checked, %d of %d cuts discarded something", acked, discarded, n)
	}
}
