package ingest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// Defaults of the zero fields of PublisherConfig.
const (
	// DefaultPublisherClientIDPrefix starts the random client id of a
	// Publisher whose MQTTConfig.ClientID is empty.
	DefaultPublisherClientIDPrefix = "farego-downlink-"
	// DefaultCoalesceInterval is the least time between two reads of one
	// kind's document after Changed.
	DefaultCoalesceInterval = time.Second
	// DefaultPollInterval is how often every document is read even without
	// Changed (changes made by other instances, or by the ledger itself).
	DefaultPollInterval = 10 * time.Second
	// DefaultSourceTimeout bounds one Source call.
	DefaultSourceTimeout = 30 * time.Second
)

// Source returns the current version and body of a fleet document (kind is
// record.DocKeyring, DownlinkDenyList or DownlinkFares). Version 0 means
// there is no document of that kind yet: nothing is published.
type Source func(ctx context.Context, kind string) (version uint64, body []byte, err error)

// ShardSource returns the deny list cut into record.DenyShardCount shards
// (record.DenyShards) and its version. since is the version it returned
// last (0 for a full read): when the list is still at that version it may
// return (since, nil, nil) without reading it.
type ShardSource func(ctx context.Context, since uint64) (version uint64, shards []record.DenyShard, err error)

// shardsKind is the Publisher's name for the deny-list shards in its
// bookkeeping (dirty, force, published).
const shardsKind = record.DocDenyList + "/*"

// shardState is what was last published of one shard.
type shardState struct {
	version uint64
	hash    [sha256.Size]byte
}

