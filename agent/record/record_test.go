package record_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/record/recordtest"
)

func TestTapRoundTrip(t *testing.T) {
	tap := recordtest.Tap(t, 9)
	b, err := tap.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := record.ParseTap(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tap) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, tap)
	}
	if tap.ID() != "bus-17-front/0123456789abcdef0123456789abcdef/9" {
		t.Errorf("ID = %q", tap.ID())
	}
	t.Logf("tap record: %d bytes", len(b))
	// Every strict prefix is refused, and so is a trailing byte.
	for i := range b {
		if _, err := record.ParseTap(b[:i]); !errors.Is(err, record.ErrMalformed) && !errors.Is(err, record.ErrUnsupported) {
			t.Fatalf("prefix of %d bytes: err = %v", i, err)
		}
	}
	if _, err := record.ParseTap(append(b, 0)); !errors.Is(err, record.ErrMalformed) {
		t.Errorf("trailing byte: err = %v", err)
	}
	// Fields that disagree with the code are refused.
	bad := *tap
	bad.Account++
	bb, _ := bad.MarshalBinary()
	if _, err := record.ParseTap(bb); !errors.Is(err, record.ErrMalformed) {
		t.Errorf("account differing from the code: err = %v", err)
	}
	for name, mod := range map[string]func(*record.Tap){
		"bad device id": func(t *record.Tap) { t.DeviceID = "a/b" },
		"short code":    func(t *record.Tap) { t.Code = t.Code[:10] },
		"negative fare": func(t *record.Tap) { t.Fare = -1 },
		"long currency": func(t *record.Tap) { t.Currency = "EURO" },
	} {
		x := *tap
		mod(&x)
		if _, err := x.MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary succeeded", name)
		}
	}
}

func TestValidDeviceID(t *testing.T) {
	for _, id := range []string{"bus-17-front", "a", "A.b_c-1", strings.Repeat("x", 64)} {
		if err := record.ValidDeviceID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "-a", "a/b", "a+b", "a#", "bus 1", strings.Repeat("x", 65)} {
		if err := record.ValidDeviceID(id); !errors.Is(err, record.ErrMalformed) {
			t.Errorf("%q: err = %v, want ErrMalformed", id, err)
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[record.Reason]bool{}
	for _, r := range record.Reasons {
		if r == "" || seen[r] {
			t.Errorf("reason %q empty or listed twice", r)
		}
		seen[r] = true
	}
	for _, r := range paycode.Reasons {
		if !seen[r] || record.OutOfService(r) {
			t.Errorf("paycode reason %q: listed %v, out of service %v", r, seen[r], record.OutOfService(r))
		}
	}
	for _, r := range []record.Reason{record.ReasonNoFare, record.ReasonQueueFull, record.ReasonClock, record.ReasonInternal} {
		if !record.OutOfService(r) {
			t.Errorf("%q is not out of service", r)
		}
	}
}

// FuzzTap feeds arbitrary bytes to the tap record decoder: no panics, and
// whatever decodes re-encodes to the same bytes.
func FuzzTap(f *testing.F) {
	b, _ := recordtest.Tap(f, 1).MarshalBinary()
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		tp, err := record.ParseTap(p)
		if err != nil {
			return
		}
		again, err := tp.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded tap does not re-encode: %v", err)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("re-encoded tap differs")
		}
	})
}

// FuzzDenyList feeds arbitrary bytes to the deny-list decoder.
func FuzzDenyList(f *testing.F) {
	f.Add([]byte(`{"version":1,"entries":[{"account":4,"serial":2,"reason":"x"}]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		dl, err := record.ParseDenyList(p)
		if err != nil {
			return
		}
		if dl.Version == 0 || len(dl.Entries) > record.MaxDenyEntries {
			t.Fatalf("accepted %+v", dl)
		}
	})
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"clock unset", 64, "clock unset"},
		{"open: \x1b[31mno\nsuch\tfile\x7f", 64, "open:  [31mno such file "},
		{"bad \xff\xfe utf-8", 64, "bad ? utf-8"},
		{"C1 \u0085 next line", 64, "C1   next line"},
		{"route \u202e24\u202c, \u200bstop\ufeff", 64, "route 24, stop"},
		{"\u05e7\u05d5 5\u200f", 64, "\u05e7\u05d5 5\u200f"}, // an implicit mark stays
		{"\u0645\u06cc\u200c\u0634\u0648\u062f \U0001F469\u200d\U0001F4BB", 64, "\u0645\u06cc\u200c\u0634\u0648\u062f \U0001F469\u200d\U0001F4BB"}, // joiners stay
		{"déjà vu", 2, "d"}, // not cut inside "é"
		{"déjà vu", 3, "dé"},
		{"", 8, ""},
	} {
		got := record.Printable(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("Printable(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if err := record.CheckText("text", got, tc.max); err != nil {
			t.Errorf("Printable(%q, %d) = %q, which CheckText refuses: %v", tc.in, tc.max, got, err)
		}
	}
	for _, bad := range []string{"a\nb", "a\u0085b", "\xff", strings.Repeat("x", 9)} {
		if record.CheckText("text", bad, 8) == nil {
			t.Errorf("CheckText(%q, 8) passed", bad)
		}
	}
	// Text the release before stored (a Hebrew route with its marks) still
	// passes; hidden characters are the ledger's to refuse in new names.
	if err := record.CheckText("route", "\u202b\u05e7\u05d5 5\u200f\u202c", 64); err != nil {
		t.Errorf("a route with bidirectional marks: %v", err)
	}
	for _, r := range []rune{0x202a, 0x202e, 0x2066, 0x2069, 0x200b, 0x2060, 0xfeff} {
		if !record.Hidden(r) {
			t.Errorf("Hidden(%U) = false", r)
		}
	}
	for _, r := range []rune{0x200c, 0x200d, 0x200e, 0x200f, 0x061c, 'a', 0x05e7} {
		if record.Hidden(r) {
			t.Errorf("Hidden(%U) = true", r)
		}
	}
}
