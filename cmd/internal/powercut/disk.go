package powercut

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Disk is a mounted power-cut disk, served by a child process.
type Disk struct {
	dir  string // the mount point
	base string // holds the mount point and the backing directory

	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *strings.Builder
	done   chan error
	closed bool
}

// Options configure Mount; the zero value is fine.
type Options struct {
	// Seed makes the torn pages of Cut reproducible; default 1.
	Seed uint64
}

// Mount mounts a new, empty power-cut disk and returns it; it is unmounted
// and deleted when the test ends. Where FUSE is unavailable (no /dev/fuse,
// no permission to mount) it skips the test, or fails it when FAREGO_CI is
// set. The package's TestMain must call Main first.
func Mount(tb testing.TB, opts *Options) *Disk {
	tb.Helper()
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if reason := unavailable(); reason != "" {
		skipOrFail(tb, reason)
	}
	base, err := os.MkdirTemp("", "farego-powercut-")
	if err != nil {
		tb.Fatal(err)
	}
	d := &Disk{dir: filepath.Join(base, "disk"), base: base, stderr: &strings.Builder{}, done: make(chan error, 1)}
	backing := filepath.Join(base, "backing")
	for _, p := range []string{d.dir, backing} {
		if err := os.Mkdir(p, 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	spec, _ := json.Marshal(childSpec{Mount: d.dir, Backing: backing, Seed: o.Seed, Debug: os.Getenv("FAREGO_POWERCUT_DEBUG") != ""})
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	d.cmd = exec.Command(exe, "-test.run=^$")
	d.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	d.cmd.Stderr = &lockedWriter{w: d.stderr, mu: &d.mu}
	if d.in, err = d.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	d.out = bufio.NewScanner(stdout)
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("power-cut disk: %v", err)
		}
	})
	if _, err := d.read(); err != nil {
		d.kill()
		if strings.Contains(err.Error(), "mount:") {
			skipOrFail(tb, err.Error())
		}
		tb.Fatalf("power-cut disk: %v", err)
	}
	return d
}

// Dir returns the mount point.
func (d *Disk) Dir() string { return d.dir }

// Path joins elem to the mount point.
func (d *Disk) Path(elem ...string) string { return filepath.Join(append([]string{d.dir}, elem...)...) }

// Freeze cuts the power without unmounting: from now on every change
// (write, fsync, create, rename, unlink, …) fails with EIO, so nothing more
// becomes durable, while reads still work. An in-process user of the disk
// (a queue opened by the test itself) freezes, closes its files, then
// calls Cut.
func (d *Disk) Freeze() error {
	_, err := d.call(request{Op: "freeze"})
	return err
}

// FreezeAfterSyncs lets the next n syncs (fsync, fdatasync, a write
// through an O_SYNC handle, of files or directories) make their data
// durable, and cuts the power (as Freeze) at the one after: that sync
// fails with EIO and makes nothing durable. Called with n = 0, 1, 2, …
// before the same work, followed by a Cut, it cuts between every two
// steps that make something durable: every state a power cut can leave
// (Cut with tear adds the torn pages). Stats().Frozen says whether the
// power went off; a Cut, or n < 0, ends the count.
func (d *Disk) FreezeAfterSyncs(n int64) error {
	_, err := d.call(request{Op: "freezeaftersyncs", Syncs: n})
	return err
}

// FailSyncAfter lets the next n syncs (fsync, fdatasync, a write
// through an O_SYNC handle) work and fails the count after them with EIO,
// the power staying on: flash failing its write-backs (the "fsyncgate"
// case). As Linux does, the pages a failed sync was to write stay in the
// cache with their new bytes, what programs read and map, but are marked
// clean: no later sync writes them (a later fsync of the file may succeed
// without them), and a Cut gives their durable bytes back, unless a page
// was written again since. A failed directory sync leaves its entries
// volatile. A Cut, or n < 0, ends it; Stats().FailedSyncs counts the
// syncs failed.
func (d *Disk) FailSyncAfter(n, count int64) error {
	_, err := d.call(request{Op: "failsyncafter", Syncs: n, Count: count})
	return err
}

