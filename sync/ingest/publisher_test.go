package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// docSource is a Source over versioned documents that counts its reads and
// can be told to fail.
type docSource struct {
	mu    sync.Mutex
	docs  map[string]uint64 // kind → version (body is derived)
	reads map[string]int
	err   error
}

func newDocSource() *docSource {
	return &docSource{docs: map[string]uint64{}, reads: map[string]int{}}
}

func (s *docSource) source(_ context.Context, kind string) (uint64, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads[kind]++
	if s.err != nil {
		return 0, nil, s.err
	}
	v := s.docs[kind]
	return v, fmt.Appendf(nil, `{"kind":%q,"version":%d}`, kind, v), nil
}

func (s *docSource) set(kind string, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[kind] = version
}

func (s *docSource) readCount(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[kind]
}

// fleetWatcher collects the downlinks published under a prefix, checking
// every one against the fleet key.
type fleetWatcher struct {
	mu   sync.Mutex
	got  []*wire.Downlink
	bad  []error
	seen chan struct{}
}

func (w *world) watchFleet() *fleetWatcher {
	w.tb.Helper()
	fw := &fleetWatcher{seen: make(chan struct{}, 1000)}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(w.url).SetClientID(uniqueName("watch-")).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("watcher: %v", tok.Error())
	}
	w.tb.Cleanup(func() { c.Disconnect(250) })
	topics := wire.Topics{Prefix: w.prefix}
	tok := c.Subscribe(topics.Fleet("+"), 1, func(_ mqtt.Client, m mqtt.Message) {
		if len(m.Payload()) == 0 {
			return
		}
		p, err := wire.Open(m.Payload(), wire.TypeDownlink, pubOf(w.fleet))
		var dl *wire.Downlink
		if err == nil {
			dl, err = wire.ParseDownlink(p)
		}
		if err == nil {
			if kind, kerr := topics.ParseFleet(m.Topic()); kerr != nil || kind != dl.Kind {
				err = fmt.Errorf("a %s downlink on %s", dl.Kind, m.Topic())
			}
		}
		fw.mu.Lock()
		if err != nil {
			fw.bad = append(fw.bad, err)
		} else {
			fw.got = append(fw.got, dl)
		}
		fw.mu.Unlock()
		fw.seen <- struct{}{}
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("watcher: %v", tok.Error())
	}
	if w.broker == nil {
		w.tb.Cleanup(func() {
			var ts []string
			for _, k := range record.DocKinds {
				ts = append(ts, topics.Fleet(k))
			}
			clearRetained(w.tb, w.url, ts...)
		})
	}
	return fw
}

// wait waits for the next downlink message.
func (fw *fleetWatcher) wait(tb testing.TB) {
	tb.Helper()
	select {
	case <-fw.seen:
	case <-time.After(waitTimeout):
		tb.Fatal("no downlink message")
	}
}

// versions returns the versions received of kind, in order.
func (fw *fleetWatcher) versions(tb testing.TB, kind string) []uint64 {
	tb.Helper()
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, err := range fw.bad {
		tb.Errorf("downlink: %v", err)
	}
	var out []uint64
	for _, dl := range fw.got {
		if dl.Kind == kind {
			out = append(out, dl.Version)
		}
	}
	return out
}

func (w *world) publisherConfig(src Source) PublisherConfig {
	return PublisherConfig{
		MQTTConfig: MQTTConfig{
			Brokers: []string{w.url}, ConnectTimeout: 20 * time.Second, MaxReconnectInterval: 300 * time.Millisecond,
		},
		TopicPrefix:      w.prefix,
		FleetKey:         w.fleet,
		Source:           src,
		CoalesceInterval: 50 * time.Millisecond,
		PollInterval:     time.Hour, // tests that want polls set it
		PublishTimeout:   30 * time.Second,
		Logger:           testLogger(w.tb),
	}
}

// startPublisher runs a Publisher until the end of the test and waits for
// its connection.
func (w *world) startPublisher(cfg PublisherConfig) *Publisher {
	w.tb.Helper()
	p, err := NewPublisher(cfg)
	if err != nil {
		w.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	w.tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				w.tb.Errorf("Publisher.Run = %v", err)
			}
		case <-time.After(waitTimeout):
			w.tb.Error("Publisher.Run did not return")
		}
	})
	waitFor(w.tb, "the publisher to connect", p.Connected)
	return p
}

