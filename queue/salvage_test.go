package queue

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// salvageFile makes a queue file with 2,000 records of 100 bytes (the first
// 500 acked), a state bucket of the caller's and 30 adopted records of an
// earlier epoch, and returns its path and the unacked records by seq.
func salvageFile(tb testing.TB, opts *Options) (string, map[uint64][]byte) {
	tb.Helper()
	path := tempPath(tb)
	q, err := Open(path, opts) // not openTest: the tests damage the file
	if err != nil {
		tb.Fatal(err)
	}
	appendBulk(tb, q, 2000, 100)
	if _, err := q.AckThrough(500); err != nil {
		tb.Fatal(err)
	}
	err = q.UpdateState(func(s *State) error {
		for i := range 50 {
			if err := s.Put("dev.seen", fmt.Appendf(nil, "code-%03d", i), fmt.Appendf(nil, "seq-%d", i)); err != nil {
				return err
			}
		}
		return s.Put("dev.state", []byte("chain"), []byte("head"))
	})
	if err != nil {
		tb.Fatal(err)
	}
	var old []Record
	for i := range 30 {
		old = append(old, Record{Seq: uint64(7000 + i), Time: time.Unix(1_800_000_000, 0), Data: fmt.Appendf(nil, "old-%d", i)})
	}
	if _, err := q.Adopt("e-old", old); err != nil {
		tb.Fatal(err)
	}
	want := map[uint64][]byte{}
	for _, r := range peekAll(tb, q) {
		want[r.Seq] = r.Data
	}
	if err := q.Close(); err != nil {
		tb.Fatal(err)
	}
	return path, want
}

// pendingLeaves returns the ids of the leaf pages holding pending records.
func pendingLeaves(tb testing.TB, path string) []int64 {
	tb.Helper()
	ids, pageSize, err := LeafPages(path, PendingBucket)
	if err != nil || pageSize != 4096 || len(ids) < 10 {
		tb.Fatalf("LeafPages = %d pages of %d bytes, %v", len(ids), pageSize, err)
	}
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

func overwriteAt(tb testing.TB, path string, off int64, b []byte) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		tb.Fatal(err)
	}
}

