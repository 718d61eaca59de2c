package ledger

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// crashEnv passes the database to the child process of TestCrashMidCommit.
const crashEnv = "FAREGO_LEDGER_CRASH_DSN"

const crashBatch = 10

// crashScenario is the scenario both processes of the crash test use.
func crashScenario(tb testing.TB) (*scenario, [][]Tap) {
	sc := genScenario(tb, rand.New(rand.NewPCG(5, 5)), 10, 3, 8)
	var batches [][]Tap
	for i := 0; i < len(sc.taps); i += crashBatch {
		batches = append(batches, sc.taps[i:min(i+crashBatch, len(sc.taps))])
	}
	return sc, batches
}

// A settlement process killed with SIGKILL in the middle of committing
// leaves whole batches or nothing: every acknowledged batch is there, no
// batch is there in part, the invariants hold, and redelivering everything
// (as the devices will) ends in the model's result.
func TestCrashMidCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		sc, batches := crashScenario(t)
		s := db.open(t, scenarioOptions)
		sc.setUp(t, s)

		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+db.dsn)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := 0
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			if n, ok := strings.CutPrefix(lines.Text(), "acked "); ok {
				acked, _ = strconv.Atoi(n)
			}
			if acked >= len(batches)/3 {
				break
			}
		}
		// Kill it while it is committing the following batches.
		cmd.Process.Kill()
		cmd.Wait()
		if acked == 0 {
			t.Fatalf("child acknowledged nothing; stderr:\n%s", stderr.String())
		}

		n, err := s.TapCount(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n < int64(acked*crashBatch) {
			t.Errorf("%d taps stored, but %d batches of %d were acknowledged", n, acked, crashBatch)
		}
		if n%crashBatch != 0 && n != int64(len(sc.taps)) {
			t.Errorf("%d taps stored: a batch of %d is there in part", n, crashBatch)
		}
		if err := s.CheckInvariants(context.Background()); err != nil {
			t.Errorf("after the crash: %v", err)
		}
		t.Logf("killed after %d acknowledged batches, %d taps stored", acked, n)
		for _, b := range batches {
			commit(t, s, b...)
		}
		sc.verify(t, s)
	})
}

// TestCrashChild is the process TestCrashMidCommit kills: it commits the
// crash scenario's batches in order and prints "acked N" after each.
func TestCrashChild(t *testing.T) {
	dsn := os.Getenv(crashEnv)
	if dsn == "" {
		t.Skip("the child process of TestCrashMidCommit")
	}
	_, batches := crashScenario(t)
	s, err := Open(context.Background(), dsn, scenarioOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range batches {
		if _, err := s.CommitTaps(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("acked %d\n", i+1)
	}
}