// PublisherConfig configures a Publisher. The zero value of every optional
// field means its default.
type PublisherConfig struct {
	// MQTTConfig is the connection to the broker (a connection of its own,
	// beside the Ingest's: give it another ClientID if you set one).
	MQTTConfig

	// TopicPrefix is the topic prefix (default wire.DefaultPrefix).
	TopicPrefix string

	// FleetKey signs the downlinks. Required.
	FleetKey ed25519.PrivateKey

	// Source reads the current documents. Required.
	Source Source

	// Kinds are the documents published (default record.DocKinds; the
	// software rollout, wire.DocRelease, may be added).
	Kinds []string

	// DenyShards, if set, reads the deny list in shards: the Publisher
	// publishes each shard whose content changed since it last published
	// it as a record.DocDenyShard downlink (version: the list's), retained,
	// on PREFIX/fleet/denylist/N, after Changed(record.DocDenyList) and
	// every poll, and every shard again after a (re)connection; after the
	// shards, when any went out, the shard index (record.DocDenyIndex:
	// each shard's version), retained, on PREFIX/fleet/denyindex. A shard
	// whose downlink would pass wire.MaxDownlinkSize is not published (and
	// logged): the deny list is then too large or too skewed.
	DenyShards ShardSource

	// CoalesceInterval is the least time between two Source reads of one
	// kind after Changed (default DefaultCoalesceInterval): a burst of
	// changes is published once.
	CoalesceInterval time.Duration

	// PollInterval is how often every kind is read without Changed
	// (default DefaultPollInterval).
	PollInterval time.Duration

	// SourceTimeout bounds one Source call (default DefaultSourceTimeout).
	SourceTimeout time.Duration

	// PublishTimeout bounds the wait for the broker to take a downlink
	// (default DefaultPublishTimeout).
	PublishTimeout time.Duration

	// Logger receives the Publisher's log records; nil discards them.
	Logger *slog.Logger

	// Now is the clock of the downlinks' IssuedAt; nil means time.Now.
	Now func() time.Time
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	c.MQTTConfig = c.MQTTConfig.withDefaults(DefaultPublisherClientIDPrefix)
	if c.TopicPrefix == "" {
		c.TopicPrefix = wire.DefaultPrefix
	}
	if len(c.Kinds) == 0 {
		c.Kinds = record.DocKinds
	}
	c.Kinds = slices.Clone(c.Kinds)
	if c.CoalesceInterval == 0 {
		c.CoalesceInterval = DefaultCoalesceInterval
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.SourceTimeout == 0 {
		c.SourceTimeout = DefaultSourceTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c *PublisherConfig) validate() error {
	if err := c.MQTTConfig.validate(); err != nil {
		return err
	}
	if err := validPrefix(c.TopicPrefix); err != nil {
		return err
	}
	if len(c.FleetKey) != ed25519.PrivateKeySize {
		return configErr("FleetKey is %d bytes, want an Ed25519 private key (%d bytes)", len(c.FleetKey), ed25519.PrivateKeySize)
	}
	if c.Source == nil {
		return configErr("no Source")
	}
	for _, k := range c.Kinds {
		if !slices.Contains(record.DocKinds, k) && k != wire.DocRelease {
			return configErr("unknown downlink kind %q", k)
		}
	}
	if c.CoalesceInterval < 0 || c.PollInterval <= 0 || c.SourceTimeout < 0 || c.PublishTimeout < 0 {
		return configErr("negative interval or timeout")
	}
	return nil
}

// Publisher publishes the fleet downlinks (keyring, deny list, fare table):
// fleet-signed wire.Downlink messages, retained, QoS 1, on PREFIX/fleet/KIND.
// Use NewPublisher, then Run; call Changed when a document changed.
type Publisher struct {
	cfg    PublisherConfig
	log    *slog.Logger
	topics wire.Topics

	wake        chan struct{} // Changed
	reconnected chan struct{} // a (re)connection: republish everything
	conn        atomic.Pointer[conn]
	running     atomic.Bool

	pubMu sync.Mutex // serializes publications, so versions only go up

	mu        sync.Mutex
	dirty     map[string]bool   // Changed, or a poll, since the last read
	force     map[string]bool   // republish even if not newer (after a connection)
	published map[string]uint64 // last version published, by kind
	srcErrs   map[string]int    // Source failures in a row, by kind
	pubErrs   int               // failed publications in a row
	stats     PublisherStats

	shards    [record.DenyShardCount]shardState // DenyShards: each shard as last published
	shardRead uint64                            // the version DenyShards last returned
	tooLarge  [record.DenyShardCount]bool       // shards too large to publish (logged once)
	// indexVersion is the version of the shard index last published
	// (under pubMu).
	indexVersion uint64
}

// PublisherStats are a Publisher's counters since NewPublisher.
type PublisherStats struct {
	Connected   bool
	Reads       uint64            // Source calls
	ReadErrors  uint64            // failed Source calls
	Publishes   uint64            // downlinks published
	PublishErrs uint64            // publications that failed
	Shards      uint64            // deny-list shard downlinks published (in Publishes too)
	Indexes     uint64            // deny-list shard indexes published (not in Publishes)
	Versions    map[string]uint64 // last version published, by kind ("denylist/*": of the shards)
}

// NewPublisher checks cfg and returns a Publisher. It does not connect:
// Run does.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Publisher{
		cfg: cfg, log: cfg.Logger, topics: wire.Topics{Prefix: cfg.TopicPrefix},
		wake: make(chan struct{}, 1), reconnected: make(chan struct{}, 1),
		dirty: map[string]bool{}, force: map[string]bool{}, published: map[string]uint64{}, srcErrs: map[string]int{},
	}, nil
}

// Changed tells the Publisher that a kind's document may have changed. It
// never blocks; the document is read (and published if newer) at most once
// per CoalesceInterval, so a burst of changes makes one publication.
func (p *Publisher) Changed(kind string) {
	shards := kind == record.DocDenyList && p.cfg.DenyShards != nil
	if !slices.Contains(p.cfg.Kinds, kind) && !shards {
		return
	}
	p.mu.Lock()
	p.dirty[kind] = true
	if shards {
		p.dirty[shardsKind] = true
	}
	p.mu.Unlock()
	signal(p.wake)
}

// kinds returns what Run keeps published: the configured kinds, and the
// deny-list shards.
func (p *Publisher) kinds() []string {
	if p.cfg.DenyShards == nil {
		return p.cfg.Kinds
	}
	return append(slices.Clone(p.cfg.Kinds), shardsKind)
}

// Connected reports whether the Publisher is connected.
func (p *Publisher) Connected() bool {
	c := p.conn.Load()
	return c != nil && c.connected()
}

// Stats returns a snapshot of the Publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Versions = make(map[string]uint64, len(p.published))
	for k, v := range p.published {
		s.Versions[k] = v
	}
	s.Connected = p.Connected()
	return s
}

