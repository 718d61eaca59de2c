package broker

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/farego/farego/sync/ratelog"
)

// Where a publisher waited, and what replaces it.
//
// mochi (v2.7.9) hands a delivery to a subscriber without writing it: the
// publisher's goroutine (publishToClient) takes a packet id for it with
// Client.NextPacketID, which takes the subscriber's lock, and puts it on
// the subscriber's outbound channel (MaxPendingWrites packets; when full
// the delivery is dropped, never waited for). The subscriber's WriteLoop
// writes the channel out with Client.WritePacket, which holds that same
// lock while it writes to the connection. So a subscriber whose socket is
// full holds its lock for as long as its write blocks, and every
// publisher of something it subscribed to waits in NextPacketID: the
// settlement server's ingest, whose PUBACKs and fleet downlinks then wait
// too.
//
// Now a write to a connection only queues its bytes (clientConn.Write,
// under mochi's lock, never waits), and a goroutine per connection writes
// them out. The wait moved to before the lock: WritePacket calls the
// OnPacketEncode hook before it takes the lock, and the hook waits there
// while the connection has DeviceSendBuffer bytes queued. A writer
// waiting there holds nothing a publisher needs, so publishers never wait
// on a device; and a device that is slow but reading still gets every
// delivery, at its own pace (they wait on its outbound channel and as
// messages in flight, both bounded already: DeviceMaxInflight).

// errSendQueueFull is the cause of a disconnection for queueing too much.
var errSendQueueFull = errors.New("broker: too many bytes queued for a client that does not read")

// sendQueues are the bounds and the accounting of the bytes queued for
// writing to the broker's connections.
type sendQueues struct {
	soft    int   // a packet waits (outside mochi's lock) while its connection has this many queued
	hard    int   // a connection with more queued is closed
	total   int64 // bytes queued for all connections but the server's; a device going over it is closed
	timeout time.Duration

	queued  atomic.Int64  // bytes queued now, all connections
	peak    atomic.Int64  // the most queued at once (tests)
	stalled atomic.Uint64 // connections closed for a bound or for WriteTimeout

	log   *slog.Logger
	limit *ratelog.Limiter
}

func newSendQueues(cfg *Config) *sendQueues {
	return &sendQueues{
		soft: cfg.Limits.DeviceSendBuffer,
		// Up to three writers may pass the wait at once (the client's
		// write loop, its read goroutine answering it, a session
		// takeover), each with a packet of at most MaxPacketSize.
		hard:    cfg.Limits.DeviceSendBuffer + 3*cfg.MaxPacketSize,
		total:   int64(cfg.Limits.SendBufferTotal),
		timeout: cfg.WriteTimeout,
		log:     cfg.Logger,
		limit:   ratelog.New(cfg.Now, ratelog.DefaultEvery),
	}
}

// writeChunk is the most written to a client under one deadline.
const writeChunk = 32 << 10

// clientConn is a client's connection as mochi sees it. Write queues and
// returns (see above); the connection's writer goroutine (drain) writes
// the queue out, each chunk of up to writeChunk bytes under a deadline of
// WriteTimeout: a client that takes nothing of it for that long is
// disconnected (its retained downlinks come again when it reconnects).
// mochi sets no write deadline of its own (it refreshes one deadline,
// reads and writes, on every packet it reads: a client that keeps sending
// while it reads nothing would push it back for ever), so SetDeadline sets
// the read deadline only.
//
// What a connection can hold is bounded: a writer waits for room (wait,
// from the OnPacketEncode hook) while DeviceSendBuffer bytes are queued,
// so at most that and a few packets are (sendQueues.hard, which closes
// the connection if ever exceeded); and the bytes queued for all
// connections but the settlement server's are bounded by SendBufferTotal:
// a device whose write would go over it is disconnected at once. Deliveries
// to a device that is slow but reading are not dropped (a test of that,
// dropping them once a write had waited a second, lost live deny-list
// shards on honest devices downloading the list over a slow link: the
// list would have stayed stale until the device's next connection).
type clientConn struct {
	net.Conn
	q       *sendQueues
	timeout time.Duration
	done    chan struct{} // closed when drain has ended and Conn is closed

	mu      sync.Mutex
	room    sync.Cond // signalled when bytes are written out or the connection ends
	more    sync.Cond // signalled when bytes are queued or the connection ends
	queue   [][]byte  // encoded packets, oldest first; queue[0] may be being written
	pending int       // bytes in queue
	closing time.Time // non-zero once Close was called: write out the queue until then, then close
	dead    bool      // aborted or failed: nothing more is written
	server  bool      // the settlement server's client: outside SendBufferTotal
	id      string    // the authenticated identity, for logs

	first    []byte    // the first packet, read by readFirst, not yet taken by mochi (the reader's alone)
	release  sync.Once // gives back the place under MaxPendingPerAddress
	giveBack func()    // what release calls (nil: nothing to give back)
}

