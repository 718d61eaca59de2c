package scanner

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is an arbitrary fixed time for framer tests.
var t0 = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)

// base45Chars is Base45's alphabet (RFC 9285), space included.
const base45Chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

// fakeCode returns a string shaped like a payment code text: "FG1:" and 291
// Base45 characters, with spaces, including a leading and a trailing one
// after the prefix, so that any trimming shows.
func fakeCode(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 1))
	var b strings.Builder
	b.WriteString("FG1: ")
	for b.Len() < 294 {
		b.WriteByte(base45Chars[r.IntN(len(base45Chars))])
	}
	b.WriteByte(' ')
	return b.String()
}

// discardRec records the framer's discard hook calls.
type discardRec struct {
	reasons []Discard
	sizes   []int
}

func (d *discardRec) hook(r Discard, n int) {
	d.reasons = append(d.reasons, r)
	d.sizes = append(d.sizes, n)
}

func newTestFramer(tb testing.TB, cfg Framing) (*Framer, *discardRec) {
	tb.Helper()
	d := &discardRec{}
	f, err := NewFramer("front", cfg, d.hook)
	if err != nil {
		tb.Fatalf("NewFramer(%+v): %v", cfg, err)
	}
	return f, d
}

// feedAll feeds the chunks at the same instant and returns the frame texts.
func feedAll(f *Framer, chunks ...string) []string {
	var got []string
	for _, c := range chunks {
		for _, fr := range f.Feed([]byte(c), t0) {
			got = append(got, fr.Text)
		}
	}
	return got
}

