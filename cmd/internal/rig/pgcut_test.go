package rig

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// pgCut is a loopback proxy in front of PostgreSQL that acts at the one
// moment the COMMIT of a transaction that stored taps passes (pgx sends it
// as the simple query "commit"; the ledger prepares its statements within
// each transaction, so their text passes too). Armed with a fault, it hits
// the next such COMMIT:
//
//	resetBefore  the COMMIT is dropped and both sides closed (rolled back)
//	resetAfter   the COMMIT reaches PostgreSQL, then both sides are closed
//	             before its answer (committed, the server cannot know)
//	stallBefore  the COMMIT is swallowed and the connection black-holed:
//	             nothing passes either way and PostgreSQL's side is never
//	             closed, as behind a partition that drops every packet
//	stallAfter   the COMMIT reaches PostgreSQL, its answer is black-holed
type pgCut struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	armed string
	hits  map[string]int
	conns []net.Conn
}

func listenPGCut(tb testing.TB, target string) *pgCut {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &pgCut{ln: ln, target: target, hits: map[string]int{}}
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

func (p *pgCut) arm(fault string) {
	p.mu.Lock()
	p.armed = fault
	p.mu.Unlock()
}

// fired reports whether the armed fault has hit.
func (p *pgCut) fired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.armed == ""
}

func (p *pgCut) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *pgCut) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, t)
		p.mu.Unlock()
		go p.pipe(c, t)
	}
}