// readFirst reads the connection's first packet (the CONNECT) whole, before
// mochi is handed the connection: mochi sets aside a client's write queue
// (MaxPendingWrites slots, 64 KiB) and starts its goroutines as soon as it
// has the connection, and a client that never finishes its CONNECT held
// all of that for ConnectTimeout (an attack review: 66 KB a connection,
// 300 MB for 4,500 of them). Here it holds what it sent. A first packet
// announcing more than MaxConnectSize ends the connection before any of it
// is read.
func (c *clientConn) readFirst() error {
	var h connectCheck
	var hdr [5]byte
	n := 0
	for !h.done {
		if _, err := io.ReadFull(c.Conn, hdr[n:n+1]); err != nil {
			return err
		}
		if err := h.check(hdr[n : n+1]); err != nil {
			return err
		}
		n++
	}
	b := bytes.NewBuffer(append(make([]byte, 0, n+min(h.size, bytes.MinRead)), hdr[:n]...))
	if _, err := b.ReadFrom(io.LimitReader(c.Conn, int64(h.size))); err != nil {
		return err
	}
	if b.Len() < n+h.size {
		return io.ErrUnexpectedEOF
	}
	c.first = b.Bytes()
	return nil
}

// Read gives mochi the first packet readFirst read, then what follows.
func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		if c.first = c.first[n:]; len(c.first) == 0 {
			c.first = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// loggedIn gives back the connection's place among those of its address
// not yet logged in (when it logs in, or ends).
func (c *clientConn) loggedIn() {
	if c.giveBack != nil {
		c.release.Do(c.giveBack)
	}
}

func newClientConn(conn net.Conn, timeout time.Duration, q *sendQueues) *clientConn {
	c := &clientConn{Conn: conn, q: q, timeout: timeout, done: make(chan struct{})}
	c.room.L, c.more.L = &c.mu, &c.mu
	go c.drain()
	return c
}

// Write queues p. It never waits; it fails once the connection is closed,
// and closes it when p would take the connection or the devices over
// their bound.
func (c *clientConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || !c.closing.IsZero() {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := int64(len(p))
	total := c.q.queued.Add(n)
	if c.pending+len(p) > c.q.hard || (!c.server && total > c.q.total) {
		c.q.queued.Add(-n)
		c.q.stalled.Add(1)
		c.abortLocked(errSendQueueFull)
		return 0, errSendQueueFull
	}
	for {
		peak := c.q.peak.Load()
		if total <= peak || c.q.peak.CompareAndSwap(peak, total) {
			break
		}
	}
	c.queue = append(c.queue, append([]byte(nil), p...))
	c.pending += len(p)
	c.more.Signal()
	return len(p), nil
}

// wait returns once the connection has room for a packet (fewer than
// DeviceSendBuffer bytes queued) or has ended. mochi's lock on the client
// must not be held.
func (c *clientConn) wait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.pending >= c.q.soft && !c.dead && c.closing.IsZero() {
		c.room.Wait()
	}
}

// drain writes the queue out until the connection ends.
func (c *clientConn) drain() {
	defer close(c.done)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.dead && c.closing.IsZero() {
			c.more.Wait()
		}
		if c.dead || len(c.queue) == 0 {
			c.endLocked()
			c.mu.Unlock()
			return
		}
		p, closing := c.queue[0], c.closing
		c.mu.Unlock()

		var err error
		for n := 0; n < len(p) && err == nil; {
			deadline := time.Now().Add(c.timeout)
			if !closing.IsZero() && closing.Before(deadline) {
				deadline = closing
			}
			_ = c.Conn.SetWriteDeadline(deadline)
			var m int
			m, err = c.Conn.Write(p[n:min(len(p), n+writeChunk)])
			n += m
		}

		c.mu.Lock()
		if err != nil {
			// A TLS connection is unusable after a timed-out write, and a
			// client that took nothing for WriteTimeout is gone.
			var ne net.Error
			if !c.dead && closing.IsZero() && errors.As(err, &ne) && ne.Timeout() {
				c.q.stalled.Add(1)
				c.logLocked("broker: client disconnected: it took nothing of a write for WriteTimeout")
			}
			c.dead = true
			c.endLocked()
			c.mu.Unlock()
			return
		}
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.pending -= len(p)
		c.q.queued.Add(-int64(len(p)))
		c.room.Broadcast()
		c.mu.Unlock()
	}
}