func TestSalvage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, path string)
		complete bool // every unacked record and the state come back
		minFound int
	}{
		{name: "intact", damage: func(*testing.T, string) {}, complete: true},
		{name: "first meta page damaged", damage: func(t *testing.T, path string) {
			overwriteAt(t, path, 16, []byte("garbage"))
		}, complete: true},
		{name: "leaf page of records zeroed", damage: func(t *testing.T, path string) {
			ids := pendingLeaves(t, path)
			overwriteAt(t, path, ids[len(ids)/2]*4096, make([]byte, 4096))
		}, minFound: 1300},
		{name: "leaf page with a huge overflow count", damage: func(t *testing.T, path string) {
			ids := pendingLeaves(t, path)
			var b [4]byte
			ne.PutUint32(b[:], 0xfffffff0)
			overwriteAt(t, path, ids[1]*4096+12, b[:])
		}, minFound: 1300},
		{name: "elements of a leaf page garbled", damage: func(t *testing.T, path string) {
			ids := pendingLeaves(t, path)
			overwriteAt(t, path, ids[2]*4096+16, bytes.Repeat([]byte{0xff}, 200))
		}, minFound: 1300},
		{name: "truncated", damage: func(t *testing.T, path string) {
			info, _ := os.Stat(path)
			os.Truncate(path, info.Size()*3/4)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, want := salvageFile(t, nil)
			tc.damage(t, path)
			s, err := OpenSalvage(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			found, adopted := map[uint64]bool{}, 0
			err = s.Records(func(epoch string, r Record) error {
				if epoch == "e-old" {
					adopted++
					if !bytes.HasPrefix(r.Data, []byte("old-")) {
						t.Errorf("adopted record %d = %q", r.Seq, r.Data)
					}
					return nil
				}
				if epoch != s.Epoch {
					t.Errorf("record %d of epoch %q", r.Seq, epoch)
				}
				if w, ok := want[r.Seq]; !ok || !bytes.Equal(w, r.Data) {
					t.Errorf("record %d = %q, want %q", r.Seq, r.Data, w)
				}
				if found[r.Seq] {
					t.Errorf("record %d twice", r.Seq)
				}
				found[r.Seq] = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("epoch %q, last seq %d, %d of %d unacked records found (meta says %d), %d archived, %d adopted, %d pages lost, state %d buckets",
				s.Epoch, s.LastSeq, len(found), len(want), s.Expected, s.Archived, adopted, s.LostPages, len(s.State))
			if len(found) != s.Pending {
				t.Errorf("Records gave %d, Pending says %d", len(found), s.Pending)
			}
			if tc.complete {
				if len(found) != len(want) || s.LostPages != 0 || s.Expected != len(want) || s.LastSeq != 2000 ||
					len(s.Epoch) != 32 || adopted != 30 || s.Adopted != 30 {
					t.Errorf("complete salvage: %+v", s)
				}
				if kvs := s.State["dev.seen"]; len(kvs) != 50 || string(kvs[7].Key) != "code-007" || string(kvs[7].Value) != "seq-7" {
					t.Errorf("state dev.seen = %d entries", len(kvs))
				}
				if kvs := s.State["dev.state"]; len(kvs) != 1 || string(kvs[0].Value) != "head" {
					t.Errorf("state dev.state = %+v", kvs)
				}
				return
			}
			if len(found) < tc.minFound || len(found) == len(want) && tc.minFound > 0 {
				t.Errorf("found %d records, want at least %d and some lost", len(found), tc.minFound)
			}
			if tc.minFound > 0 && s.LostPages == 0 {
				t.Errorf("LostPages = 0 with records lost")
			}
		})
	}
}

// TestSalvageScan: both meta pages of a file are lost (its first pages
// destroyed, as a worn SD card loses an erase block): nothing leads into
// its page tree, and the salvage used to give up (the unsent taps stayed
// in the damaged file until a technician came). Now it reads every page:
// every unacked record comes back with its data, the adopted records of
// an earlier epoch too, the epoch and last sequence number from copies of
// the meta page; acked records may come back (older copies), never a
// record that was not in the file, and the state is not returned. With
// the first 8 pages lost, the records on them are lost.
func TestSalvageScan(t *testing.T) {
	for name, lose := range map[string]int64{"both meta pages": 2, "the first 8 pages": 8} {
		t.Run(name, func(t *testing.T) {
			path, want := salvageFile(t, nil)
			s, err := OpenSalvage(path)
			if err != nil {
				t.Fatal(err)
			}
			epoch := s.Epoch
			s.Close()
			overwriteAt(t, path, 0, bytes.Repeat([]byte{0xa5}, int(lose*4096)))
			if s, err = OpenSalvage(path); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !s.Scanned || s.Epoch != epoch || s.LastSeq != 2000 || len(s.State) != 0 {
				t.Errorf("scanned salvage: scanned %v, epoch %q (want %q), last seq %d, %d state buckets", s.Scanned, s.Epoch, epoch, s.LastSeq, len(s.State))
			}
			found, acked, adopted, n := map[uint64]bool{}, 0, 0, 0
			err = s.Records(func(e string, r Record) error {
				n++
				if e != "" {
					t.Errorf("record %d of epoch %q; want \"\" (each says its own)", r.Seq, e)
				}
				switch {
				case r.Seq >= 7000 && r.Seq < 7030:
					if string(r.Data) != fmt.Sprint("old-", r.Seq-7000) {
						t.Errorf("adopted record %d = %q", r.Seq, r.Data)
					}
					adopted++
				case r.Seq <= 500:
					if !bytes.HasPrefix(r.Data, fmt.Appendf(nil, "bulk-%d\x00", r.Seq-1)) {
						t.Errorf("acked record %d = %.20q", r.Seq, r.Data)
					}
					acked++
				default:
					if w, ok := want[r.Seq]; !ok || !bytes.Equal(w, r.Data) {
						t.Errorf("record %d = %.20q, want %.20q", r.Seq, r.Data, w)
					}
					if found[r.Seq] {
						t.Errorf("record %d twice", r.Seq)
					}
					found[r.Seq] = true
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d records: %d of %d unacked, %d acked (older copies), %d adopted; %d pages lost", n, len(found), len(want), acked, adopted, s.LostPages)
			// With 8 pages lost, the records on them are gone: two leaf
			// pages' worth, and the adopted ones when their page is
			// among them (where bbolt put it varies from file to file).
			if lose > 2 && len(found) < len(want)-60 || lose == 2 && (len(found) != len(want) || adopted != 30) || n != s.Pending {
				t.Errorf("found %d of %d unacked and %d of 30 adopted records; Pending %d, Records gave %d", len(found), len(want), adopted, s.Pending, n)
			}
		})
	}
}

func TestSalvageNothing(t *testing.T) {
	for name, prepare := range map[string]func(t *testing.T) string{
		"not a bbolt file": func(t *testing.T) string {
			path := tempPath(t)
			os.WriteFile(path, bytes.Repeat([]byte("not bbolt "), 10_000), 0o600)
			return path
		},
		"both meta pages damaged, every page zeroed": func(t *testing.T) string {
			path, _ := salvageFile(t, nil)
			info, _ := os.Stat(path)
			overwriteAt(t, path, 0, make([]byte, info.Size()))
			overwriteAt(t, path, 16, []byte("garbage"))
			return path
		},
		"empty": func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "empty.db")
			os.WriteFile(path, nil, 0o600)
			return path
		},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := OpenSalvage(prepare(t)); !errors.Is(err, ErrUnsalvageable) {
				if s != nil {
					s.Close()
				}
				t.Errorf("OpenSalvage = %v, want ErrUnsalvageable", err)
			}
		})
	}
}

func TestNoCreate(t *testing.T) {
	path := tempPath(t)
	if _, err := Open(path, &Options{NoCreate: true}); !errors.Is(err, ErrNoFile) {
		t.Errorf("Open(no file, NoCreate) = %v, want ErrNoFile", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, &Options{NoCreate: true}); !errors.Is(err, ErrNoFile) {
		t.Errorf("Open(empty file, NoCreate) = %v, want ErrNoFile", err)
	}
	if info, err := os.Stat(path); err != nil || info.Size() != 0 {
		t.Errorf("NoCreate wrote the file (%v, %v)", info, err)
	}
	q := openTest(t, path, nil)
	mustAppend(t, q, "a")
	epoch := q.Epoch()
	q.Close()
	q = openTest(t, path, &Options{NoCreate: true})
	if q.Epoch() != epoch {
		t.Errorf("NoCreate on an existing file: epoch %s, want %s", q.Epoch(), epoch)
	}
}

func TestAdopt(t *testing.T) {
	q := openTest(t, tempPath(t), nil)
	mustAppend(t, q, "own")
	recs := []Record{{Seq: 12, Data: []byte("b")}, {Seq: 10, Data: []byte("a")}, {Seq: 15, Data: []byte("c")}}
	if n, err := q.Adopt("e-old", recs); err != nil || n != 3 {
		t.Fatalf("Adopt = %d, %v", n, err)
	}
	if _, err := q.Adopt(q.Epoch(), recs); err == nil {
		t.Error("Adopt under the file's own epoch succeeded")
	}
	if st, _ := q.Stats(); st.Count != 1 || st.Adopted != 3 || st.AdoptedBytes != 3 {
		t.Errorf("Stats = %+v, want 1 own and 3 adopted records", st)
	}
	got, err := q.PeekAdopted("e-old", 10, 0, 0)
	if err != nil || len(got) != 2 || got[0].Seq != 12 || string(got[1].Data) != "c" {
		t.Errorf("PeekAdopted after 10 = %+v, %v", got, err)
	}
	if err := q.UpdateState(func(s *State) error {
		if n, err := s.Unacked(); err != nil || n != 4 {
			t.Errorf("Unacked = %d, %v, want 4", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := q.AckAdopted("e-old", 10, 11, 15); err != nil || n != 2 {
		t.Errorf("AckAdopted = %d, %v, want 2", n, err)
	}
	if eps, _ := q.AdoptedEpochs(); len(eps) != 1 || eps[0] != "e-old" {
		t.Errorf("AdoptedEpochs = %v", eps)
	}
	if n, err := q.AckAdopted("e-old", 12); err != nil || n != 1 {
		t.Errorf("AckAdopted = %d, %v", n, err)
	}
	if eps, _ := q.AdoptedEpochs(); len(eps) != 0 {
		t.Errorf("AdoptedEpochs after the last ack = %v", eps)
	}
	if st, _ := q.Stats(); st.Adopted != 0 || st.AdoptedBytes != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestSalvageCountsWhatRecordsReturns damages a file the ways in which the
// count OpenSalvage makes and the records Records returns once differed
// (found by FuzzSalvage): a branch page that lists one leaf twice (the
// count's walk marked the leaf bad on its second visit, and Records then
// skipped it), and a record shorter than its header (counted, not
// returned).
func TestSalvageCountsWhatRecordsReturns(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pagesLost bool // LostPages must count the damage
		damage    func(t *testing.T, path string)
	}{
		{name: "a branch lists a leaf twice", pagesLost: true, damage: func(t *testing.T, path string) {
			s, err := OpenSalvage(path)
			if err != nil {
				t.Fatal(err)
			}
			root := s.roots[PendingBucket].root
			s.Close()
			b := make([]byte, 4096)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(b, int64(root)*4096)
			f.Close()
			if err != nil || ne.Uint16(b[8:]) != branchPageFlag || ne.Uint16(b[10:]) < 3 {
				t.Fatalf("pending root page %d is not a branch of 3 or more (%v)", root, err)
			}
			// The third element points at the first's page.
			first := b[pageHeaderSize+8 : pageHeaderSize+16]
			overwriteAt(t, path, int64(root)*4096+pageHeaderSize+2*elementSize+8, first)
		}},
		{name: "a record shorter than its header", damage: func(t *testing.T, path string) {
			ids := pendingLeaves(t, path)
			off := ids[1] * 4096
			b := make([]byte, pageHeaderSize+elementSize)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(b, off)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var vsize [4]byte
			ne.PutUint32(vsize[:], 3) // the first element's value: 3 bytes
			overwriteAt(t, path, off+pageHeaderSize+12, vsize[:])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, want := salvageFile(t, nil)
			tc.damage(t, path)
			s, err := OpenSalvage(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			n := 0
			if err := s.Records(func(epoch string, r Record) error {
				if epoch == s.Epoch {
					n++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d of %d records, Pending %d, %d pages lost", n, len(want), s.Pending, s.LostPages)
			if n != s.Pending || n == len(want) || tc.pagesLost && s.LostPages == 0 {
				t.Errorf("Records gave %d of %d, Pending says %d, %d pages lost: want equal counts, some lost",
					n, len(want), s.Pending, s.LostPages)
			}
		})
	}
}
