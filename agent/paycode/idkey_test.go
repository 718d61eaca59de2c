package paycode

import "testing"

func TestIDFromKey(t *testing.T) {
	for _, id := range []ID{{}, {Account: 4242, Serial: 3, Time: 1767229200, Counter: 17},
		{Account: 1<<63 - 1, Serial: 1<<32 - 1, Time: 1<<32 - 1, Counter: 1<<16 - 1}} {
		got, ok := IDFromKey(id.Key())
		if !ok || got != id {
			t.Errorf("IDFromKey(%+v.Key()) = %+v, %v", id, got, ok)
		}
	}
	for _, n := range []int{0, 17, 19} {
		if _, ok := IDFromKey(make([]byte, n)); ok {
			t.Errorf("IDFromKey of %d bytes: ok", n)
		}
	}
}