// endLocked drops the queue, closes the connection and wakes the waiters.
func (c *clientConn) endLocked() {
	c.dead = true
	c.q.queued.Add(-int64(c.pending))
	c.queue, c.pending = nil, 0
	_ = c.Conn.Close()
	c.room.Broadcast()
	c.more.Broadcast()
}

// abortLocked ends the connection now, dropping what is queued.
func (c *clientConn) abortLocked(cause error) {
	if c.dead {
		return
	}
	if cause != nil {
		c.logLocked("broker: client disconnected: " + cause.Error())
	}
	c.dead = true
	// Unblock drain's write (and mochi's read); drain drops the queue.
	_ = c.Conn.Close()
	c.room.Broadcast()
	c.more.Broadcast()
}

// abort ends the connection now (the listener closing).
func (c *clientConn) abort(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.abortLocked(cause)
}

func (c *clientConn) logLocked(msg string) {
	if ok, n := c.q.limit.Allow("send\x00" + c.id); ok {
		c.q.log.Warn(msg, "identity", c.id, "remote", c.Conn.RemoteAddr().String(),
			"queued", c.pending, "queued_all", c.q.queued.Load(), "suppressed", n)
	}
}

// Close ends the connection once what is queued is written (a refused
// CONNACK, a DISCONNECT), within WriteTimeout; reading stops at once.
func (c *clientConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || !c.closing.IsZero() {
		return nil
	}
	c.closing = time.Now().Add(c.timeout)
	_ = c.Conn.SetReadDeadline(time.Now())
	c.room.Broadcast()
	c.more.Broadcast()
	return nil
}

// SetDeadline sets the read deadline (mochi's keep-alive); writes have
// their own.
func (c *clientConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline sets the read deadline unless the connection is closing
// (Close stopped reading).
func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || !c.closing.IsZero() {
		return net.ErrClosed
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline does nothing: drain sets the write deadlines.
func (c *clientConn) SetWriteDeadline(time.Time) error { return nil }

// identify records the authenticated identity of the connection's client.
func (c *clientConn) identify(id string, server bool) {
	c.loggedIn()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id, c.server = id, server
}

// OnPacketEncode waits, before mochi takes the client's lock to write a
// packet, for room in the connection's queue. A DISCONNECT does not wait:
// it is small, and another client's goroutine may send it (a session
// taken over).
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if c, ok := cl.Net.Conn.(*clientConn); ok && pk.FixedHeader.Type != packets.Disconnect {
		c.wait()
	}
	return pk
}
