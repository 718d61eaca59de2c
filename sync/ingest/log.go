package ingest

// Attribute keys still used by handle.go's tap checks (the lead engineer
// converts those to literal keys with the rest of that file); everywhere
// else the package writes its keys literally.
const (
	logKeyCodeHash   = "code_hash"
	logKeyCount      = "count"
	logKeyDevice     = "device"
	logKeyErr        = "err"
	logKeyKind       = "kind"
	logKeyReason     = "reason"
	logKeyRecords    = "records"
	logKeySize       = "size"
	logKeySuppressed = "suppressed"
	logKeyTap        = "tap"
	logKeyTopic      = "topic"
	logKeyVerdict    = "verdict"
)