// TestPublisherCoalesces: 100 Changed calls in a burst make one publication.
func TestPublisherCoalesces(t *testing.T) {
	w := newWorld(t, "")
	fw := w.watchFleet()
	src := newDocSource()
	p := w.startPublisher(w.publisherConfig(src.source))
	// On connecting it read every kind; none has a document yet.
	for _, k := range record.DocKinds {
		waitFor(t, "the first read of "+k, func() bool { return src.readCount(k) >= 1 })
	}
	src.set(record.DocDenyList, 100) // 100 changes …
	reads := src.readCount(record.DocDenyList)
	for range 100 { // … each announced
		p.Changed(record.DocDenyList)
	}
	fw.wait(t)
	// Changed calls after the first read are coalesced into one more read
	// at most CoalesceInterval later; it finds nothing newer.
	p.Changed(record.DocDenyList)
	waitFor(t, "the coalesced read", func() bool { return src.readCount(record.DocDenyList) >= reads+2 })
	if got := fw.versions(t, record.DocDenyList); len(got) != 1 || got[0] != 100 {
		t.Errorf("deny lists published %v, want one, version 100", got)
	}
	if st := p.Stats(); st.Publishes != 1 || st.Versions[record.DocDenyList] != 100 {
		t.Errorf("Stats = %+v, want 1 publication of version 100", st)
	}
	if reads := src.readCount(record.DocDenyList) - reads; reads > 4 {
		t.Errorf("%d reads for 101 Changed calls, want a handful", reads)
	}
	if got, ok := w.broker.Retained(wire.Topics{Prefix: w.prefix}.Fleet(record.DocDenyList)); !ok || len(got) == 0 {
		t.Error("deny list not retained on the broker")
	}
}

// TestPublisherPollsAndRepublishes: a change without Changed goes out at the
// next poll; after the broker restarts, everything is published again (a
// broker without persistence would have lost it).
func TestPublisherPollsAndRepublishes(t *testing.T) {
	w := newWorld(t, "")
	src := newDocSource()
	src.set(record.DocKeyring, 3)
	src.set(record.DocFares, 9)
	cfg := w.publisherConfig(src.source)
	cfg.PollInterval = 50 * time.Millisecond
	p := w.startPublisher(cfg)
	waitFor(t, "the documents published on connecting", func() bool {
		v := p.Stats().Versions
		return v[record.DocKeyring] == 3 && v[record.DocFares] == 9
	})
	src.set(record.DocKeyring, 4)
	waitFor(t, "the polled keyring", func() bool { return p.Stats().Versions[record.DocKeyring] == 4 })

	before := p.Stats().Publishes
	w.broker.Restart()
	waitFor(t, "the documents republished", func() bool { return p.Stats().Publishes >= before+2 })
	fw := w.watchFleet() // a new subscriber gets the retained documents
	fw.wait(t)
	fw.wait(t)
	if got := fw.versions(t, record.DocKeyring); len(got) == 0 || got[len(got)-1] != 4 {
		t.Errorf("keyring versions retained %v, want 4", got)
	}
}

// TestPublisherClearsDocumentGone: a document the Source no longer has (a
// deny list too large for one downlink) is cleared from the broker, so
// devices do not get a stale one on every connection.
func TestPublisherClearsDocumentGone(t *testing.T) {
	w := newWorld(t, "")
	src := newDocSource()
	src.set(record.DocDenyList, 5)
	p := w.startPublisher(w.publisherConfig(src.source))
	topic := wire.Topics{Prefix: w.prefix}.Fleet(record.DocDenyList)
	waitFor(t, "the deny list retained", func() bool { b, ok := w.broker.Retained(topic); return ok && len(b) > 0 })
	src.set(record.DocDenyList, 0)
	p.Changed(record.DocDenyList)
	waitFor(t, "the retained deny list cleared", func() bool { b, ok := w.broker.Retained(topic); return !ok || len(b) == 0 })
	// The publisher counts the clear once the broker has it: the broker's
	// state can be seen first (the check right after the wait failed once
	// in make test).
	waitFor(t, "the clear counted", func() bool { return p.Stats().Versions[record.DocDenyList] == 0 })
}

