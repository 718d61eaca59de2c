package agent

import (
	"bytes"
	"encoding/binary"
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

// TestSalvageScannedFileTakesTheCommittedVersion: a tap (code X) is
// written and its commit never completes (the power goes while its meta
// page is written: the data pages are on disk, the torn meta is passed
// over), so its sequence number is handed out again after the restart, to
// the next rider's green tap (code Y; the board has no battery-backed
// clock and came back a little behind). Both meta pages are lost later and
// the file is read page by page: it holds both versions of that number,
// the never-confirmed one found on more pages. The scan took the first
// version that decoded, X's, which the next tap's PrevHash contradicts:
// Y's green tap was lost, X's rider charged for a tap never confirmed if
// the hash chain had not caught it. The hash chain chooses now: the
// version the next record names.
func TestSalvageScannedFileTakesTheCommittedVersion(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.PassbackWindow = -1; c.RiskCap = -1 })
	tap := func(account uint64) {
		t.Helper()
		if out := h.tap(h.issuer.Rider(t, account, t0).Code(t, h.clock.Now())); !out.Accepted {
			t.Fatal(out)
		}
		h.clock.Add(100 * time.Millisecond)
	}
	last := func() queue.Record {
		t.Helper()
		recs, err := h.q.Peek(0, 0)
		if err != nil || len(recs) == 0 {
			t.Fatalf("Peek = %d records, %v", len(recs), err)
		}
		return recs[len(recs)-1]
	}
	for i := range 20 {
		tap(uint64(6000 + i))
	}
	if err := h.q.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(h.path)
	if err != nil {
		t.Fatal(err)
	}
	// X: its commit is on disk here but will not be.
	h.open()
	h.clock.Add(3 * time.Second)
	tap(6100)
	x := last()
	if err := h.q.Close(); err != nil {
		t.Fatal(err)
	}
	withX, err := os.ReadFile(h.path)
	if err != nil {
		t.Fatal(err)
	}
	_, pageSize, err := queue.LeafPages(h.path, queue.PendingBucket)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(withX, x.Data)
	if at < 0 {
		t.Fatal("X's record not found in the file")
	}
	xPage := bytes.Clone(withX[at/pageSize*pageSize : (at/pageSize+1)*pageSize])

	// The commit is lost; after the restart the clock is 2 s behind.
	if err := os.WriteFile(h.path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	h.open()
	h.clock.Add(-2 * time.Second)
	tap(6101)
	y := last()
	if y.Seq != x.Seq {
		t.Fatalf("Y's tap is number %d, X's was %d: the number was not handed out again", y.Seq, x.Seq)
	}
	tap(6102)
	z := last()
	if err := h.q.Close(); err != nil {
		t.Fatal(err)
	}
	// X's page stays in free pages of the file: on four of them (an old
	// version of a page is left wherever the copy-on-write put it).
	f, err := os.OpenFile(h.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		id := uint64(info.Size())/uint64(pageSize) + uint64(i)
		binary.NativeEndian.PutUint64(xPage, id)
		if _, err := f.WriteAt(xPage, int64(id)*int64(pageSize)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	oldEpoch := h.q.Epoch()
	_, rep := h.salvageDamaged(bytes.Repeat([]byte{0x5a}, 2*pageSize), 0)
	if !rep.Scanned {
		t.Fatalf("report %+v, want the file read page by page", rep)
	}
	adopted, err := h.q.PeekAdopted(oldEpoch, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64][]byte{}
	for _, r := range adopted {
		got[r.Seq] = r.Data
	}
	if !bytes.Equal(got[y.Seq], y.Data) {
		t.Errorf("tap %d adopted as %q…, want the green tap Y's (X's, never confirmed: %v)", y.Seq, prefix(got[y.Seq]), bytes.Equal(got[y.Seq], x.Data))
	}
	if !bytes.Equal(got[z.Seq], z.Data) {
		t.Errorf("tap %d (Z) not adopted as it was", z.Seq)
	}
	if len(adopted) != 22 || rep.Damaged != 0 {
		t.Errorf("%d taps adopted, %d damaged (report %+v), want the 22 green taps, none damaged", len(adopted), rep.Damaged, rep)
	}
}

func prefix(b []byte) []byte { return b[:min(len(b), 16)] }
