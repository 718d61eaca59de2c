package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
)

// freezeOn is a log handler that cuts the power of disk (Freeze) the first
// time a record with message msg is logged: a power cut at that exact step
// of the code that logs it.
type freezeOn struct {
	slog.Handler
	msg  string
	disk *powercut.Disk
	once *sync.Once
	err  *error
}

func (h freezeOn) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { *h.err = h.disk.Freeze() })
	}
	return h.Handler.Handle(ctx, r)
}

func (h freezeOn) WithAttrs(a []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(a)
	return h
}

func (h freezeOn) WithGroup(g string) slog.Handler {
	h.Handler = h.Handler.WithGroup(g)
	return h
}

// logWriter adds to the device's log text (shown if the test fails).
type logWriter struct{ d *device }

func (w logWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	return w.d.logText.Write(p)
}

// TestPowerCutDuringSalvageKeepsTheState: a damaged queue file is salvaged
// at start; the new queue file is made (durably) first, then the damaged
// file's taps are adopted and its device state (codes seen, per-account
// counters, documents) restored into it. The power goes right after the
// new file is made — a bus's ignition cycled again while the validator
// was booting after the cut that damaged the file. At the next start the
// new file is there, so the salvage ran as for a sound file, without the
// state: a code accepted before was accepted and charged again.
func TestPowerCutDuringSalvageKeepsTheState(t *testing.T) {
	disk := powercut.Mount(t, nil)
	d := newDevice(t, `passback_window = "-1s"`+"\nrisk_cap = -1", "")
	b, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(b), `data_dir = "data"`, `data_dir = "`+disk.Path("data")+`"`, 1)), 0o644))
	file := disk.Path("data", queueFile)

	d.start()
	var codes []string
	for i := range 60 {
		code := d.issuer.Rider(t, uint64(4300+i), time.Now()).Code(t, time.Now())
		expectLine(t, d.scan(code), "ACCEPTED")
		codes = append(codes, code)
	}
	d.stop()
	// One page of unsent taps zeroed (a flash fault), durably.
	ids, pageSize, err := queue.LeafPages(file, queue.PendingBucket)
	if err != nil || len(ids) < 3 {
		t.Fatalf("LeafPages = %v, %v", ids, err)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt(make([]byte, pageSize), int64(ids[1])*int64(pageSize))
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())

	// The salvage at start, as run does it, with the power going right
	// after the new queue file is made.
	cfg, err := loadConfig(d.cfgPath)
	must(t, err)
	var once sync.Once
	var ferr error
	log := slog.New(freezeOn{Handler: slog.NewTextHandler(logWriter{d}, nil), msg: "queue: opened", disk: disk, once: &once, err: &ferr})
	noWait := func(context.Context) error { return nil }
	qf, err := openQueue(context.Background(), cfg, log, time.Unix(0, 0), time.Now, noWait)
	must(t, ferr)
	if err == nil {
		qf.q.Close()
		t.Fatal("the salvage went through with the power off")
	}
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the new queue file did not survive the cut: %v", err)
	}

	d.start()
	for _, i := range []int{0, 30, 59} {
		expectRemembered(t, d.scan(codes[i]))
	}
	d.stop()
	if moved, _ := filepath.Glob(file + ".corrupt-*" + salvagedSuffix); len(moved) != 1 {
		t.Errorf("damaged file not marked salvaged: %v", moved)
	}
	q, err := queue.Open(file, nil)
	must(t, err)
	defer q.Close()
	if rep := lastSalvage(q); rep == nil || !rep.State {
		t.Errorf("salvage report %+v: the device state was not restored", rep)
	}
}
