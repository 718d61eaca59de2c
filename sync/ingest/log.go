package ingest

// Attribute keys used in log records.
const (
	logKeyErr        = "err"
	logKeyBroker     = "broker"
	logKeyClientID   = "client_id"
	logKeyAttempts   = "attempts"
	logKeyDownFor    = "down_for"
	logKeyTopic      = "topic"
	logKeyDevice     = "device"
	logKeyReason     = "reason"
	logKeySize       = "size"
	logKeyCount      = "count"
	logKeySuppressed = "suppressed"
	logKeyRecords    = "records"
	logKeyEpoch      = "epoch"
	logKeyKind       = "kind"
	logKeyVersion    = "version"
	logKeyFrom       = "from"
	logKeyTo         = "to"
	logKeyFilters    = "filters"
	logKeyTap        = "tap"
	logKeyCodeHash   = "code_hash"
	logKeyVerdict    = "verdict"
)