// Publish publishes version of a kind's document now: a fleet-signed
// wire.Downlink, retained, at QoS 1, on PREFIX/fleet/KIND. A version older
// than the last one this Publisher published is refused (ErrStaleVersion);
// the same version is published again. ErrNotConnected while the
// Publisher is not connected (Run publishes the current documents on every
// connection anyway).
func (p *Publisher) Publish(ctx context.Context, kind string, version uint64, body []byte) error {
	if !slices.Contains(p.cfg.Kinds, kind) {
		return fmt.Errorf("ingest: publish: %w: downlink kind %q", wire.ErrUnsupported, kind)
	}
	msg, err := p.seal(kind, version, body)
	if err != nil {
		return err
	}
	c := p.conn.Load()
	if c == nil || c.current() == nil {
		return ErrNotConnected
	}

	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	last := p.published[kind]
	p.mu.Unlock()
	if version < last {
		return fmt.Errorf("%w: %s version %d, published %d", ErrStaleVersion, kind, version, last)
	}
	err = c.publish(ctx, p.topics.Fleet(kind), true, msg, p.cfg.PublishTimeout)
	p.mu.Lock()
	if err != nil {
		p.stats.PublishErrs++
	} else {
		p.stats.Publishes++
		p.published[kind] = version
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	p.log.Info("ingest: downlink published", "kind", kind, "version", version, "size", len(msg))
	return nil
}

// seal makes a fleet-signed downlink of kind, refusing one larger than
// wire.MaxDownlinkSize.
func (p *Publisher) seal(kind string, version uint64, body []byte) ([]byte, error) {
	dl := wire.Downlink{Kind: kind, Version: version, IssuedAt: p.cfg.Now(), Body: body}
	payload, err := dl.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("ingest: publish %s: %w", kind, err)
	}
	msg, err := wire.Seal(wire.TypeDownlink, payload, true, p.cfg.FleetKey)
	if err != nil {
		return nil, fmt.Errorf("ingest: publish %s: %w", kind, err)
	}
	if len(msg) > wire.MaxDownlinkSize {
		return nil, fmt.Errorf("ingest: publish %s: %w: %d bytes, limit %d", kind, wire.ErrTooLarge, len(msg), wire.MaxDownlinkSize)
	}
	return msg, nil
}

