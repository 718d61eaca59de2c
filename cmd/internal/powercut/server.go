package powercut

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// childEnv carries the disk's settings (JSON) to the process that serves
// it: the test binary started again by Mount.
const childEnv = "FAREGO_POWERCUT_DISK"

// childSpec is what Mount tells the serving process.
type childSpec struct {
	Mount   string `json:"mount"`
	Backing string `json:"backing"`
	Seed    uint64 `json:"seed"`
	Debug   bool   `json:"debug"`
}

// request is one command to the serving process, one JSON line on its
// standard input; it answers each with one reply line on standard output.
type request struct {
	Op    string `json:"op"` // freeze, freezeaftersyncs, failsyncafter, full, cut, stats, close
	Tear  bool   `json:"tear,omitempty"`
	Syncs int64  `json:"syncs,omitempty"`
	Count int64  `json:"count,omitempty"` // failsyncafter: how many syncs fail
	Full  bool   `json:"full,omitempty"`
}

type reply struct {
	Err    string     `json:"err,omitempty"`
	Report *CutReport `json:"report,omitempty"`
	Stats  *Stats     `json:"stats,omitempty"`
}

// Main serves a power-cut disk and exits if this process was started by
// Mount to do so; otherwise it returns at once. Call it first in the
// TestMain of every package that uses Mount:
//
//	func TestMain(m *testing.M) { powercut.Main(); os.Exit(m.Run()) }
//
// The disk is served by a process of its own because a Go process must not
// fault on memory mapped from a FUSE file system it serves itself: a
// garbage collection stopping the world would wait for the faulting
// thread, which waits for the stopped server.
func Main() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	os.Exit(serve(spec))
}

// serve runs the serving process: mount, then answer commands until
// "close" or until standard input ends (the test process is gone).
func serve(specJSON string) int {
	var spec childSpec
	out := json.NewEncoder(os.Stdout)
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		out.Encode(reply{Err: "bad " + childEnv + ": " + err.Error()})
		return 2
	}
	s := newState(spec.Backing, spec.Seed)
	m, err := mount(s, spec)
	if err != nil {
		out.Encode(reply{Err: "mount: " + err.Error()})
		return 1
	}
	out.Encode(reply{})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			out.Encode(reply{Err: "bad request: " + err.Error()})
			continue
		}
		switch req.Op {
		case "freeze":
			s.mu.Lock()
			s.frozen = true
			s.mu.Unlock()
			out.Encode(reply{})
		case "freezeaftersyncs":
			s.mu.Lock()
			s.syncsLeft = max(req.Syncs, -1)
			s.mu.Unlock()
			out.Encode(reply{})
		case "failsyncafter":
			s.mu.Lock()
			s.failLeft, s.failCount = max(req.Syncs, -1), max(req.Count, 1)
			s.mu.Unlock()
			out.Encode(reply{})
		case "full":
			s.mu.Lock()
			s.full = req.Full
			s.mu.Unlock()
			out.Encode(reply{})
		case "stats":
			s.mu.Lock()
			st := s.stats
			st.Frozen = s.frozen
			s.mu.Unlock()
			out.Encode(reply{Stats: &st})
		case "cut":
			s.mu.Lock()
			s.frozen = true
			s.syncsLeft = -1
			s.failLeft = -1
			s.mu.Unlock()
			if err := m.unmount(); err != nil {
				out.Encode(reply{Err: err.Error()})
				continue
			}
			rep, err := s.rollback(req.Tear)
			if err != nil {
				out.Encode(reply{Err: err.Error()})
				return 1
			}
			if m, err = mount(s, spec); err != nil {
				out.Encode(reply{Err: "mount again: " + err.Error()})
				return 1
			}
			out.Encode(reply{Report: &rep})
		case "close":
			err := m.unmount()
			if err != nil {
				out.Encode(reply{Err: err.Error()})
				m.detach()
				return 1
			}
			out.Encode(reply{})
			return 0
		default:
			out.Encode(reply{Err: fmt.Sprintf("unknown op %q", req.Op)})
		}
	}
	// The test process went away without closing: do not leave a mount
	// behind.
	if m.unmount() != nil {
		m.detach()
	}
	return 0
}

// mounted is one mount of the state (from power on to power off).
type mounted struct {
	dir    string
	srv    *fuse.Server
	served chan struct{} // closed when the server loop has ended
}

func mount(s *state, spec childSpec) (*mounted, error) {
	opts := &fuse.MountOptions{
		FsName: "farego-powercut",
		Name:   "powercut",
		// As root, mount(2) directly: no fusermount needed. Others fall
		// back to fusermount.
		DirectMount:        true,
		DisableXAttrs:      true,
		DisableReadDirPlus: true,
		// Every change goes through this kernel, so its page cache is never
		// stale: do not let a changed mtime throw it away (mmap users would
		// fault every page in again).
		DisabledCapabilities: fuse.CAP_AUTO_INVAL_DATA,
		Debug:                spec.Debug,
	}
	if spec.Debug {
		opts.Logger = log.New(os.Stderr, "powercut: ", log.Lmicroseconds)
	}
	srv, err := fuse.NewServer(newRawFS(s), spec.Mount, opts)
	if err != nil {
		return nil, err
	}
	m := &mounted{dir: spec.Mount, srv: srv, served: make(chan struct{})}
	go func() {
		srv.Serve()
		close(m.served)
	}()
	if err := srv.WaitMount(); err != nil {
		m.detach()
		return nil, err
	}
	return m, nil
}

// errBusy means something still had a file open when the power was to be
// cut.
var errBusy = errors.New("powercut: files on the disk are still open (kill or close their users before a cut)")

// unmount unmounts, waiting up to 2 s for files still open to be closed,
// and waits for the server loop to end.
func (m *mounted) unmount() error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := syscall.Unmount(m.dir, 0)
		if err == nil {
			break
		}
		if err != syscall.EBUSY {
			if uerr := m.srv.Unmount(); uerr != nil { // fusermount, for non-root users
				return fmt.Errorf("powercut: unmount %s: %w", m.dir, errors.Join(err, uerr))
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s", errBusy, m.dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-m.served:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("powercut: the FUSE server of %s did not stop after unmount", m.dir)
	}
}

// detach unmounts lazily, as a last resort when leaving.
func (m *mounted) detach() {
	syscall.Unmount(m.dir, syscall.MNT_DETACH)
}
