package scanner

import (
	"context"
	"errors"
	"io"
	"reflect"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// collect runs src until it returns and gathers its frames.
func collect(tb testing.TB, ctx context.Context, src Source) ([]Frame, error) {
	tb.Helper()
	out := make(chan Frame)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, out)
		close(out)
	}()
	var frames []Frame
	timeout := time.After(waitTimeout)
	for {
		select {
		case f, ok := <-out:
			if !ok {
				return frames, <-done
			}
			frames = append(frames, f)
		case <-timeout:
			tb.Fatalf("source still running after %v", waitTimeout)
		}
	}
}

func TestLineSource(t *testing.T) {
	code := fakeCode(20)
	input := code + "\r\n\n" + "second line\n" + "bad \x00 line\n" + strings.Repeat("x", DefaultMaxLen+1) + "\r\n" + " last, no newline "
	src := NewLineSource("bench", iotest.OneByteReader(strings.NewReader(input)), nil)
	frames, err := collect(t, context.Background(), src)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{code, "second line", " last, no newline "}
	if got := texts(frames); !reflect.DeepEqual(got, want) {
		t.Errorf("frames: got %q, want %q", got, want)
	}
	for _, f := range frames {
		if f.Scanner != "bench" {
			t.Errorf("scanner: got %q, want bench", f.Scanner)
		}
	}
	if st := src.Stats(); st.NonPrintable != 1 || st.Overlong != 1 || st.Frames != 3 {
		t.Errorf("stats: got %+v", st)
	}
	if _, err := collect(t, context.Background(), src); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: got %v, want ErrRunning", err)
	}
}

func TestLineSourceReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("one\ntwo"), iotest.ErrReader(boom))
	frames, err := collect(t, context.Background(), NewLineSource("bench", r, nil))
	if !errors.Is(err, boom) {
		t.Errorf("Run: got %v, want %v", err, boom)
	}
	if got := texts(frames); !reflect.DeepEqual(got, []string{"one"}) {
		t.Errorf("frames: got %q, want [one] (the unterminated line is dropped on error)", got)
	}
}

// TestLineSourceCancel stops a source whose input blocks forever.
func TestLineSourceCancel(t *testing.T) {
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	src := NewLineSource("stdin", pr, nil)
	out := make(chan Frame)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	if _, err := pw.Write([]byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-out:
		if f.Text != "typed" {
			t.Errorf("got %q, want typed", f.Text)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no frame")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunAll(t *testing.T) {
	front := NewLineSource("front", strings.NewReader("f1\nf2\nf3\n"), nil)
	rear := NewLineSource("rear", strings.NewReader("r1\r\nr2\r\n"), nil)
	out := make(chan Frame)
	done := make(chan error, 1)
	go func() { done <- RunAll(context.Background(), []Source{front, rear}, out) }()
	got := map[string][]string{}
	for f := range out { // RunAll closes out
		got[f.Scanner] = append(got[f.Scanner], f.Text)
	}
	if err := <-done; err != nil {
		t.Fatalf("RunAll: %v", err)
	}
	want := map[string][]string{"front": {"f1", "f2", "f3"}, "rear": {"r1", "r2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestRunAllError: one failing source stops the others.
func TestRunAllError(t *testing.T) {
	boom := errors.New("boom")
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	sources := []Source{
		NewLineSource("stuck", pr, nil),
		NewLineSource("broken", iotest.ErrReader(boom), nil),
	}
	out := make(chan Frame)
	done := make(chan error, 1)
	go func() { done <- RunAll(context.Background(), sources, out) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("RunAll: got %v, want %v", err, boom)
		}
	case <-time.After(waitTimeout):
		t.Fatal("RunAll did not stop the other source")
	}
	if _, ok := <-out; ok {
		t.Error("out not closed")
	}
}

// TestRunAllSerial runs two real serial readers, front and rear doors, into
// one stream.
func TestRunAllSerial(t *testing.T) {
	ptys := map[string]*fakePTY{"front": newPTY(t), "rear": newPTY(t)}
	connected := make(chan string, 10)
	var sources []Source
	for _, name := range []string{"front", "rear"} {
		s, err := NewSerial(Config{Name: name, Path: ptys[name].path, OnState: func(st State) {
			if st == Connected {
				connected <- name
			}
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Frame)
	done := make(chan error, 1)
	go func() { done <- RunAll(ctx, sources, out) }()
	for range 2 {
		select {
		case name := <-connected:
			ptys[name].write(t, "from "+name+"\r\n")
		case <-time.After(waitTimeout):
			t.Fatal("scanners did not connect")
		}
	}
	var got []string
	for len(got) < 2 {
		select {
		case f := <-out:
			got = append(got, f.Scanner+": "+f.Text)
		case <-time.After(waitTimeout):
			t.Fatalf("got only %q", got)
		}
	}
	sort.Strings(got)
	if want := []string{"front: from front", "rear: from rear"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunAll: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("RunAll did not return after cancel")
	}
	if _, ok := <-out; ok {
		t.Error("out not closed")
	}
}
