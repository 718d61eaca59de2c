package agent

// Log attribute keys.
const (
	logReason   = "reason"
	logAccount  = "account"
	logSerial   = "serial"
	logCodeHash = "code_hash"
	logScanner  = "scanner"
	logSeq      = "seq"
	logFare     = "fare"
	logKind     = "kind"
	logVersion  = "version"
	logErr      = "err"
	logLatency  = "latency"
)
