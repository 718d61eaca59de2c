package powercut_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// TestValidatorDiskFull: the validator's disk fills up (a log gone wild, a
// card worn out) while riders tap. The queue file cannot grow: the tap that
// needed it is refused (internal, red "out of service"), nothing of it is
// recorded, and the validator says it is out of service and why (its
// status used to say "in service" while every rider was refused). When
// space is freed, the same rider's code is taken and charged once (not
// "code used"), and the validator is back in service.
func TestValidatorDiskFull(t *testing.T) {
	d := powercut.Mount(t, nil)
	if err := os.Mkdir(d.Path("dev"), 0o700); err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(filepath.Join(d.Path("dev"), "validator.db"),
		&queue.Options{MaxFileSize: 4 << 20, InitialMmapSize: 64 << 10, FirstSeq: uint64(time.Now().UnixMilli())})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var changes atomic.Int32
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "dev", Route: "42", Vehicle: "bus-1",
		PassbackWindow: -1, RiskCap: -1, ServiceChanged: func() { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	issuer := paycodetest.NewIssuer(t, 7, time.Now())
	if err := errors.Join(a.Seed(record.DocKeyring, mustJSON(t, issuer.Keyring)), a.Seed(record.DocFares, fares(1))); err != nil {
		t.Fatal(err)
	}
	tap := func(code string) agent.Outcome {
		return a.Tap(context.Background(), scanner.Frame{Scanner: "door-1", Text: code, Time: time.Now()})
	}
	accepted := 0
	for i := range 10 {
		if out := tap(issuer.Rider(t, uint64(1000+i), time.Now()).Code(t, time.Now())); !out.Accepted {
			t.Fatalf("tap %d before the disk filled: %+v", i, out)
		}
		accepted++
	}

	if err := d.Full(true); err != nil {
		t.Fatal(err)
	}
	// Taps go on into the file's free pages until it must grow.
	var refused string
	for i := 10; i < 5000 && refused == ""; i++ {
		code := issuer.Rider(t, uint64(1000+i), time.Now()).Code(t, time.Now())
		switch out := tap(code); {
		case out.Accepted:
			accepted++
		case out.Reason == record.ReasonInternal:
			refused = code
		default:
			t.Fatalf("tap %d on a full disk: %+v", i, out)
		}
	}
	if refused == "" {
		t.Fatal("5,000 taps on a full disk and the queue file never had to grow")
	}
	status := a.OutOfService()
	if !strings.HasPrefix(status, string(record.ReasonInternal)+":") || !strings.Contains(status, "no space left") {
		t.Errorf("status on a full disk: %q; want out of service, saying why", status)
	}
	if changes.Load() == 0 {
		t.Error("going out of service was not signalled (ServiceChanged)")
	}
	// Riders go on trying: the status keeps saying since when the
	// validator is out of service (each refused tap moved "since" to its
	// own time: a bus out of service all morning said "since" the last
	// rider's try, and nobody could tell how long it had been).
	time.Sleep(1100 * time.Millisecond)
	if out := tap(refused); out.Reason != record.ReasonInternal {
		t.Errorf("the refused code again on the full disk: %+v; want internal", out)
	}
	if s := a.OutOfService(); s != status {
		t.Errorf("status after another refused tap a second later: %q; want it unchanged, since the first: %q", s, status)
	}

	if err := d.Full(false); err != nil {
		t.Fatal(err)
	}
	if out := tap(refused); !out.Accepted {
		t.Fatalf("the refused rider's code after space was freed: %+v; want charged now", out)
	}
	accepted++
	if s := a.OutOfService(); s != "" {
		t.Errorf("status after a tap was recorded again: %q; want in service", s)
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != accepted {
		t.Errorf("%d records queued; want the %d green taps, each once", st.Count, accepted)
	}
	if err := q.Check(); err != nil {
		t.Errorf("the queue file after the disk was full: %v", err)
	}
	t.Logf("%d taps recorded; the queue file (%d bytes) filled the disk; the refused rider was charged once after space was freed", accepted, st.FileSize)
}