// syncShards reads the deny list in shards and publishes each shard whose
// content changed since it was last published (with force, every shard).
// It reports false when a publication failed and should be tried again
// soon.
func (p *Publisher) syncShards(ctx context.Context, _ string, force bool) bool {
	p.mu.Lock()
	p.dirty[shardsKind] = false
	p.stats.Reads++
	since := p.shardRead
	p.mu.Unlock()
	if force {
		since = 0
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.SourceTimeout)
	version, shards, err := p.cfg.DenyShards(sctx, since)
	cancel()
	if !p.sourceResult(shardsKind, err) {
		return true // the next poll reads it again; force stays set
	}
	if version == 0 || (shards == nil && !force) {
		p.mu.Lock()
		p.force[shardsKind] = false
		p.mu.Unlock()
		return true
	}
	if len(shards) != record.DenyShardCount {
		p.log.Error("ingest: deny-list shards: wrong count", "count", len(shards))
		return true
	}
	c := p.conn.Load()
	if c == nil || c.current() == nil {
		p.markShardsDirty()
		return false
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	sent, bytes := 0, 0
	for i := range shards {
		body, err := shards[i].MarshalBinary()
		var msg []byte
		if err == nil {
			h := sha256.Sum256(body)
			last := p.shards[i]
			v := version
			switch {
			case last.version != 0 && last.hash == h && force:
				v = last.version // the same content, published again at its version
			case last.version != 0 && last.hash == h, version <= last.version:
				continue // unchanged (or changed only by entries expiring: devices drop those themselves)
			}
			if msg, err = p.seal(record.DocDenyShard, v, body); err == nil {
				err = c.publish(ctx, p.topics.DenyShard(i), true, msg, p.cfg.PublishTimeout)
				if err != nil {
					p.mu.Lock()
					p.stats.PublishErrs++
					p.mu.Unlock()
					p.markShardsDirty()
					p.publishFailed(ctx, shardsKind, version, err)
					return false
				}
				p.shards[i] = shardState{version: v, hash: h}
				p.tooLarge[i] = false
				sent++
				bytes += len(msg)
				continue
			}
		}
		if !p.tooLarge[i] {
			p.tooLarge[i] = true
			p.log.Error("ingest: deny-list shard cannot be published", "shard", i, "entries", shards[i].Len(), "err", err)
		}
	}
	// The index goes out after the shards it names, so that a retained
	// shard is never older than the retained index says.
	if sent > 0 || force || p.indexVersion == 0 {
		if err := p.publishIndex(ctx, c, version); err != nil {
			p.mu.Lock()
			p.stats.PublishErrs++
			p.mu.Unlock()
			p.markShardsDirty()
			p.publishFailed(ctx, record.DocDenyIndex, version, err)
			return false
		}
	}
	p.mu.Lock()
	p.shardRead = version
	p.force[shardsKind] = false
	p.published[shardsKind] = version
	p.stats.Publishes += uint64(sent)
	p.stats.Shards += uint64(sent)
	n := p.pubErrs
	p.pubErrs = 0
	p.mu.Unlock()
	if n > 0 {
		p.log.Info(fmt.Sprintf("ingest: downlinks published again after %d failures", n), "count", n)
	}
	if sent > 0 {
		p.log.Info("ingest: deny-list shards published", "version", version, "shards", sent, "bytes", bytes)
	}
	return true
}

// publishIndex publishes the deny-list shard index (record.DenyIndex: the
// version of each shard as last published, 0 for one never published),
// retained, on PREFIX/fleet/denyindex, at version (never below the last
// index published). The caller holds pubMu.
func (p *Publisher) publishIndex(ctx context.Context, c *conn, version uint64) error {
	var x record.DenyIndex
	for i := range p.shards {
		x.Versions[i] = p.shards[i].version
	}
	body, err := x.MarshalBinary()
	if err != nil {
		return err
	}
	version = max(version, p.indexVersion)
	msg, err := p.seal(record.DocDenyIndex, version, body)
	if err != nil {
		return err
	}
	if err := c.publish(ctx, p.topics.DenyIndex(), true, msg, p.cfg.PublishTimeout); err != nil {
		return err
	}
	p.indexVersion = version
	p.mu.Lock()
	p.stats.Indexes++
	p.mu.Unlock()
	p.log.Debug("ingest: deny-list shard index published", "version", version, "size", len(msg))
	return nil
}

// clear removes the retained downlink of a kind the Source has no
// document of (any more): the whole deny list once it no longer fits one
// downlink, so validators do not get a stale one on every connection. It
// reports false when it should be tried again soon.
func (p *Publisher) clear(ctx context.Context, kind string, last uint64) bool {
	c := p.conn.Load()
	if c == nil || c.current() == nil {
		return false
	}
	p.pubMu.Lock()
	err := c.publish(ctx, p.topics.Fleet(kind), true, []byte{}, p.cfg.PublishTimeout)
	p.pubMu.Unlock()
	p.mu.Lock()
	if err == nil {
		p.force[kind] = false
		p.published[kind] = 0
	} else {
		p.dirty[kind] = true
	}
	p.mu.Unlock()
	if err != nil {
		p.publishFailed(ctx, kind, 0, err)
		return false
	}
	if last > 0 {
		p.log.Info("ingest: retained downlink cleared: no document of this kind any more", "kind", kind, "was", last)
	}
	return true
}

// markShardsDirty makes the shards be read again at the next round.
func (p *Publisher) markShardsDirty() {
	p.mu.Lock()
	p.dirty[shardsKind] = true
	p.mu.Unlock()
}

// Run connects to the broker and keeps the fleet documents published until
// ctx is done: after every (re)connection it publishes each kind's current
// document (the broker may have lost its retained messages); after Changed
// it reads the kind's document at most once per CoalesceInterval and
// publishes it if its version is newer than the last published; every
// PollInterval it does the same for every kind. It returns nil when ctx is
// done, after disconnecting.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.running.Store(false)

	kinds := p.kinds()
	c := newConn("downlink publisher", p.cfg.MQTTConfig, p.log, nil, nil, func() {
		p.mu.Lock()
		for _, k := range kinds {
			p.dirty[k], p.force[k] = true, true
		}
		p.mu.Unlock()
		signal(p.reconnected)
	})
	p.conn.Store(c)
	stopConn := c.start(ctx)
	defer stopConn()

	poll := time.NewTicker(p.cfg.PollInterval)
	defer poll.Stop()
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	lastRead := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.reconnected:
		case <-p.wake:
		case <-due.C:
		case <-poll.C:
			p.mu.Lock()
			for _, k := range kinds {
				p.dirty[k] = true
			}
			p.mu.Unlock()
		}
		if c.current() == nil {
			continue // every (re)connection publishes everything
		}
		next := time.Duration(-1)
		for _, k := range kinds {
			p.mu.Lock()
			dirty, force := p.dirty[k], p.force[k]
			p.mu.Unlock()
			if !dirty {
				continue
			}
			if wait := p.cfg.CoalesceInterval - time.Since(lastRead[k]); !force && wait > 0 {
				if next < 0 || wait < next {
					next = wait
				}
				continue
			}
			lastRead[k] = time.Now()
			sync := p.sync
			if k == shardsKind {
				sync = p.syncShards
			}
			if !sync(ctx, k, force) && ctx.Err() == nil {
				// A failed publication is tried again after the interval.
				if next < 0 || p.cfg.CoalesceInterval < next {
					next = p.cfg.CoalesceInterval
				}
			}
		}
		if next >= 0 {
			due.Reset(next)
		}
	}
}

