// Package queue is the validator's durable store-and-forward FIFO: the only
// place a charge lives between the tap and the settlement server. It keeps
// byte records with sequence numbers in one bbolt (go.etcd.io/bbolt) file
// and knows nothing about taps.
//
// # Durability
//
// Append returns a sequence number only after the record is committed and
// fsynced: a green light may be shown the moment Append returns, and the
// record survives a power cut at any later instant. An error from Append
// always means the record was not stored. Concurrent Appends (front and
// rear door scanners) share commits: one writer goroutine commits
// everything waiting in one transaction (group commit). A lone Append is
// committed at once, with no added delay; Appends that arrive while a
// commit is in flight form the next group, so four busy writers need about
// a quarter of the fsyncs. AppendFunc lets the caller change its own
// state in the same transaction as the record (device state that must
// move in step with the charges: one commit, one fsync).
//
// # The caller's state
//
// The queue is the only package that knows the file is bbolt. A caller
// keeps its own state in the same file as named buckets of byte keys and
// values, through a *State: inside AppendFunc (atomic with the record),
// UpdateState (a commit of its own) and ViewState (a read).
//
// # Sequence numbers and epoch
//
// Sequence numbers start at 1 and increase strictly, per queue file; they
// are never reused, across restarts, acks and archive pruning. Each file
// has an epoch, 16 random bytes made when the file is created (Epoch): a
// server that sees a new epoch with sequence numbers starting again knows
// the file was replaced, not that records were lost.
//
// # Reading, acking, the archive
//
// Peek and PeekAfter read the oldest unacked records in sequence order,
// only those whose Append has returned: bbolt shows a commit to readers
// when it writes the meta page, before the fsync that makes it durable
// returns, and a record sent in that window and then lost to a power cut
// would see its sequence number handed out again. Ack and AckThrough mark
// delivered records. Acked records move to an
// archive, kept up to ArchiveMaxRecords, ArchiveMaxBytes and ArchiveMaxAge
// and pruned oldest first, so that a server restoring its own backup can
// ask for them again (Replay moves them back to the unacked records; one
// a power cut interrupts is finished by the next Open).
//
// # Capacity
//
// MaxRecords and MaxBytes bound the unacked records, and MaxFileSize the
// file (it is bbolt's MaxSize). When a limit is reached Append fails with
// ErrFull ("queue: full: …"); nothing is dropped or overwritten. Appends
// are refused once the file's used space reaches about 7/8 of what bbolt
// may allocate, so acks always have room to commit; when the file is that
// full, acked records are deleted instead of archived.
//
// # The file
//
// The queue owns the buckets MetaBucket ("queue.meta"), PendingBucket
// ("queue.pending") and ArchiveBucket ("queue.archive"), and every bucket
// whose name starts with BucketPrefix ("queue."). The caller may keep its
// own buckets in the same file through State.
//
// bbolt settings, after bbolt's own guidance: NoSync is never set;
// NoFreelistSync is set (fewer pages written per commit, the freelist is
// rebuilt by scanning the file on open) with the hashmap freelist.
//
// Open checks an existing file before using it: it reads the page tree
// itself, with every field bounds-checked (a damaged page could otherwise
// crash or hang the process inside bbolt), then runs bbolt's tx.Check and
// checks the queue's own records and counters. A file that fails to open
// or check is renamed to "<path>.corrupt-<UTC time>" (with "-2", "-3"…
// when a file has that name, or one that starts with it and a dot: the
// caller's mark of a file it dealt with) and Open returns a
// *CorruptError saying where it went; it never creates a new file in its
// place by itself. Calling Open again then starts a new, empty queue with a
// new epoch (unless Options.NoCreate, which returns ErrNoFile: a caller
// whose first sequence numbers come from the clock opens this way while
// its clock is unset). Stored counters that disagree with the records are
// repaired (and logged), not treated as damage.
//
// # Salvage and adopted records
//
// OpenSalvage reads what it can of a damaged file without bbolt: the
// bounds-checked page walk of the open check, made tolerant (a page that
// fails a check is skipped with what is below it, and counted). It gives
// the file's epoch, last sequence number, the caller's state and its
// unacked records. Adopt keeps such records in a new file under their own
// epoch and sequence numbers (the AdoptedBucket), PeekAdopted reads them
// for delivery and AckAdopted deletes them; they count in Stats.Adopted
// and State.Unacked. LeafPages lists the pages holding a bucket's keys.
//
// # 32-bit ARM
//
// bbolt maps the whole file into memory, and a 32-bit process has about
// 3 GiB of address space, shared with everything else, in which bbolt
// needs one contiguous mapping (it doubles in size as the file grows).
// The defaults keep the file, and so the mapping, at most 512 MiB
// (DefaultMaxFileSize; Open refuses more than 768 MiB on 32-bit platforms).
// The initial mapping is 4 MiB on 32-bit platforms, growing with the file,
// and the whole 512 MiB on 64-bit ones (address space only: the file and
// the resident memory grow with the data), so that there the map never
// needs to grow. The default limits (1,000,000 records or 256 MiB waiting,
// plus a 100,000-record or 32 MiB archive) fit in that file with room to
// spare: a million 256-byte records take about 290 MB.
//
// # Caveats
//
// Durability is what fsync gives: storage that acknowledges writes it has
// not made durable (some SD cards and USB flash) can still lose the last
// commits on power loss. The crash tests kill the process (SIGKILL), which
// shows that no acknowledged record is lost or duplicated and the file
// stays consistent at any instant of a process crash; the power-cut tests
// (cmd/internal/powercut) run the queue on a disk that discards whatever
// was not fsynced, and show the same at any instant of a power cut.
//
// Records carry no checksum of their own (bbolt has none): a bit flipped
// in a record's bytes on the medium is returned as it is. Tap records are
// signed end to end, so the server detects such damage.
//
// Open reads the whole file to check it: 0.8 s for a million 256-byte
// records (290 MB) on a 2-core x86-64 machine with the file in the page
// cache; expect several times that on an ARM validator reading flash. With
// SkipOpenCheck, Open is fast but a damaged file may crash or hang the
// process inside bbolt.
//
// On 32-bit platforms the memory map grows by remapping, which waits for
// open read transactions: a long ViewState delays appends while the file
// grows.
//
// Acks larger than 1000 records are committed in several transactions; if
// one fails, the records acked before it stay acked (acks are idempotent).
//
// Archive pruning goes in sequence order and stops at the first record
// still inside its retention, so a record acked out of order may be kept
// longer than ArchiveMaxAge, never shorter.
package queue
