package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

// FuzzHandle feeds arbitrary payloads on the taps and status topics (and
// one that is neither) to the worker's handler: nothing may panic; Commit
// may only see a batch signed by the topic's device and naming it, every
// record of which has a verdict or decodes as that device's tap; an ack may
// only be attempted after a commit; Status may only see a status signed by
// the device.
func FuzzHandle(f *testing.F) {
	w := newWorld(f, "nobroker")
	in, err := New(w.config(), w.store)
	if err != nil {
		f.Fatal(err)
	}
	d := &device{w: w, id: "bus-fuzz", key: newKey(f), epoch: "e1"}
	d.riders = append(d.riders, w.issuer.Rider(f, 4242, w.now))
	w.store.addDevice(d.id, pubOf(d.key))
	topics := wire.Topics{Prefix: w.prefix}
	names := []string{topics.Device(d.id, wire.KindTaps), topics.Device(d.id, wire.KindStatus),
		topics.Device(d.id, wire.KindAck), topics.Device("bus-other", wire.KindTaps)}

	status := func(id string) []byte {
		p, _ := (&wire.Status{DeviceID: id, Online: true, Time: time.Unix(1e9, 0).UTC()}).MarshalBinary()
		msg, _ := wire.Seal(wire.TypeStatus, p, false, d.key)
		return msg
	}
	f.Add(uint8(0), d.validBatch(1, 3))
	f.Add(uint8(0), d.batch(nil, wire.Record{Seq: 1, Data: []byte("junk")}))
	f.Add(uint8(0), d.batch(newKey(f), wire.Record{Seq: 1, Data: d.validTap(1)}))
	f.Add(uint8(1), status(d.id))
	f.Add(uint8(1), status("bus-other"))
	f.Add(uint8(1), []byte{})
	f.Add(uint8(2), d.validBatch(1, 1))
	f.Add(uint8(3), d.validBatch(1, 1))
	f.Add(uint8(0), []byte("FGW1\x01\x00"))

	ctx := context.Background()
	f.Fuzz(func(t *testing.T, topic uint8, payload []byte) {
		name := names[int(topic)%len(names)]
		_, commitsBefore := w.store.counts()
		before := in.Stats()
		p, st := in.handle(ctx, name, payload)
		if p != nil {
			in.commitBatches(ctx, []*prepared{p})
		}
		if st != nil {
			in.recordStatuses(ctx, []statusIn{{st: st}})
		}
		_, commits := w.store.counts()
		after := in.Stats()

		if commits != commitsBefore {
			p, err := wire.Open(payload, wire.TypeBatch, pubOf(d.key))
			if err != nil || name != names[0] {
				t.Fatalf("committed a message on %s that does not open with the device key: %v", name, err)
			}
			b, err := wire.ParseBatch(p)
			if err != nil || b.DeviceID != d.id {
				t.Fatalf("committed a batch that does not parse or names another device: %v", err)
			}
			for _, r := range b.Records {
				tp, ok := w.store.tap(tapKey(d.id, r.Seq))
				if !ok {
					t.Fatalf("record %d of a committed batch not stored", r.Seq)
				}
				if tp.Verdict != VerdictMalformedRecord && (tp.Tap == nil || tp.Tap.DeviceID != d.id || tp.Tap.Seq != r.Seq) {
					t.Fatalf("record %d: verdict %q, tap %+v", r.Seq, tp.Verdict, tp.Tap)
				}
			}
		}
		if acks := after.Acks + after.Rejects[RejectAckFailed] - before.Acks - before.Rejects[RejectAckFailed]; acks != uint64(commits-commitsBefore) {
			t.Fatalf("%d acks attempted for %d commits", acks, commits-commitsBefore)
		}
		if after.Statuses != before.Statuses {
			p, err := wire.Open(payload, wire.TypeStatus, pubOf(d.key))
			if err != nil || name != names[1] {
				t.Fatalf("recorded a status on %s that does not open with the device key: %v", name, err)
			}
			if st, err := wire.ParseStatus(p); err != nil || st.DeviceID != d.id {
				t.Fatalf("recorded a status of another device or malformed: %v", err)
			}
		}
	})
}