// sourceResult counts a Source (or DenyShards) read: an error is logged
// once per run of them, the recovery once. It reports whether the read
// succeeded.
func (p *Publisher) sourceResult(kind string, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.stats.ReadErrors++
		p.srcErrs[kind]++
		if p.srcErrs[kind] == 1 && !errors.Is(err, context.Canceled) {
			p.log.Error("ingest: cannot read a fleet document; trying again at the next poll", "kind", kind, "err", err)
		}
		return false
	}
	if n := p.srcErrs[kind]; n > 0 {
		p.srcErrs[kind] = 0
		p.log.Info(fmt.Sprintf("ingest: fleet document readable again after %d failures", n), "kind", kind, "count", n)
	}
	return true
}

// publishFailed counts and logs a failed publication (the first of a run
// as a warning).
func (p *Publisher) publishFailed(ctx context.Context, kind string, version uint64, err error) {
	p.mu.Lock()
	p.pubErrs++
	n := p.pubErrs
	p.mu.Unlock()
	switch {
	case ctx.Err() != nil:
	case n == 1:
		p.log.Warn("ingest: downlink not published; trying again", "kind", kind, "version", version, "err", err)
	default:
		p.log.Debug("ingest: downlink not published", "kind", kind, "err", err, "count", n)
	}
}

// sync reads a kind's document and publishes it if it is newer than the
// last published (or, with force, as new). It reports false when the
// publication failed and should be tried again soon.
func (p *Publisher) sync(ctx context.Context, kind string, force bool) bool {
	p.mu.Lock()
	p.dirty[kind] = false
	p.stats.Reads++
	p.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, p.cfg.SourceTimeout)
	version, body, err := p.cfg.Source(sctx, kind)
	cancel()
	if !p.sourceResult(kind, err) {
		return true // the next poll reads it again; force stays set
	}
	p.mu.Lock()
	last := p.published[kind]
	p.mu.Unlock()
	if version == 0 && (force || last > 0) {
		return p.clear(ctx, kind, last)
	}
	if version == 0 || version < last || (version == last && !force) {
		if force && version != 0 && version < last {
			p.log.Warn("ingest: fleet document older than the one published; not republished",
				"kind", kind, "version", version, "from", last)
		}
		p.mu.Lock()
		p.force[kind] = false
		p.mu.Unlock()
		return true
	}
	if err := p.Publish(ctx, kind, version, body); err != nil {
		p.mu.Lock()
		p.dirty[kind] = true
		p.mu.Unlock()
		p.publishFailed(ctx, kind, version, err)
		return false
	}
	p.mu.Lock()
	p.force[kind] = false
	n := p.pubErrs
	p.pubErrs = 0
	p.mu.Unlock()
	if n > 0 {
		p.log.Info(fmt.Sprintf("ingest: downlinks published again after %d failures", n), "count", n)
	}
	return true
}

// signal wakes the reader of a channel of capacity 1 without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