func TestFramer(t *testing.T) {
	code := fakeCode(1)
	stx, etx := "\x02", "\x03"
	tests := []struct {
		name    string
		cfg     Framing
		chunks  []string
		want    []string
		discard []Discard // in order
	}{
		{name: "CR", chunks: []string{code + "\r"}, want: []string{code}},
		{name: "LF", chunks: []string{code + "\n"}, want: []string{code}},
		{name: "CRLF", chunks: []string{code + "\r\n"}, want: []string{code}},
		{name: "LFCR and blank lines", chunks: []string{"\r\n\n" + code + "\n\r\r\n" + "A B\n"}, want: []string{code, "A B"}},
		{name: "spaces kept", chunks: []string{"  lead and trail  \r\n"}, want: []string{"  lead and trail  "}},
		{name: "several per chunk", chunks: []string{"a\rb\nc\r\nd\r"}, want: []string{"a", "b", "c", "d"}},
		{name: "split CRLF", chunks: []string{code[:100], code[100:] + "\r", "\n", "x\r", "\nyz", "\r\n"}, want: []string{code, "x", "yz"}},
		{name: "no terminator yet", chunks: []string{code}, want: nil},
		{name: "NUL", chunks: []string{"ab\x00c\r\n", "ok\r\n"}, want: []string{"ok"}, discard: []Discard{DiscardNonPrintable}},
		{name: "UTF-8", chunks: []string{"caf\xc3\xa9\n"}, discard: []Discard{DiscardNonPrintable}},
		{name: "DEL", chunks: []string{"a\x7f\n"}, discard: []Discard{DiscardNonPrintable}},
		{name: "tilde is printable", chunks: []string{"~ !\n"}, want: []string{"~ !"}},
		{name: "escape sequence", chunks: []string{"\x1b[31mred\x1b[0m\r\n"}, discard: []Discard{DiscardNonPrintable}},
		{name: "exactly MaxLen", cfg: Framing{MaxLen: 10}, chunks: []string{"0123456789\r\n"}, want: []string{"0123456789"}},
		{name: "overlong then good", cfg: Framing{MaxLen: 10}, chunks: []string{"0123456789A\r\n", "short\r\n"}, want: []string{"short"}, discard: []Discard{DiscardOverlong}},
		{name: "overlong across chunks", cfg: Framing{MaxLen: 10}, chunks: []string{"01234", "56789", "ABCDE", strings.Repeat("x", 100), "\n", "ok\n"}, want: []string{"ok"}, discard: []Discard{DiscardOverlong}},
		{name: "overlong with control bytes", cfg: Framing{MaxLen: 4}, chunks: []string{"\x00\x01\x02\x03\x04\x05\n"}, discard: []Discard{DiscardOverlong}},
		{name: "default MaxLen", chunks: []string{strings.Repeat("A", DefaultMaxLen) + "\n", strings.Repeat("A", DefaultMaxLen+1) + "\n"}, want: []string{strings.Repeat("A", DefaultMaxLen)}, discard: []Discard{DiscardOverlong}},

		{name: "STX/ETX without terminator", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + code + etx + stx + "B" + etx}, want: []string{code, "B"}},
		{name: "STX/ETX with CRLF", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + code + etx + "\r\n" + stx + "B" + etx + "\r\n"}, want: []string{code, "B"}},
		{name: "STX/ETX split", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx, code[:7], code[7:], etx}, want: []string{code}},
		{name: "STX/ETX missing STX", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{"abc" + etx, stx + "ok" + etx}, want: []string{"ok"}, discard: []Discard{DiscardUnframed}},
		{name: "STX/ETX missing ETX", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + "abc\r\n", stx + "ok" + etx}, want: []string{"ok"}, discard: []Discard{DiscardUnframed}},
		{name: "STX resynchronises", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + "cut off", stx + "ok" + etx}, want: []string{"ok"}, discard: []Discard{DiscardIncomplete}},
		{name: "garbage before STX", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{"\xff\xfe" + stx + "ok" + etx}, want: []string{"ok"}, discard: []Discard{DiscardIncomplete}},
		{name: "STX/ETX empty", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + etx + "\r\n"}, want: nil},
		{name: "STX/ETX non-printable inside", cfg: Framing{Prefix: stx, Suffix: etx}, chunks: []string{stx + "a\x00b" + etx}, discard: []Discard{DiscardNonPrintable}},
		{name: "STX/ETX overlong", cfg: Framing{Prefix: stx, Suffix: etx, MaxLen: 3}, chunks: []string{stx + "abcd" + etx, stx + "abc" + etx}, want: []string{"abc"}, discard: []Discard{DiscardOverlong}},
		{name: "STX ends overlong", cfg: Framing{Prefix: stx, Suffix: etx, MaxLen: 3}, chunks: []string{stx + "abcdefgh", stx + "abc" + etx}, want: []string{"abc"}, discard: []Discard{DiscardOverlong}},
		{name: "multi-byte control affixes", cfg: Framing{Prefix: "\x1b[", Suffix: "\x1b]", MaxLen: 5}, chunks: []string{"\x1b[ab", "c\x1b", "]", "\x1b[" + strings.Repeat("z", 20) + "\x1b", "]", "\x1b[ok\x1b]"}, want: []string{"abc", "ok"}, discard: []Discard{DiscardOverlong}},

		{name: "AIM prefix", cfg: Framing{Prefix: "]Q1"}, chunks: []string{"]Q1" + code + "\r\n", code + "\r\n"}, want: []string{code}, discard: []Discard{DiscardUnframed}},
		{name: "printable suffix needs terminator", cfg: Framing{Suffix: "#"}, chunks: []string{"a#b#\r"}, want: []string{"a#b"}},

		{name: "CR only", cfg: Framing{Terminator: TermCR}, chunks: []string{"a\r\nb\r", "c\nd\r"}, want: []string{"a", "b"}, discard: []Discard{DiscardNonPrintable}},
		{name: "LF only", cfg: Framing{Terminator: TermLF}, chunks: []string{"a\n\rb\n", "c\r\n"}, want: []string{"a", "b"}, discard: []Discard{DiscardNonPrintable}},
		{name: "CRLF only", cfg: Framing{Terminator: TermCRLF}, chunks: []string{"a\r", "\nb\r\n\r\n", "c\rd\r\n", "e\nf\r\n", "g\r\r\n"}, want: []string{"a", "b"}, discard: []Discard{DiscardNonPrintable, DiscardNonPrintable, DiscardNonPrintable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, d := newTestFramer(t, tt.cfg)
			got := feedAll(f, tt.chunks...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("frames:\n got %q\nwant %q", got, tt.want)
			}
			if !reflect.DeepEqual(d.reasons, tt.discard) {
				t.Errorf("discards: got %v, want %v", d.reasons, tt.discard)
			}
			st := f.Stats()
			if st.Frames != uint64(len(tt.want)) || st.Discarded() != uint64(len(tt.discard)) {
				t.Errorf("stats %+v: got %d frames and %d discards, want %d and %d",
					st, st.Frames, st.Discarded(), len(tt.want), len(tt.discard))
			}
			// The same bytes one at a time give the same result.
			f1, d1 := newTestFramer(t, tt.cfg)
			var bytewise []string
			for _, c := range tt.chunks {
				for i := range len(c) {
					bytewise = append(bytewise, feedAll(f1, c[i:i+1])...)
				}
			}
			if !reflect.DeepEqual(bytewise, tt.want) || !reflect.DeepEqual(d1.reasons, tt.discard) {
				t.Errorf("byte by byte: got %q %v, want %q %v", bytewise, d1.reasons, tt.want, tt.discard)
			}
		})
	}
}