// pipe forwards c to t and back, watching what the client sends.
func (p *pgCut) pipe(c, t net.Conn) {
	stalled := make(chan struct{})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := t.Read(buf)
			if n > 0 {
				select {
				case <-stalled:
					continue // black-holed: read and dropped
				default:
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	tapStmts := map[string]bool{} // prepared statements that insert taps
	taps := false                 // the transaction so far wrote taps
	for {
		n, err := c.Read(buf)
		if n > 0 {
			b := buf[:n]
			commit := false
			// pgx writes whole messages: type, length, body.
			for m := b; len(m) >= 5; {
				l := int(binary.BigEndian.Uint32(m[1:5]))
				if l < 4 || len(m) < 1+l {
					break
				}
				body := m[5 : 1+l]
				switch m[0] {
				case 'Q':
					q := string(bytes.TrimRight(body, "\x00"))
					if strings.HasPrefix(q, "begin") {
						taps = false
					}
					commit = commit || q == "commit"
				case 'P': // name, query
					name, query, _ := bytes.Cut(body, []byte{0})
					if bytes.Contains(query, []byte("INSERT INTO taps")) {
						tapStmts[string(name)], taps = true, true
					}
				case 'B': // portal, statement
					_, rest, _ := bytes.Cut(body, []byte{0})
					stmt, _, _ := bytes.Cut(rest, []byte{0})
					taps = taps || tapStmts[string(stmt)]
				}
				m = m[1+l:]
			}
			fault := ""
			if taps && commit {
				p.mu.Lock()
				fault, p.armed = p.armed, ""
				if fault != "" {
					p.hits[fault]++
				}
				p.mu.Unlock()
			}
			switch fault {
			case "resetBefore":
				c.Close()
				t.Close()
				return
			case "resetAfter":
				t.Write(b)
				time.Sleep(20 * time.Millisecond)
				c.Close()
				t.Close()
				return
			case "stallBefore", "stallAfter":
				if fault == "stallAfter" {
					t.Write(b)
				}
				close(stalled)
				// Nothing more passes; PostgreSQL's side stays open
				// (its backend sees no FIN, as behind a partition).
				io.Copy(io.Discard, c)
				return
			}
			if _, werr := t.Write(b); werr != nil {
				c.Close()
				return
			}
		}
		if err != nil {
			t.Close()
			return
		}
	}
}

// TestLedgerLinkCutAtCommit runs the real farego-settlement on PostgreSQL
// behind a proxy that cuts or black-holes its ledger connection at a write
// COMMIT, again and again, while a real validator keeps taking taps: every
// accepted tap must settle exactly once, balances follow the rides, the
// ledger verifies and the queue drains, without restarting anything. A
// COMMIT black-holed before it reached PostgreSQL left the backend idle in
// its transaction, holding the riders' account rows and the tap ids, until
// TCP keepalive (hours): the batch's resends and every later batch of those
// riders timed out on the locks (208 of 400 taps settled after 3 minutes)
// until the ledger's sessions got idle_in_transaction_session_timeout.
func TestLedgerLinkCutAtCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	dsn, err := url.Parse(ledgertest.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	cut := listenPGCut(t, dsn.Host)
	dsn.Host = cut.ln.Addr().String()

	r := New(dir, binDir, nil)
	r.DB = dsn.String()
	defer func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil {
				t.Logf("server.log (tail):\n%s", tail(string(b), 30))
			}
		}
	}()
	defer r.Close()
	must(t, r.Init(ctx, chaosFares))
	must(t, r.StartServer(ctx))
	d := startDevice(t, ctx, r, "pgcut-0", fast...)
	const topUp = 1_000_000
	riders := newRiders(t, ctx, r, 8, topUp)

	faults := []string{"resetAfter", "resetBefore", "resetAfter", "stallAfter", "resetBefore", "resetAfter", "stallBefore"}
	accepted := map[string]uint64{}
	var refused []string
	fi := 0
	start := time.Now()
	for n := 0; n < 400 || fi < len(faults) || !cut.fired(); n++ {
		if n%40 == 10 && fi < len(faults) && cut.fired() {
			cut.arm(faults[fi])
			fi++
		}
		rd := riders[n%len(riders)]
		code := rd.Code(time.Now())
		line, err := d.Scan(ctx, code)
		must(t, err)
		if strings.Contains(line, "ACCEPTED  2.50 EUR  Paid") {
			accepted[paycode.ShortHash(code)] = rd.ID
		} else {
			refused = append(refused, line)
		}
		time.Sleep(60 * time.Millisecond) // a validator may publish 20 messages a second (broker.DefaultDeviceMessageRate)
		if n > 4000 {
			t.Fatalf("faults left unfired: %d of %d fired", fi, len(faults))
		}
	}
	t.Logf("%d taps accepted in %v; faults %v", len(accepted), time.Since(start).Round(time.Second), cut.hits)

	settled := func() (int, error) {
		n := 0
		for _, rd := range riders {
			rides, err := r.Rides(ctx, rd.ID)
			if err != nil {
				return 0, err
			}
			for _, ride := range rides {
				if _, ok := accepted[ride.CodeHash]; ok {
					n++
				}
			}
		}
		return n, nil
	}
	err = WaitFor(ctx, 3*time.Minute, "every accepted tap in the ledger", func() bool {
		n, err := settled()
		return err == nil && n >= len(accepted)
	})
	if err != nil {
		n, _ := settled()
		t.Fatalf("%v: %d of %d accepted taps settled", err, n, len(accepted))
	}
	must(t, WaitFor(ctx, 2*time.Minute, "the queue drained", func() bool {
		ds, err := r.Devices(ctx)
		return err == nil && len(ds) == 1 && ds[0].QueueDepth == 0
	}))

	var problems []string
	inLedger := map[string]int{}
	for _, rd := range riders {
		rs, err := r.Rides(ctx, rd.ID)
		must(t, err)
		for _, ride := range rs {
			inLedger[ride.CodeHash]++
			if ride.Charge != chaosFare || ride.Flag != "" {
				problems = append(problems, fmt.Sprintf("ride %s charged %d flag %q", ride.TapID, ride.Charge, ride.Flag))
			}
		}
		a, err := r.Account(ctx, rd.ID)
		must(t, err)
		if want := topUp - chaosFare*int64(len(rs)); a.Balance != want {
			problems = append(problems, fmt.Sprintf("account %d balance %d, want %d", rd.ID, a.Balance, want))
		}
	}
	for h, n := range inLedger {
		if _, ok := accepted[h]; !ok || n != 1 {
			problems = append(problems, fmt.Sprintf("tap %s in the ledger %d times (accepted %v)", h, n, ok))
		}
	}
	if len(refused) > 0 {
		problems = append(problems, fmt.Sprintf("%d taps refused, e.g. %q", len(refused), refused[0]))
	}
	if out, err := r.Verify(ctx); err != nil {
		problems = append(problems, "verify: "+err.Error())
	} else {
		t.Log(strings.TrimSpace(out))
	}
	must(t, d.Stop(false))
	q, err := queue.Open(d.QueueFile(), nil)
	must(t, err)
	st, _ := q.Stats()
	if st.Count != 0 {
		problems = append(problems, fmt.Sprintf("queue holds %d unacked records", st.Count))
	}
	q.Close()
	if len(problems) > 0 {
		t.Errorf("%d problems:\n  %s", len(problems), strings.Join(problems[:min(len(problems), 20)], "\n  "))
	}
	t.Logf("settled %d of %d accepted taps in %v", len(inLedger), len(accepted), time.Since(start).Round(time.Second))
}
