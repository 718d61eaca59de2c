package ingest

import "sync"

// fairQueue holds the messages received and not yet taken by a worker: one
// bounded queue per device, served round-robin, so that one device's flood
// or backlog cannot delay another device's batches by more than one
// message per round. Memory is bounded in count and bytes, per device and
// overall; a message beyond a bound is refused (the caller drops it, and
// the device sends it again).
type fairQueue struct {
	perDevice, perDeviceBytes int
	total, totalBytes         int

	mu      sync.Mutex
	wake    chan struct{} // has a token while messages are queued
	devices map[string]*deviceQueue
	ring    []string // devices with queued messages, in service order
	next    int      // ring index served next
	count   int
	bytes   int
	seq     uint64 // the last inbound.seq given
}

type deviceQueue struct {
	msgs  []inbound
	bytes int
}

// Why push refused a message.
const (
	pushOK = iota
	pushDeviceFull
	pushFull
)

func newFairQueue(perDevice, perDeviceBytes, total, totalBytes int) *fairQueue {
	return &fairQueue{
		perDevice: perDevice, perDeviceBytes: perDeviceBytes, total: total, totalBytes: totalBytes,
		wake: make(chan struct{}, 1), devices: map[string]*deviceQueue{},
	}
}

// push queues m for device id, or says why it cannot.
func (q *fairQueue) push(id string, m inbound) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	size := len(m.payload)
	if q.count >= q.total || q.bytes+size > q.totalBytes {
		return pushFull
	}
	d := q.devices[id]
	if d == nil {
		d = &deviceQueue{}
		q.devices[id] = d
	}
	if len(d.msgs) >= q.perDevice || (len(d.msgs) > 0 && d.bytes+size > q.perDeviceBytes) {
		return pushDeviceFull
	}
	if len(d.msgs) == 0 {
		q.ring = append(q.ring, id)
	}
	q.seq++
	m.seq = q.seq
	d.msgs = append(d.msgs, m)
	d.bytes += size
	q.count++
	q.bytes += size
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return pushOK
}

// take removes up to n messages, at most one per device, going round the
// devices from where the last take stopped. It returns nil when nothing is
// queued.
func (q *fairQueue) take(n int) []inbound {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []inbound
	// One round at most: one message per device.
	for round := len(q.ring); len(out) < n && len(out) < round; {
		if q.next >= len(q.ring) {
			q.next = 0
		}
		id := q.ring[q.next]
		d := q.devices[id]
		m := d.msgs[0]
		d.msgs[0] = inbound{}
		d.msgs = d.msgs[1:]
		d.bytes -= len(m.payload)
		q.count--
		q.bytes -= len(m.payload)
		out = append(out, m)
		if len(d.msgs) == 0 {
			delete(q.devices, id)
			q.ring = append(q.ring[:q.next], q.ring[q.next+1:]...)
		} else {
			q.next++
		}
	}
	if q.count > 0 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return out
}

// depth returns the messages and bytes queued and the devices they are of.
func (q *fairQueue) depth() (count, bytes, devices int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count, q.bytes, len(q.ring)
}