// TestFramerSplitEverywhere cuts one STX/ETX CRLF frame at every position.
func TestFramerSplitEverywhere(t *testing.T) {
	code := fakeCode(2)
	wire := "\x02" + code + "\x03\r\n"
	for i := 0; i <= len(wire); i++ {
		f, d := newTestFramer(t, Framing{Prefix: "\x02", Suffix: "\x03"})
		got := feedAll(f, wire[:i], wire[i:])
		if len(got) != 1 || got[0] != code || len(d.reasons) != 0 {
			t.Fatalf("split at %d: got %q, discards %v; want the code once", i, got, d.reasons)
		}
	}
}

func TestFramerFrameFields(t *testing.T) {
	f, _ := newTestFramer(t, Framing{})
	if got := f.Feed([]byte("abc"), t0); got != nil {
		t.Fatalf("partial frame delivered: %v", got)
	}
	t1 := t0.Add(50 * time.Millisecond)
	got := f.Feed([]byte("def\r\n"), t1)
	want := []Frame{{Scanner: "front", Text: "abcdef", Time: t1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestFramerInterCharTimeout(t *testing.T) {
	f, d := newTestFramer(t, Framing{InterCharTimeout: 200 * time.Millisecond})

	// Flush within the timeout keeps the partial frame; the timeout runs
	// from the last byte, not the first.
	f.Feed([]byte("FG1:"), t0)
	f.Feed([]byte("ABC"), t0.Add(150*time.Millisecond))
	f.Flush(t0.Add(300 * time.Millisecond))
	if got := f.Feed([]byte("DEF\r"), t0.Add(350*time.Millisecond)); len(got) != 1 || got[0].Text != "FG1:ABCDEF" {
		t.Fatalf("slow but in time: got %+v", got)
	}

	// Flush after it drops it.
	f.Feed([]byte("FG1:ABC"), t0.Add(time.Second))
	f.Flush(t0.Add(time.Second + 201*time.Millisecond))
	if got := f.Feed([]byte("DEF\r"), t0.Add(2*time.Second)); len(got) != 1 || got[0].Text != "DEF" {
		t.Fatalf("after the timeout: got %+v, want DEF alone", got)
	}

	// Feed alone never times out: the bytes may have waited in the kernel
	// buffer for a reader that was late (a loaded CPU), not on the line.
	f.Feed([]byte("FG1:ABC"), t0.Add(3*time.Second))
	if got := f.Feed([]byte("GHI\r"), t0.Add(4*time.Second)); len(got) != 1 || got[0].Text != "FG1:ABCGHI" {
		t.Fatalf("late chunk: got %+v, want FG1:ABCGHI", got)
	}

	// A stale overlong frame counts as overlong, not incomplete.
	f2, d2 := newTestFramer(t, Framing{MaxLen: 2})
	f2.Feed([]byte("abcdef"), t0)
	f2.Flush(t0.Add(time.Second))

	if want := []Discard{DiscardIncomplete}; !reflect.DeepEqual(d.reasons, want) {
		t.Errorf("discards: got %v, want %v", d.reasons, want)
	}
	if want := []int{7}; !reflect.DeepEqual(d.sizes, want) {
		t.Errorf("discard sizes: got %v, want %v", d.sizes, want)
	}
	if want := []Discard{DiscardOverlong}; !reflect.DeepEqual(d2.reasons, want) || d2.sizes[0] != 6 {
		t.Errorf("stale overlong: got %v %v, want %v [6]", d2.reasons, d2.sizes, want)
	}
	if st := f.Stats(); st.Incomplete != 1 || st.Frames != 3 {
		t.Errorf("stats: got %+v, want 1 incomplete and 3 frames", st)
	}
}

func TestFramerTimeoutDisabled(t *testing.T) {
	f, d := newTestFramer(t, Framing{InterCharTimeout: -1})
	f.Feed([]byte("abc"), t0)
	f.Flush(t0.Add(time.Hour))
	if got := f.Feed([]byte("def\n"), t0.Add(2*time.Hour)); len(got) != 1 || got[0].Text != "abcdef" || len(d.reasons) != 0 {
		t.Errorf("got %+v, discards %v; want abcdef and none", got, d.reasons)
	}
}

func TestFramerReset(t *testing.T) {
	f, d := newTestFramer(t, Framing{})
	f.Reset() // nothing to drop
	f.Feed([]byte("cut"), t0)
	f.Reset()
	if got := feedAll(f, "ok\n"); !reflect.DeepEqual(got, []string{"ok"}) {
		t.Errorf("after Reset: got %q", got)
	}
	if want := []Discard{DiscardIncomplete}; !reflect.DeepEqual(d.reasons, want) {
		t.Errorf("discards: got %v, want %v", d.reasons, want)
	}
}

func TestFramingInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Framing
	}{
		{"terminator", Framing{Terminator: 9}},
		{"negative terminator", Framing{Terminator: -1}},
		{"MaxLen", Framing{MaxLen: -1}},
		{"CR in prefix", Framing{Prefix: "\r"}},
		{"LF in suffix", Framing{Suffix: "x\n"}},
		{"long prefix", Framing{Prefix: "123456789"}},
		{"same control affixes", Framing{Prefix: "\x02", Suffix: "\x02"}},
		{"suffix in prefix", Framing{Prefix: "\x02\x03", Suffix: "\x03"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewFramer("x", tt.cfg, nil)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewFramer(%+v): got %v, want ErrInvalidConfig", tt.cfg, err)
			}
		})
	}
}

