package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash tests re-execute the test binary as a child (TestMain sees
// crashModeEnv) that opens the queue and appends, or appends and acks,
// printing each outcome only after the call returned. The parent kills it
// with SIGKILL at a random moment, reopens the file and checks that
// everything the child reported is there, in order, exactly once, and that
// the file is consistent.
const (
	crashModeEnv  = "FAREGO_QUEUE_CRASH_MODE"  // "append" or "ack"
	crashPathEnv  = "FAREGO_QUEUE_CRASH_PATH"  // the queue file
	crashRoundEnv = "FAREGO_QUEUE_CRASH_ROUND" // round number, for unique data
	crashRounds   = 30
)

func TestCrashDuringAppend(t *testing.T) { runCrashRounds(t, "append") }

func TestCrashDuringAck(t *testing.T) { runCrashRounds(t, "ack") }

// crashChild is the child's main. It never returns normally before being
// killed, except after a safety limit so that an orphan cannot run forever.
func crashChild(mode, path string) int {
	round := os.Getenv(crashRoundEnv)
	q, err := Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		mu.Lock()
		defer mu.Unlock()
		os.Stdout.WriteString(line) // one write(2): a whole line or nothing
	}
	say("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				d := fmt.Sprintf("r%s-g%d-i%d", round, g, i)
				seq, err := q.Append(ctx, []byte(d))
				if err != nil {
					return
				}
				say("A %d %s", seq, d)
			}
		})
	}
	if mode == "ack" {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				recs, err := q.Peek(5, 0)
				if err != nil {
					return
				}
				if len(recs) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				var n int
				if i%2 == 0 {
					n, err = q.AckThrough(recs[len(recs)-1].Seq)
				} else {
					n, err = q.Ack(seqsOf(recs)...)
				}
				if err != nil || n != len(recs) {
					fmt.Fprintf(os.Stderr, "child ack: %d of %d, %v\n", n, len(recs), err)
					return
				}
				var b strings.Builder
				b.WriteString("K")
				for _, r := range recs {
					fmt.Fprintf(&b, " %d", r.Seq)
				}
				say("%s", b.String())
			}
		})
	}
	wg.Wait()
	q.Close()
	return 0
}

// emulators run a child test binary of another architecture when the test
// itself runs under user-mode emulation (go test -exec qemu-arm-static)
// and the kernel has no binfmt_misc entry to do it.
var emulators = map[string]string{"arm": "qemu-arm-static", "arm64": "qemu-aarch64-static"}

// startChild starts the test binary as a crash-test child, through the
// architecture's emulator if the kernel cannot run it directly.
func startChild(t *testing.T, exe string, env []string) (*exec.Cmd, io.Reader, *strings.Builder) {
	t.Helper()
	for _, argv := range [][]string{{exe}, {emulators[runtime.GOARCH], exe}} {
		if argv[0] == "" {
			break
		}
		cmd := exec.Command(argv[0], append(argv[1:], "-test.run=^$")...)
		cmd.Env = env
		stderr := new(strings.Builder)
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		err = cmd.Start()
		if err == nil {
			return cmd, out, stderr
		}
		if !errors.Is(err, syscall.ENOEXEC) {
			t.Fatalf("start child: %v", err)
		}
	}
	t.Skipf("cannot run a child %s test binary here (no binfmt_misc entry and no emulator in PATH)", runtime.GOARCH)
	return nil, nil, nil
}

// crashModel is what the children reported, across all rounds.
type crashModel struct {
	appended map[uint64]string // seq → data, for every "A" line
	acked    map[uint64]bool   // for every "K" line
	order    map[string]uint64 // "round-goroutine" → last seq seen, to check order
}

