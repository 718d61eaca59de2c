package agent

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// salvageHarness taps n codes of n riders, acks the first acked of them,
// closes the queue file and returns the codes.
func salvageHarness(t *testing.T, n, acked int) (*harness, []string) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.PassbackWindow = -1; c.RiskCap = -1 })
	var texts []string
	for i := range n {
		text := h.issuer.Rider(t, uint64(5000+i), t0).Code(t, h.clock.Now())
		if out := h.tap(text); !out.Accepted {
			t.Fatal(out)
		}
		texts = append(texts, text)
		h.clock.Add(100 * time.Millisecond)
	}
	if acked > 0 {
		st, _ := h.q.Stats()
		if _, err := h.q.AckThrough(st.LastSeq - uint64(n-acked)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.q.Close(); err != nil {
		t.Fatal(err)
	}
	return h, texts
}

// reopen opens a new queue file at h.path numbered above the salvaged
// file and makes it the harness's.
func (h *harness) reopenAbove(s *queue.Salvage) {
	h.t.Helper()
	q, err := queue.Open(h.path, &queue.Options{FirstSeq: s.LastSeq + 1})
	if err != nil {
		h.t.Fatal(err)
	}
	h.q = q
}

// salvageDamaged writes damage at off in the harness's closed queue file,
// has the next Open move it aside, opens a new file above it and salvages
// the damaged one into it (with its state), as a validator does at start.
func (h *harness) salvageDamaged(damage []byte, off int64) (*queue.Salvage, SalvageReport) {
	t := h.t
	t.Helper()
	f, err := os.OpenFile(h.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(damage, off)
	f.Close()
	_, err = queue.Open(h.path, nil)
	var ce *queue.CorruptError
	if !errors.As(err, &ce) || ce.MovedTo == "" {
		t.Fatalf("Open of the damaged file = %v, want it moved aside", err)
	}
	s, err := queue.OpenSalvage(ce.MovedTo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h.reopenAbove(s)
	rep, err := Salvage(h.q, s, h.cfg.DeviceID, true)
	if err != nil {
		t.Fatal(err)
	}
	return s, rep
}

// TestSalvageAdoptsAndRestoresState: a queue file with unsent taps is
// damaged (one page of records zeroed) and moved aside at the next start.
// What can be read is adopted by the new file, under the old epoch, with
// the device state, so a code accepted before still counts as paid.
func TestSalvageAdoptsAndRestoresState(t *testing.T) {
	h, texts := salvageHarness(t, 120, 10)
	oldEpoch := h.q.Epoch()
	ids, pageSize, err := queue.LeafPages(h.path, queue.PendingBucket)
	if err != nil || len(ids) < 3 {
		t.Fatalf("LeafPages = %v, %v", ids, err)
	}
	s, rep := h.salvageDamaged(make([]byte, pageSize), int64(ids[1])*int64(pageSize))
	t.Logf("%+v", rep)
	if rep.Epoch != oldEpoch || rep.LostPages != 1 || rep.Damaged != 0 || !rep.State || rep.Expected != 110 ||
		rep.Records >= 110 || rep.Records < 80 {
		t.Errorf("report %+v, want epoch %s, 1 page lost, 80-109 of 110 records, state", rep, oldEpoch)
	}
	adopted, err := h.q.PeekAdopted(oldEpoch, 0, 0, 0)
	if err != nil || len(adopted) != rep.Records {
		t.Fatalf("PeekAdopted = %d records, %v, want %d", len(adopted), err, rep.Records)
	}
	for _, r := range adopted {
		if tp, err := record.ParseTap(r.Data); err != nil || tp.Epoch != oldEpoch || tp.Seq != r.Seq {
			t.Fatalf("adopted record %d: %+v, %v", r.Seq, tp, err)
		}
	}
	// Adopting the same file again adds nothing.
	if _, err := Salvage(h.q, s, h.cfg.DeviceID, false); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.q.Stats(); st.Adopted != rep.Records {
		t.Errorf("after a second salvage %d adopted, want %d", st.Adopted, rep.Records)
	}

	h.a, err = New(h.q, h.fb, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.a.Ready(); err != nil {
		t.Errorf("documents not restored: %v", err)
	}
	for _, i := range []int{0, 15, 60, 119} { // acked, lost with the page, adopted, the last
		if out := h.tap(texts[i]); out.Accepted || (!out.AlreadyPaid() && out.Reason != record.ReasonCodeUsed) {
			t.Errorf("code %d again after the salvage: %+v, want it remembered (already paid or code_used)", i, out)
		}
	}
	out := h.tap(h.issuer.Rider(t, 9999, t0).Code(t, h.clock.Now()))
	if !out.Accepted || out.Seq <= s.LastSeq {
		t.Fatalf("new tap: %+v, want accepted above seq %d", out, s.LastSeq)
	}
	// The new file's chain goes on from the old one's head.
	last := adopted[len(adopted)-1]
	recs := h.records()
	if h := record.Hash(last.Data); len(recs) != 1 || recs[0].PrevHash != h || recs[0].Epoch == oldEpoch {
		t.Errorf("first record of the new file: %+v, want it chained to the old file's last record", recs[0])
	}
}

// TestSalvageFindsDamagedRecord: a byte of one record changed on the
// medium (the queue has no checksum, so the file opens); the hash chain
// shows it, and that record is not adopted.
func TestSalvageFindsDamagedRecord(t *testing.T) {
	h, _ := salvageHarness(t, 20, 0)
	peek, err := queue.Open(h.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := peek.Peek(0, 0)
	peek.Close()
	raw, err := os.ReadFile(h.path)
	if err != nil {
		t.Fatal(err)
	}
	victim := recs[7].Data
	i := bytes.Index(raw, victim)
	if i < 0 {
		t.Fatal("record not found in the file")
	}
	raw[i+len(victim)/2] ^= 0x40
	if err := os.WriteFile(h.path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := queue.OpenSalvage(h.path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	moved := h.path + ".corrupt-test"
	if err := os.Rename(h.path, moved); err != nil {
		t.Fatal(err)
	}
	h.reopenAbove(s)
	rep, err := Salvage(h.q, s, h.cfg.DeviceID, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 19 || rep.Damaged != 1 || rep.LostPages != 0 {
		t.Errorf("report %+v, want 19 adopted and 1 damaged", rep)
	}
	adopted, _ := h.q.PeekAdopted(rep.Epoch, 0, 0, 0)
	for _, r := range adopted {
		if r.Seq == recs[7].Seq {
			t.Errorf("the damaged record %d was adopted", r.Seq)
		}
	}
	h.a, err = New(h.q, h.fb, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
}

// TestSalvageScannedFile: both meta pages of a queue file with unsent taps
// are destroyed (its first 8 KiB: a worn card). Nothing led into the file,
// and its taps waited for a technician; now the file is read page by page:
// every unsent tap is adopted under its own epoch (taps sent already may
// come along: the server acks them again), nothing that is not this
// device's tap is adopted or called damaged, and no state is restored.
func TestSalvageScannedFile(t *testing.T) {
	h, _ := salvageHarness(t, 120, 10)
	oldEpoch := h.q.Epoch()
	s, rep := h.salvageDamaged(bytes.Repeat([]byte{0x5a}, 8192), 0)
	t.Logf("%+v", rep)
	if !rep.Scanned || rep.Epoch != oldEpoch || rep.Damaged != 0 || rep.State || rep.Records < 110 || rep.Records > 120 {
		t.Errorf("report %+v, want epoch %s read page by page, 110 to 120 records, none damaged, no state", rep, oldEpoch)
	}
	adopted, err := h.q.PeekAdopted(oldEpoch, 0, 0, 0)
	if err != nil || len(adopted) != rep.Records {
		t.Fatalf("PeekAdopted = %d records, %v, want %d", len(adopted), err, rep.Records)
	}
	seqs := map[uint64]bool{}
	for _, r := range adopted {
		tp, err := record.ParseTap(r.Data)
		if err != nil || tp.Epoch != oldEpoch || tp.Seq != r.Seq || tp.DeviceID != h.cfg.DeviceID {
			t.Fatalf("adopted record %d: %+v, %v", r.Seq, tp, err)
		}
		seqs[r.Seq] = true
	}
	for seq := s.LastSeq - 109; seq <= s.LastSeq; seq++ {
		if !seqs[seq] {
			t.Errorf("unsent tap %d not adopted", seq)
		}
	}
}
