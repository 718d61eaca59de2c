package feedback

import "log/slog"

// Log attribute keys.
const (
	keyOutput = "output"
	keyPath   = "path"
	keyErr    = "err"
	keyFailed = "failures"
	keyLine   = "line"
)

var discardLog = slog.New(slog.DiscardHandler)

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return discardLog
	}
	return log
}
