package ledger

// Log attribute keys.
const (
	logKeyBackend   = "backend"
	logKeyPath      = "path"
	logKeyVersion   = "version"
	logKeyMigration = "migration"
	logKeyAccount   = "account"
	logKeySerial    = "serial"
	logKeyTap       = "tap"
	logKeyDevice    = "device"
	logKeyCodeHash  = "code_hash"
	logKeyReason    = "reason"
	logKeyFlag      = "flag"
	logKeyAmount    = "amount"
	logKeyBalance   = "balance"
	logKeyOp        = "op"
	logKeyAttempt   = "attempt"
	logKeyErr       = "err"
	logKeyMerchant  = "merchant"
	logKeyOrder     = "order"
	logKeyPayment   = "payment"
	logKeyTaps      = "taps"
	logKeyNew       = "new"
)
