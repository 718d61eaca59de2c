package feedback

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	var rec Recorder
	ctx := context.Background()

	got := make(chan Event, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		e, err := rec.Wait(wctx, 3)
		if err != nil {
			t.Error(err)
		}
		got <- e
	}()
	rec.Accepted(ctx, Accept{Fare: 250, Currency: "EUR", Scanner: "front"})
	rec.Rejected(ctx, Reject{Reason: "duplicate", Scanner: "rear"})
	rec.OutOfService(ctx, "queue full")

	want := []Event{
		{Kind: KindAccepted, Accept: Accept{Fare: 250, Currency: "EUR", Scanner: "front"}},
		{Kind: KindRejected, Reject: Reject{Reason: "duplicate", Scanner: "rear"}},
		{Kind: KindOutOfService, Message: "queue full"},
	}
	if e := <-got; !reflect.DeepEqual(e, want[2]) {
		t.Errorf("Wait(3): got %+v, want %+v", e, want[2])
	}
	if e, err := rec.Wait(ctx, 1); err != nil || !reflect.DeepEqual(e, want[0]) {
		t.Errorf("Wait(1): got %+v, %v", e, err)
	}
	if evs := rec.Events(); !reflect.DeepEqual(evs, want) {
		t.Errorf("Events: got %+v, want %+v", evs, want)
	}
	if s := KindOutOfService.String(); s != "out_of_service" {
		t.Errorf("Kind String: got %q", s)
	}
}

func TestRecorderWaitCancel(t *testing.T) {
	var rec Recorder
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := rec.Wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
	if _, err := rec.Wait(context.Background(), 0); err == nil {
		t.Error("Wait(0): no error")
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var rec Recorder
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			for range 100 {
				rec.Accepted(ctx, Accept{Fare: int64(i)})
			}
		})
	}
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if _, err := rec.Wait(wctx, 1000); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := len(rec.Events()); n != 1000 {
		t.Errorf("got %d events, want 1000", n)
	}
}

func TestMulti(t *testing.T) {
	boom := errors.New("boom")
	a := &Recorder{}
	b := &Recorder{Fail: func(e Event) error {
		if e.Kind == KindRejected {
			return boom
		}
		return nil
	}}
	m := Multi{a, b}
	ctx := context.Background()
	if err := m.Accepted(ctx, Accept{Fare: 1}); err != nil {
		t.Errorf("Accepted: %v", err)
	}
	if err := m.Rejected(ctx, Reject{Reason: "denied"}); !errors.Is(err, boom) {
		t.Errorf("Rejected: got %v, want boom", err)
	}
	if err := m.OutOfService(ctx, "x"); err != nil {
		t.Errorf("OutOfService: %v", err)
	}
	for i, r := range []*Recorder{a, b} {
		if n := len(r.Events()); n != 3 {
			t.Errorf("output %d: got %d events, want 3 (all outputs are called even when one fails)", i, n)
		}
	}
}
