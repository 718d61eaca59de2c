package ratelog

import (
	"fmt"
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

func TestBoundedKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(func() time.Time { return now }, time.Minute)
	for i := range maxKeys {
		l.Allow(fmt.Sprint(i))
	}
	if ok, _ := l.Allow("new"); ok {
		t.Error("a new key went through with the table full of fresh keys")
	}
	now = now.Add(2 * time.Minute)
	if ok, _ := l.Allow("new"); !ok {
		t.Error("old keys were not forgotten")
	}
	if len(l.keys) > maxKeys {
		t.Errorf("%d keys remembered, limit %d", len(l.keys), maxKeys)
	}
}