// Full fills the disk (full) or frees space on it (!full): while it is
// full, a write that grows a file, a truncation that grows one and the
// making of a file or directory fail with ENOSPC, as on a full ext4; writes
// inside a file's size, syncs, renames and unlinks still work. It stays
// full across a Cut.
func (d *Disk) Full(full bool) error {
	_, err := d.call(request{Op: "full", Full: full})
	return err
}

// Cut cuts the power and brings it back: it freezes the disk, unmounts it
// (every file on it must be closed by then: kill the processes using it
// first), discards the volatile layer — every write since the last fsync
// or fdatasync of its file and every create, rename and unlink since the
// last fsync of its directory — and mounts the durable state again. With
// tear, the page the last unsynced write ended in keeps a random prefix of
// its new bytes instead of none.
func (d *Disk) Cut(tear bool) (CutReport, error) {
	r, err := d.call(request{Op: "cut", Tear: tear})
	if err != nil {
		return CutReport{}, err
	}
	if r.Report == nil {
		return CutReport{}, fmt.Errorf("powercut: cut: no report")
	}
	return *r.Report, nil
}

// Stats returns what the disk has done since it was mounted.
func (d *Disk) Stats() (Stats, error) {
	r, err := d.call(request{Op: "stats"})
	if err != nil {
		return Stats{}, err
	}
	if r.Stats == nil {
		return Stats{}, fmt.Errorf("powercut: stats: none")
	}
	return *r.Stats, nil
}

// Close unmounts the disk, stops its server and deletes its files.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	_, err := d.call(request{Op: "close"})
	d.mu.Lock()
	d.closed = true
	d.in.Close()
	d.mu.Unlock()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.kill()
	}
	syscall.Unmount(d.dir, syscall.MNT_DETACH) // in case the server could not
	if rerr := os.RemoveAll(d.base); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func (d *Disk) kill() {
	d.cmd.Process.Kill()
	<-d.done
	syscall.Unmount(d.dir, syscall.MNT_DETACH)
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	os.RemoveAll(d.base)
}

// call sends one request and reads its reply.
func (d *Disk) call(req request) (reply, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return reply{}, fmt.Errorf("powercut: %s: disk closed", req.Op)
	}
	b, _ := json.Marshal(req)
	_, err := d.in.Write(append(b, '\n'))
	d.mu.Unlock()
	if err != nil {
		return reply{}, fmt.Errorf("powercut: %s: %w", req.Op, err)
	}
	r, err := d.read()
	if err != nil {
		return r, fmt.Errorf("powercut: %s: %w", req.Op, err)
	}
	return r, nil
}

// read reads one reply line from the serving process.
func (d *Disk) read() (reply, error) {
	var r reply
	if !d.out.Scan() {
		d.mu.Lock()
		msg := d.stderr.String()
		d.mu.Unlock()
		return r, fmt.Errorf("the disk's process ended (does TestMain call powercut.Main first?): %v %s", d.out.Err(), tailLines(msg, 20))
	}
	if err := json.Unmarshal(d.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("the disk's process said %q (does TestMain call powercut.Main first?)", d.out.Text())
	}
	if r.Err != "" {
		return r, fmt.Errorf("%s", r.Err)
	}
	return r, nil
}

// unavailable says why this machine cannot mount a FUSE file system, or
// returns "".
func unavailable() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open /dev/fuse: %v", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err := exec.LookPath("fusermount"); err != nil {
				return "not root and no fusermount3 or fusermount on PATH"
			}
		}
	}
	return ""
}

// skipOrFail skips the test, or fails it under FAREGO_CI.
func skipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("FAREGO_CI") != "" {
		tb.Fatalf("power-cut disk unavailable (FAREGO_CI is set, so this fails): %s", reason)
	}
	tb.Skipf("power-cut disk unavailable (needs FUSE: /dev/fuse and permission to mount): %s", reason)
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