func TestTerminatorText(t *testing.T) {
	for _, term := range []Terminator{TermAny, TermCR, TermLF, TermCRLF} {
		b, err := term.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Terminator = -1
		if err := got.UnmarshalText(bytes.ToUpper(b)); err != nil || got != term {
			t.Errorf("round trip %v via %q: got %v, %v", term, b, got, err)
		}
	}
	var term Terminator = TermCR
	if err := term.UnmarshalText(nil); err != nil || term != TermAny {
		t.Errorf("empty: got %v, %v; want any", term, err)
	}
	if err := term.UnmarshalText([]byte("semicolon")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown: got %v, want ErrInvalidConfig", err)
	}
	if _, err := Terminator(7).MarshalText(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("marshal unknown: got %v", err)
	}
	if got := Terminator(7).String(); got != "Terminator(7)" {
		t.Errorf("String: got %q", got)
	}
	if got := Discard(0).String(); got != "Discard(0)" {
		t.Errorf("Discard String: got %q", got)
	}
}

// referenceLines is a plain model of the default framing (TermAny, no
// affixes, no timeout) for the fuzzer: split at CR and LF, ignore empty
// pieces, and classify each; the unterminated tail is incomplete.
func referenceLines(data []byte, maxLen int) (frames []string, st Stats) {
	pieces := bytes.FieldsFunc(data, func(r rune) bool { return r == '\r' || r == '\n' })
	terminated := len(data) > 0 && (data[len(data)-1] == '\r' || data[len(data)-1] == '\n')
	for i, p := range pieces {
		last := i == len(pieces)-1
		switch {
		case last && !terminated:
			if len(p) > maxLen {
				st.Overlong++
			} else {
				st.Incomplete++
			}
		case len(p) > maxLen:
			st.Overlong++
		case !printable(p):
			st.NonPrintable++
		default:
			frames = append(frames, string(p))
			st.Frames++
		}
	}
	return frames, st
}

