package queue

// Attribute keys used in log records.
const (
	logKeyPath      = "path"
	logKeyMovedTo   = "moved_to"
	logKeyErr       = "err"
	logKeyEpoch     = "epoch"
	logKeyRecords   = "records"
	logKeyBytes     = "bytes"
	logKeyLastSeq   = "last_seq"
	logKeyArchived  = "archived"
	logKeyRefusals  = "refusals"
	logKeyMmap      = "initial_mmap"
	logKeyMaxFile   = "max_file_size"
	logKeyRenameErr = "rename_err"
)
