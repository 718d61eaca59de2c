package ratelog

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(func() time.Time { return now }, time.Minute)
	if ok, n := l.Allow("a"); !ok || n != 0 {
		t.Fatalf("first line: %v, %d", ok, n)
	}
	for range 3 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a repeat within the interval went through")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("another key was held back")
	}
	now = now.Add(time.Minute)
	if ok, n := l.Allow("a"); !ok || n != 3 {
		t.Errorf("after the interval: %v, %d held back, want true, 3", ok, n)
	}
}

// The table is bounded in keys and in their size: with it full of fresh
// keys, new keys share one line an interval (the log is not silenced, and
// the line says how many were held back), and keys already there keep
// their own; a 64 KiB key is remembered as its hash.
func TestBoundedKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(func() time.Time { return now }, time.Minute)
	for i := range maxKeys {
		l.Allow(fmt.Sprint(i))
	}
	if ok, _ := l.Allow("new"); !ok {
		t.Error("the first new key beyond the table was not logged")
	}
	for i := range 10 {
		if ok, _ := l.Allow(fmt.Sprint("newer ", i)); ok {
			t.Error("a second new key beyond the table went through in the same interval")
		}
	}
	if ok, _ := l.Allow("7"); ok {
		t.Error("a known key went through within its interval")
	}
	now = now.Add(2 * time.Minute)
	if ok, n := l.Allow("7"); !ok || n != 1 {
		t.Errorf("a known key after its interval: %v, %d held back; want true, 1", ok, n)
	}
	if ok, _ := l.Allow("new"); !ok {
		t.Error("old keys were not forgotten")
	}
	if len(l.keys) > maxKeys {
		t.Errorf("%d keys remembered, limit %d", len(l.keys), maxKeys)
	}
	big := strings.Repeat("u", 65535)
	if ok, _ := l.Allow(big); !ok {
		t.Error("a long key was not logged")
	}
	if ok, _ := l.Allow(big); ok {
		t.Error("a long key repeated went through")
	}
	for k := range l.keys {
		if len(k) > maxKeyLen {
			t.Errorf("a key of %d bytes is kept", len(k))
		}
	}
}

// Beyond the table, the shared line says how many new keys it held back.
func TestOverflowCounts(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(func() time.Time { return now }, time.Minute)
	fill := func(prefix string) {
		for i := range maxKeys {
			if ok, _ := l.Allow(fmt.Sprint(prefix, i)); !ok {
				t.Fatalf("key %d of the table held back", i)
			}
		}
	}
	fill("a")
	if ok, n := l.Allow("o1"); !ok || n != 0 {
		t.Fatalf("the first beyond the table: %v, %d", ok, n)
	}
	for _, k := range []string{"o2", "o3", "o4"} {
		if ok, _ := l.Allow(k); ok {
			t.Fatalf("%s went through", k)
		}
	}
	now = now.Add(61 * time.Second)
	fill("b") // the a keys age out, the b keys fill the table again
	if ok, n := l.Allow("o5"); !ok || n != 3 {
		t.Errorf("beyond the table an interval later: %v, %d held back; want true, 3", ok, n)
	}
}
