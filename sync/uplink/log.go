package uplink

// Attribute keys used in log records.
const (
	logKeyErr      = "err"
	logKeyBroker   = "broker"
	logKeyClientID = "client_id"
	logKeyAttempts = "attempts"
	logKeyDownFor  = "down_for"
	logKeyTopic    = "topic"
	logKeyReason   = "reason"
	logKeySize     = "size"
	logKeyKind     = "kind"
	logKeyVersion  = "version"
	logKeyHave     = "have"
	logKeySeq      = "seq"
	logKeyFrom     = "from"
	logKeyTo       = "to"
	logKeyRecords  = "records"
	logKeyTimeout  = "timeout"
	logKeyCount    = "count"
	logKeyEpoch    = "epoch"
)