// FuzzFramer checks that the framer never panics, that every frame it
// delivers is whole and printable, that every other candidate is counted,
// and that chunk boundaries make no difference.
func FuzzFramer(f *testing.F) {
	code := fakeCode(3)
	f.Add([]byte(code+"\r\n"), uint64(7))
	f.Add([]byte("a\rb\nc\r\nd"), uint64(1))
	f.Add([]byte("\x02"+code+"\x03\x02abc\x03\r\n\x02cut"), uint64(5))
	f.Add([]byte("]Q1ABC\r\nABC\r\n\x00\xff\x1b[0m\n"), uint64(3))
	f.Add([]byte(strings.Repeat("Z", 40)+"\n"), uint64(2))
	f.Add([]byte("\x1b[ab\x1b]\x1b[\x1b[x\x1b]\r\r\n\n\r"), uint64(9))

	const maxLen = 32
	configs := []Framing{
		{MaxLen: maxLen, InterCharTimeout: -1},
		{MaxLen: maxLen, InterCharTimeout: -1, Prefix: "\x02", Suffix: "\x03"},
		{MaxLen: maxLen, InterCharTimeout: -1, Prefix: "]Q1", Terminator: TermCRLF},
		{MaxLen: maxLen, InterCharTimeout: -1, Prefix: "\x1b[", Suffix: "\x1b]", Terminator: TermCR},
		{MaxLen: maxLen, InterCharTimeout: -1, Terminator: TermLF},
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		for ci, cfg := range configs {
			whole, wd := newTestFramer(t, cfg)
			wantFrames := whole.Feed(data, t0)
			whole.Reset()

			chunked, cd := newTestFramer(t, cfg)
			r := rand.New(rand.NewPCG(seed, uint64(ci)))
			var gotFrames []Frame
			for p := data; len(p) > 0; {
				n := 1 + r.IntN(len(p))
				gotFrames = append(gotFrames, chunked.Feed(p[:n], t0)...)
				p = p[n:]
			}
			chunked.Reset()

			if !reflect.DeepEqual(gotFrames, wantFrames) || !reflect.DeepEqual(cd.reasons, wd.reasons) || !reflect.DeepEqual(cd.sizes, wd.sizes) {
				t.Fatalf("config %d: chunking changed the result:\nwhole   %q %v %v\nchunked %q %v %v",
					ci, texts(wantFrames), wd.reasons, wd.sizes, texts(gotFrames), cd.reasons, cd.sizes)
			}
			st := whole.Stats()
			if st.Frames != uint64(len(wantFrames)) || st.Discarded() != uint64(len(wd.reasons)) {
				t.Fatalf("config %d: stats %+v disagree with %d frames and %d discards", ci, st, len(wantFrames), len(wd.reasons))
			}
			for _, fr := range wantFrames {
				if len(fr.Text) == 0 || len(fr.Text) > maxLen || !printable([]byte(fr.Text)) {
					t.Fatalf("config %d: delivered %q: want 1..%d printable bytes", ci, fr.Text, maxLen)
				}
				whole := cfg.Prefix + fr.Text + cfg.Suffix
				if !bytes.Contains(data, []byte(whole)) {
					t.Fatalf("config %d: delivered %q, not in the input", ci, fr.Text)
				}
			}
			for _, n := range wd.sizes {
				if n <= 0 || n > len(data) {
					t.Fatalf("config %d: discard of %d bytes from %d bytes of input", ci, n, len(data))
				}
			}
			if ci == 0 {
				refFrames, refStats := referenceLines(data, maxLen)
				if got := texts(wantFrames); !reflect.DeepEqual(got, refFrames) {
					t.Fatalf("frames: got %q, reference %q", got, refFrames)
				}
				if st != refStats {
					t.Fatalf("stats: got %+v, reference %+v", st, refStats)
				}
			}
		}
	})
}

func texts(frames []Frame) []string {
	var s []string
	for _, f := range frames {
		s = append(s, f.Text)
	}
	return s
}

// benchStream is 100 code-sized frames as a scanner sends them.
func benchStream(prefix, suffix string) []byte {
	var b bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&b, "%s%s%s\r\n", prefix, fakeCode(uint64(i)), suffix)
	}
	return b.Bytes()
}

// BenchmarkFramer feeds code-sized frames in 64-byte reads (what a USB-CDC
// read typically returns). The floor does the least any framer must: find
// the line ends and copy each line into a string.
func BenchmarkFramer(b *testing.B) {
	const chunk = 64
	stream := benchStream("", "")
	b.Run("floor", func(b *testing.B) {
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		var sink string
		for b.Loop() {
			var line []byte
			for p := stream; len(p) > 0; {
				c := p[:min(chunk, len(p))]
				p = p[len(c):]
				for len(c) > 0 {
					i := bytes.IndexByte(c, '\n')
					if i < 0 {
						line = append(line, c...)
						break
					}
					line = append(line, c[:i]...)
					sink = string(bytes.TrimSuffix(line, []byte{'\r'}))
					line = line[:0]
					c = c[i+1:]
				}
			}
		}
		_ = sink
	})
	for _, bc := range []struct {
		name           string
		prefix, suffix string
	}{{"crlf", "", ""}, {"stx-etx", "\x02", "\x03"}} {
		stream := benchStream(bc.prefix, bc.suffix)
		b.Run(bc.name, func(b *testing.B) {
			f, _ := newTestFramer(b, Framing{Prefix: bc.prefix, Suffix: bc.suffix})
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				for p := stream; len(p) > 0; {
					c := p[:min(chunk, len(p))]
					p = p[len(c):]
					n += len(f.Feed(c, t0))
				}
			}
			if st := f.Stats(); st.Discarded() != 0 || n == 0 {
				b.Fatalf("stats %+v after %d frames", st, n)
			}
		})
	}
}