func runCrashRounds(t *testing.T, mode string) {
	if os.Getenv("FAREGO_QEMU") != "" {
		// qemu-user can deadlock forking a multithreaded emulated process
		// (the child hangs before exec, holding the emulator's locks); the
		// crash test's logic is architecture-independent and runs natively
		// in make test.
		t.Skip("crash tests spawn children; skipped under qemu-user emulation (make test-arm)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := tempPath(t)
	m := crashModel{appended: map[uint64]string{}, acked: map[uint64]bool{}, order: map[string]uint64{}}
	var epoch string
	var lastRoundMax uint64
	var killedBeforeReady int
	// readyAfter tracks how long a child takes to start and open the
	// queue, so that early kills land anywhere in that span.
	readyAfter := 100 * time.Millisecond
	for round := range crashRounds {
		env := append(os.Environ(), crashModeEnv+"="+mode, crashPathEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
		cmd, out, stderr := startChild(t, exe, env)
		started := time.Now()
		lines := make(chan string, 1<<16)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			s := bufio.NewScanner(out)
			for s.Scan() {
				lines <- s.Text()
			}
			close(lines)
		}()

		// The kill moment: in most rounds a random time after the child
		// is ready (appending or acking); in some, a random time after it
		// started (while it starts up or opens the file, or just after).
		sawReady := false
		if rand.IntN(5) == 0 {
			time.Sleep(rand.N(readyAfter + readyAfter/4))
		} else {
			for l := range lines {
				if l == "ready" {
					sawReady = true
					break
				}
			}
			if !sawReady {
				cmd.Wait()
				t.Fatalf("round %d: child ended before it was ready: %s", round, stderr.String())
			}
			readyAfter = (readyAfter + time.Since(started)) / 2
			time.Sleep(rand.N(50 * time.Millisecond))
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-readDone
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child was not killed (%v): %s", round, err, stderr.String())
		}

		var roundMin uint64 = 1<<64 - 1
		for l := range lines {
			switch f := strings.Fields(l); {
			case l == "ready":
				sawReady = true
			case len(f) == 3 && f[0] == "A":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				if _, dup := m.appended[seq]; dup {
					t.Fatalf("round %d: seq %d handed out twice", round, seq)
				}
				m.appended[seq] = f[2]
				roundMin = min(roundMin, seq)
				// f[2] is r<round>-g<g>-i<i>: seqs of one goroutine increase.
				g := f[2][:strings.LastIndex(f[2], "-")]
				if prev := m.order[g]; seq <= prev {
					t.Errorf("round %d: %s got seq %d after %d", round, f[2], seq, prev)
				}
				m.order[g] = seq
			case len(f) >= 2 && f[0] == "K":
				for _, s := range f[1:] {
					seq, _ := strconv.ParseUint(s, 10, 64)
					m.acked[seq] = true
				}
			default:
				t.Fatalf("round %d: bad line from child: %q", round, l)
			}
		}
		if !sawReady {
			killedBeforeReady++
		}
		if roundMin != 1<<64-1 && roundMin <= lastRoundMax {
			t.Errorf("round %d: seq %d not above the previous rounds' %d", round, roundMin, lastRoundMax)
		}
		lastRoundMax = m.verify(t, round, path, &epoch)
	}
	if len(m.appended) == 0 || (mode == "ack" && len(m.acked) == 0) {
		t.Errorf("children reported %d appends and %d acks in %d rounds; the test exercised nothing", len(m.appended), len(m.acked), crashRounds)
	}
	t.Logf("%d rounds: %d appends, %d acks reported, %d kills before the child was ready (it takes about %v)",
		crashRounds, len(m.appended), len(m.acked), killedBeforeReady, readyAfter.Round(time.Millisecond))
	checkFile(t, path)
}

// verify opens the file left by a killed child and checks it against what
// the children reported. It returns the queue's last seq.
func (m *crashModel) verify(t *testing.T, round int, path string, epoch *string) uint64 {
	t.Helper()
	q, err := Open(path, nil)
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer q.Close()
	if err := q.Check(); err != nil {
		t.Fatalf("round %d: check after kill: %v", round, err)
	}
	if *epoch == "" {
		*epoch = q.Epoch()
	} else if q.Epoch() != *epoch {
		t.Fatalf("round %d: epoch changed from %s to %s", round, *epoch, q.Epoch())
	}
	pending := map[uint64]string{}
	for _, r := range peekAll(t, q) {
		pending[r.Seq] = string(r.Data)
	}
	archive := archived(t, q)

	seen := map[string]uint64{}
	for _, set := range []map[uint64]string{pending, archive} {
		for seq, d := range set {
			if other, dup := seen[d]; dup {
				t.Fatalf("round %d: record %q stored twice, as %d and %d", round, d, other, seq)
			}
			seen[d] = seq
		}
	}
	for seq, d := range m.appended {
		p, inP := pending[seq]
		a, inA := archive[seq]
		switch {
		case inP && inA:
			t.Fatalf("round %d: record %d both unacked and archived", round, seq)
		case !inP && !inA:
			t.Fatalf("round %d: record %d (%s) was reported appended but is gone", round, seq, d)
		case inP && p != d, inA && a != d:
			t.Fatalf("round %d: record %d holds %q/%q, want %q", round, seq, p, a, d)
		}
	}
	for seq := range m.acked {
		if _, inP := pending[seq]; inP {
			t.Fatalf("round %d: record %d was reported acked but is unacked", round, seq)
		}
		if _, inA := archive[seq]; !inA {
			t.Fatalf("round %d: record %d was reported acked but is not archived", round, seq)
		}
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for seq := range m.appended {
		if seq > st.LastSeq {
			t.Fatalf("round %d: LastSeq %d below reported seq %d", round, st.LastSeq, seq)
		}
	}
	return st.LastSeq
}
