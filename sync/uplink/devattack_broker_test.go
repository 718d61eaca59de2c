package uplink

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
)

// hostileBroker speaks just enough MQTT 3.1.1 to take the device's login
// and subscriptions; once subscribed, it sends one PUBLISH on a fleet topic
// whose header announces size bytes, and streams them.
type hostileBroker struct {
	ln       net.Listener
	size     int
	topic    string
	written  atomic.Int64 // body bytes written before the device closed
	finished chan struct{}
}

func startHostileBroker(tb testing.TB, topic string, size int) *hostileBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h := &hostileBroker{ln: ln, size: size, topic: topic, finished: make(chan struct{})}
	tb.Cleanup(func() { ln.Close() })
	go h.serve()
	return h
}

func (h *hostileBroker) url() string { return "tcp://" + h.ln.Addr().String() }

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	t, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&127) * mul
		if b&128 == 0 {
			break
		}
		mul *= 128
	}
	p := make([]byte, n)
	_, err = io.ReadFull(r, p)
	return t, p, err
}

func remLen(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 128
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func (h *hostileBroker) serve() {
	c, err := h.ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	sent := false
	for {
		t, p, err := readPacket(r)
		if err != nil {
			return
		}
		switch t >> 4 {
		case 1: // CONNECT
			c.Write([]byte{0x20, 2, 0, 0})
		case 3: // PUBLISH (the status): PUBACK at QoS 1
			if (t>>1)&3 == 1 && len(p) >= 2 {
				tl := int(binary.BigEndian.Uint16(p))
				id := p[2+tl : 4+tl]
				c.Write([]byte{0x40, 2, id[0], id[1]})
			}
		case 8: // SUBSCRIBE: grant QoS 1 to every filter
			id := p[:2]
			var granted []byte
			for q := p[2:]; len(q) >= 3; {
				l := int(binary.BigEndian.Uint16(q))
				q = q[2+l+1:]
				granted = append(granted, 1)
			}
			c.Write(append(append([]byte{0x90}, remLen(2+len(granted))...), append(append([]byte{}, id...), granted...)...))
			if !sent {
				sent = true
				go h.flood(c)
			}
		case 10: // UNSUBSCRIBE
			c.Write([]byte{0xb0, 2, p[0], p[1]})
		case 12: // PINGREQ
			c.Write([]byte{0xd0, 0})
		}
	}
}

// flood sends the oversized PUBLISH (QoS 0) and records how much of it
// the device read before closing the connection.
func (h *hostileBroker) flood(c net.Conn) {
	defer close(h.finished)
	hdr := append([]byte{0x30}, remLen(2+len(h.topic)+h.size)...)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(h.topic)))
	hdr = append(hdr, h.topic...)
	if _, err := c.Write(hdr); err != nil {
		return
	}
	chunk := make([]byte, 64<<10)
	for left := h.size; left > 0; {
		n := min(left, len(chunk))
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		w, err := c.Write(chunk[:n])
		h.written.Add(int64(w))
		if err != nil {
			return
		}
		left -= n
	}
}

// A broker (a compromised one, or anyone in the path of a plain tcp://
// connection) can announce a PUBLISH of up to 256 MiB: paho allocates the
// whole packet from its header and reads it before anything of farego
// looks at it (wire.MaxMessageSize, 384 KiB, is checked only after). A
// few of these take a validator's memory (a 32-bit ARM process cannot map
// much more than 1 GiB; an allocation it cannot make kills it). The device
// must refuse a packet far larger than any message it takes before
// reading it.
func TestAttackHostileBrokerOversizePacket(t *testing.T) {
	const size = 48 << 20
	f := newFixture(t, nil)
	h := startHostileBroker(t, f.fleetTopic(record.DocKeyring), size)
	f.cfg.Brokers = []string{h.url()}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f.start()
	select {
	case <-h.finished:
	case <-time.After(waitTimeout):
		t.Fatal("the hostile broker never finished")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("announced %d MiB: the device read %d MiB of it; %d MiB allocated meanwhile",
		size>>20, h.written.Load()>>20, alloc>>20)
	if alloc >= size/2 {
		t.Errorf("a PUBLISH announcing %d MiB made the device allocate %d MiB (want it refused from its header, well under %d MiB)",
			size>>20, alloc>>20, size>>21)
	}
}
