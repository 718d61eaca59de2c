package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/server/api/apitest"
)

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
	os.Exit(m.Run())
}

// TestRiderStateSurvivesPowerCuts: the rider's state file is on a disk
// whose power the test cuts — a phone whose battery dies. After a cut
// that follows a register, a credential or a code, the file holds what
// the command wrote (the account's secret: lost, the account could never
// be used; the counter: gone back, the next code would be one shown
// before, refused as used). A cut in the middle of a save (the disk frozen
// while codes are made one after another, while two unlike states are
// saved back to back, while credentials are fetched; half the cuts or
// more tearing a page) leaves a file the rider can read: with the secret
// and the credential, a counter no lower than that of any code shown, one
// of the states saved whole, a credential and token seed that make codes
// the server's keyring verifies. (Saved in place, truncated, written and
// fsynced, the file was left with a torn page in most runs.)
func TestRiderStateSurvivesPowerCuts(t *testing.T) {
	disk := powercut.Mount(t, nil)
	srv := apitest.Start(t)
	st := disk.Path("rider.json")
	cut := func(what string, tear bool) *state {
		t.Helper()
		if _, err := disk.Cut(tear); err != nil {
			t.Fatalf("cut after %s: %v", what, err)
		}
		s, err := loadState(st)
		if err != nil {
			t.Fatalf("after a power cut after %s, the state file: %v", what, err)
		}
		return s
	}
	if c, o, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	want := readState(t, st)
	if got := cut("register", false); got.Account != want.Account || got.Secret != want.Secret {
		t.Fatalf("after a cut after register: account %d (secret kept: %v), want account %d and its secret",
			got.Account, got.Secret == want.Secret, want.Account)
	}
	if c, o, e := rider(t, "credential", "--state", st); c != 0 {
		t.Fatalf("credential: %d %q %q", c, o, e)
	}
	want = readState(t, st)
	if got := cut("credential", true); got.Credential != want.Credential || got.TokenSeed != want.TokenSeed || got.Secret != want.Secret {
		t.Fatal("after a cut after credential: the credential, token seed or secret is not the one fetched")
	}
	for i := range 4 {
		if c, o, e := rider(t, "code", "--state", st); c != 0 {
			t.Fatalf("code: %d %q %q", c, o, e)
		}
		want = readState(t, st)
		if got := cut("code", i%2 == 1); got.Counter != want.Counter {
			t.Fatalf("after a cut after a code of counter %d: counter %d", want.Counter, got.Counter)
		}
	}

	// Cut mid-save: codes are made one after another and the disk is
	// frozen after the first few, while the next is being saved.
	for round := range 6 {
		before := readState(t, st)
		shown := make(chan struct{}) // closed once round+1 codes are shown, or the codes stop
		done := make(chan int)
		var last string
		go func() {
			n := 0
			defer func() {
				if n <= round {
					close(shown)
				}
				done <- n
			}()
			for {
				c, o, e := rider(t, "code", "--state", st)
				if c != 0 || strings.TrimSpace(o) == "" {
					last = e
					return
				}
				n++
				if n == round+1 {
					close(shown)
				}
			}
		}()
		<-shown
		if err := disk.Freeze(); err != nil {
			t.Fatal(err)
		}
		n := <-done
		if n <= round {
			t.Fatalf("round %d: code failed before the power was cut: %q", round, last)
		}
		got := cut("a code cut short", round%2 == 0)
		if got.Secret != before.Secret || got.Credential != before.Credential || got.TokenSeed != before.TokenSeed {
			t.Fatalf("round %d: the secret, credential or token seed changed across a cut mid-save", round)
		}
		if int(got.Counter) < int(before.Counter)+n {
			t.Fatalf("round %d: %d codes shown from counter %d, and the state's counter after the cut is %d: the next code repeats one shown",
				round, n, before.Counter, got.Counter)
		}
		t.Logf("round %d: %d codes shown, counter %d → %d after the cut", round, n, before.Counter, got.Counter)
	}

	// Cut mid-save, saves only, back to back: two states unlike in every
	// field and in length take turns. After a cut, torn or not, the file is
	// one of them, whole.
	a := readState(t, st)
	b := *a
	b.Server, b.Secret, b.Credential, b.TokenSeed, b.Counter = "http://fares.example.net:8443", strings.Repeat("7", 64), "", "", 1
	for round := range 40 {
		saved := make(chan struct{})
		done := make(chan int)
		go func() {
			n := 0
			defer func() {
				if n <= round {
					close(saved)
				}
				done <- n
			}()
			for {
				s := a
				if n%2 == 1 {
					s = &b
				}
				if s.save(st) != nil {
					return
				}
				n++
				if n == round+1 {
					close(saved)
				}
			}
		}()
		<-saved
		if err := disk.Freeze(); err != nil {
			t.Fatal(err)
		}
		if n := <-done; n <= round {
			t.Fatalf("round %d: a save failed before the power was cut", round)
		}
		if got := cut("a save cut short", round%2 == 0); *got != *a && *got != b {
			t.Fatalf("round %d: after a cut mid-save the state is neither of the two saved: account %d, counter %d",
				round, got.Account, got.Counter)
		}
	}
	if err := a.save(st); err != nil {
		t.Fatal(err)
	}

	// Cut mid-save of a credential: a new credential and token seed
	// replace the old ones (another length of file each time a serial
	// grows, every byte of both different). What is left after a cut,
	// torn or not, must be one pair — a code made from it verifies
	// against the server's keyring — never the head of one and the tail
	// of another.
	for round := range 4 {
		before := readState(t, st)
		fetched := make(chan struct{})
		done := make(chan int)
		var last string
		go func() {
			n := 0
			defer func() {
				if n <= round {
					close(fetched)
				}
				done <- n
			}()
			for {
				c, _, e := rider(t, "credential", "--state", st)
				if c != 0 {
					last = e
					return
				}
				n++
				if n == round+1 {
					close(fetched)
				}
			}
		}()
		<-fetched
		if err := disk.Freeze(); err != nil {
			t.Fatal(err)
		}
		if n := <-done; n <= round {
			t.Fatalf("round %d: credential failed before the power was cut: %q", round, last)
		}
		got := cut("a credential cut short", true)
		if got.Secret != before.Secret || got.Account != before.Account {
			t.Fatalf("round %d: the account or its secret changed across a cut mid-save of a credential", round)
		}
		c, o, e := rider(t, "code", "--state", st)
		if c != 0 {
			t.Fatalf("round %d: code after a cut mid-save of a credential: %d %q", round, c, e)
		}
		if d := paycode.Verify(strings.TrimSpace(o), time.Now(), srv.Keys.Keyring(), paycode.Policy{}); !d.Accepted {
			t.Fatalf("round %d: a code made after a cut mid-save of a credential is refused: %s", round, d.Reason)
		}
	}
}

