package powercut_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue/durable"
)

// TestWriteFileKeepOwnerSurvivesPowerCuts: durable.WriteFileKeepOwner
// (the operator token file of keys.ReplaceToken, Mosquitto's password
// file of mqtt-passwd --out) loses its power before each of its syncs in
// turn, making the file and replacing it (every other cut tearing the
// last page written; the content spans pages). After every cut the file
// is the old one or the new one, whole, never empty or torn, with the
// owner and mode it had (a file Mosquitto's group reads: 0640, another
// user's); a write that returned survives a cut.
func TestWriteFileKeepOwnerSurvivesPowerCuts(t *testing.T) {
	d := powercut.Mount(t, nil)
	dir := d.Path("etc", "mosquitto")
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "farego.passwd")
	content := func(round int) []byte {
		var b bytes.Buffer
		for i := 0; b.Len() < 9000; i++ {
			fmt.Fprintf(&b, "device-%04d:$7$101$round-%d-line-%d\n", i, round, i)
		}
		return b.Bytes()
	}
	// The file's owner: the writer's while it makes it, then (as root)
	// another user's, replaced by root (an operator's sudo).
	uid, gid := os.Getuid(), os.Getgid()
	owner, group := uid, gid
	if os.Geteuid() == 0 {
		owner, group = 1234, 5678
	}
	var prev []byte // nil: no file yet
	check := func(what string, want ...[]byte) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if prev == nil && os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, w := range want {
			if w != nil && bytes.Equal(b, w) {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode().Perm() != 0o640 || int(st.Uid) != uid || int(st.Gid) != gid {
					t.Fatalf("%s: the file is %v %d:%d, want 0640 %d:%d", what, fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
				}
				return w
			}
		}
		t.Fatalf("%s: the file (%d bytes) is neither the old one nor the new one, whole", what, len(b))
		return nil
	}
	cuts, torn := 0, 0
	for round := range 3 { // made, replaced, replaced again
		next := content(round)
		for n := int64(0); ; n++ {
			if n > 50 {
				t.Fatal("WriteFileKeepOwner still syncs after 50 syncs")
			}
			if err := d.FreezeAfterSyncs(n); err != nil {
				t.Fatal(err)
			}
			werr := durable.WriteFileKeepOwner(path, next, 0o640)
			st, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if !st.Frozen {
				if werr != nil {
					t.Fatalf("round %d with the power on: %v", round, werr)
				}
				if err := d.FreezeAfterSyncs(-1); err != nil {
					t.Fatal(err)
				}
				break
			}
			tear := (cuts % 2) == 1
			if _, err := d.Cut(tear); err != nil {
				t.Fatal(err)
			}
			cuts++
			if tear {
				torn++
			}
			if got := check(fmt.Sprintf("round %d, cut before sync %d (tear %v)", round, n, tear), prev, next); got != nil {
				prev = got
			}
		}
		if round == 0 { // given to its user, durably
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Chown(owner, group); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			uid, gid = owner, group
		}
		// A write that returned survives a cut, all of it.
		if _, err := d.Cut(round%2 == 0); err != nil {
			t.Fatal(err)
		}
		cuts++
		prev = check(fmt.Sprintf("round %d, cut after the write returned", round), next)
		if leftovers, _ := filepath.Glob(filepath.Join(dir, ".farego.passwd.tmp*")); len(leftovers) > 0 {
			t.Logf("round %d: %d temporary files left by cuts", round, len(leftovers))
		}
	}
	t.Logf("%d power cuts of WriteFileKeepOwner (%d tearing a page)", cuts, torn)
}