// TestPublisherToUplink: the documents reach a real device and are applied.
func TestPublisherToUplink(t *testing.T) {
	w := newWorld(t, "")
	w.start(w.config())
	src := newDocSource()
	src.set(record.DocFares, 2)
	p := w.startPublisher(w.publisherConfig(src.source))
	d := w.newRealDevice(5, 10)
	waitFor(t, "the fare table applied", func() bool { return d.state.Versions()[record.DocFares] == 2 })
	src.set(record.DocDenyList, 7)
	p.Changed(record.DocDenyList)
	waitFor(t, "the deny list applied", func() bool { return d.state.Versions()[record.DocDenyList] == 7 })
	waitFor(t, "the queue to drain", func() bool { return d.queued() == 0 })
}

func TestPublish(t *testing.T) {
	w := newWorld(t, "")
	fw := w.watchFleet()
	src := newDocSource()
	p := w.startPublisher(w.publisherConfig(src.source))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := p.Publish(ctx, record.DocKeyring, 5, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, record.DocKeyring, 5, []byte(`{}`)); err != nil {
		t.Errorf("same version again: %v", err)
	}
	if err := p.Publish(ctx, record.DocKeyring, 4, []byte(`{}`)); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("older version: %v, want ErrStaleVersion", err)
	}
	if err := p.Publish(ctx, "nonsense", 1, nil); !errors.Is(err, wire.ErrUnsupported) {
		t.Errorf("unknown kind: %v, want wire.ErrUnsupported", err)
	}
	if err := p.Publish(ctx, record.DocFares, 0, nil); err == nil {
		t.Error("version 0 published")
	}
	fw.wait(t)
	fw.wait(t)
	if got := fw.versions(t, record.DocKeyring); len(got) != 2 || got[0] != 5 || got[1] != 5 {
		t.Errorf("keyrings %v, want 5 twice", got)
	}
}

func TestPublisherSourceErrors(t *testing.T) {
	w := newWorld(t, "")
	src := newDocSource()
	src.err = errors.New("database is down")
	src.set(record.DocFares, 1)
	cfg := w.publisherConfig(src.source)
	cfg.PollInterval = 20 * time.Millisecond
	p := w.startPublisher(cfg)
	waitFor(t, "failed reads", func() bool { return p.Stats().ReadErrors >= 6 })
	src.mu.Lock()
	src.err = nil
	src.mu.Unlock()
	waitFor(t, "the fare table published", func() bool { return p.Stats().Versions[record.DocFares] == 1 })
}

func TestPublisherConfig(t *testing.T) {
	base := PublisherConfig{
		MQTTConfig: MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1883"}},
		FleetKey:   newKey(t),
		Source:     newDocSource().source,
	}
	if _, err := NewPublisher(base); err != nil {
		t.Fatalf("NewPublisher(minimal) = %v", err)
	}
	for _, tc := range []struct {
		name string
		set  func(*PublisherConfig)
	}{
		{"no source", func(c *PublisherConfig) { c.Source = nil }},
		{"no fleet key", func(c *PublisherConfig) { c.FleetKey = nil }},
		{"unknown kind", func(c *PublisherConfig) { c.Kinds = []string{"tickets"} }},
		{"negative poll", func(c *PublisherConfig) { c.PollInterval = -time.Second }},
		{"no broker", func(c *PublisherConfig) { c.Brokers = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.set(&cfg)
			if _, err := NewPublisher(cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("NewPublisher = %v, want ErrConfig", err)
			}
		})
	}
}

// TestPublisherMosquitto publishes through the Mosquitto named by
// FAREGO_TEST_MOSQUITTO, under a prefix of its own.
func TestPublisherMosquitto(t *testing.T) {
	w := newWorld(t, brokertest.MosquittoURL(t))
	fw := w.watchFleet()
	src := newDocSource()
	src.set(record.DocKeyring, 2)
	w.startPublisher(w.publisherConfig(src.source))
	fw.wait(t)
	if got := fw.versions(t, record.DocKeyring); len(got) != 1 || got[0] != 2 {
		t.Errorf("keyrings %v, want version 2", got)
	}
}