// TestRiderDamagedStateSignsInAgain: a state file left empty or cut short
// (storage that acknowledged a flush it had not made, which the power-cut
// disk does not model: the fault is written here) names the cure, and
// signin --force with the account's secret takes the rider back, keeping
// the damaged file beside it. Before, every command said only "unexpected
// end of JSON input", and signin --force refused with the same words: the
// rider was locked out until they deleted the file by hand.
func TestRiderDamagedStateSignsInAgain(t *testing.T) {
	srv := apitest.Start(t)
	dir := t.TempDir()
	st := filepath.Join(dir, "rider.json")
	if c, o, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	good := readState(t, st)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(good.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each kept under its own name: one kept before is never replaced
	// (it may hold the only copy of another account's secret: the rider
	// signed in to another account after the first, and the second
	// damaged file took its name).
	cases := []string{"", `{"server": "http://127.0.0.1:1", "acc`, "{}\n"}
	keptAs := []string{st + ".damaged", st + ".damaged.2", st + ".damaged.3"}
	for i, damaged := range cases {
		if err := os.WriteFile(st, []byte(damaged), 0o600); err != nil {
			t.Fatal(err)
		}
		if c, _, e := rider(t, "code", "--state", st); c != 1 || !strings.Contains(e, "damaged") || !strings.Contains(e, "signin --secret") {
			t.Errorf("code with the state file %q: %d %q; want 1, damaged, and how to sign in again", damaged, c, e)
		}
		args := []string{"signin", "--state", st, "--secret", "@" + secretFile, "--account", strconv.FormatUint(good.Account, 10), "--server", srv.URL}
		if c, _, e := rider(t, args...); c != 1 || !strings.Contains(e, "damaged") {
			t.Errorf("signin without --force over %q: %d %q; want 1, damaged", damaged, c, e)
		}
		if b, _ := os.ReadFile(st); string(b) != damaged {
			t.Errorf("a refused signin changed the damaged file: %q", b)
		}
		// --force alone: the file is there, damaged, and says neither the
		// account nor the server; the refusal says so, not "without a
		// state file", and changes nothing.
		if c, _, e := rider(t, "signin", "--state", st, "--secret", "@"+secretFile, "--force"); c != 2 ||
			!strings.Contains(e, "--server URL (the wallet's address without /wallet/) and --account N (the number the wallet shows) are required: the state file "+st+" is damaged") {
			t.Errorf("signin --force over %q without --account and --server: %d %q; want 2, both named, the file damaged", damaged, c, e)
		}
		if b, _ := os.ReadFile(st); string(b) != damaged {
			t.Errorf("a refused signin --force changed the damaged file: %q", b)
		}
		// A wrong secret changes nothing either.
		bad := append(append([]string{}, args[:4]...), "wrong-secret")
		bad = append(bad, args[5:]...)
		if c, _, _ := rider(t, append(bad, "--force")...); c == 0 {
			t.Errorf("signin --force with a wrong secret over a damaged file succeeded")
		}
		if b, _ := os.ReadFile(st); string(b) != damaged {
			t.Errorf("a signin with a wrong secret changed the damaged file: %q", b)
		}
		if c, o, e := rider(t, append(args, "--force")...); c != 0 || !strings.Contains(o, "kept as "+keptAs[i]+"\n") {
			t.Fatalf("signin --force over %q: %d %q %q; want it kept as %s", damaged, c, o, e, keptAs[i])
		}
		for j := 0; j <= i; j++ {
			if b, err := os.ReadFile(keptAs[j]); err != nil || string(b) != cases[j] {
				t.Errorf("the damaged file kept aside as %s: %q %v; want %q", keptAs[j], b, err, cases[j])
			}
		}
		if s := readState(t, st); s.Account != good.Account || s.Secret != good.Secret {
			t.Errorf("after signin --force: account %d, want %d with its secret", s.Account, good.Account)
		}
		if c, o, e := rider(t, "credential", "--state", st); c != 0 {
			t.Errorf("credential after signing in again: %d %q %q", c, o, e)
		}
		if c, o, e := rider(t, "code", "--state", st); c != 0 {
			t.Errorf("code after signing in again: %d %q %q", c, o, e)
		}
	}
}
