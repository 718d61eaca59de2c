package brokertest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, failing the test after
// timeout with what it was waiting for.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Logger returns a logger writing to the test log when the test runs
// verbose (until it ends), at debug level when FAREGO_TEST_DEBUG is set.
// A fuzz test's logger discards: the code it logs for runs in the fuzz
// target, where f.Log panics ("use t.Log instead"; FuzzHandle failed so
// under go test -v).
func Logger(tb testing.TB) *slog.Logger {
	if _, fuzz := tb.(*testing.F); fuzz {
		return slog.New(slog.DiscardHandler)
	}
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() { w.done.Store(true) })
	level := slog.LevelInfo
	if os.Getenv("FAREGO_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tbWriter struct {
	tb   testing.TB
	done atomic.Bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	if !w.done.Load() && testing.Verbose() {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// UniqueName returns prefix + 8 random hex digits (client ids, topic
// prefixes that must not meet another test's on a shared broker).
func UniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// NewKey returns a new Ed25519 key (a device's or the fleet's).
func NewKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Running is a Run(ctx) error of a test's own (an uplink, an ingest, a
// publisher), started by Go.
type Running struct {
	cancel context.CancelFunc
	done   chan error
}

// Go runs run until Stop or the end of the test; at the end a Run that
// returned an error, or did not return within timeout of its context's
// end, fails the test.
func Go(tb testing.TB, timeout time.Duration, run func(ctx context.Context) error) *Running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	tb.Cleanup(func() {
		if err := r.Stop(timeout); err != nil {
			tb.Errorf("Run = %v, want nil", err)
		}
	})
	return r
}

// Stop cancels Run's context and returns what Run returned (an error if it
// does not return within timeout); stopping again returns nil.
func (r *Running) Stop(timeout time.Duration) error {
	r.cancel()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err, ok := <-r.done:
		if !ok {
			return nil
		}
		close(r.done)
		return err
	case <-t.C:
		return errors.New("brokertest: run did not return after its context was cancelled")
	}
}
