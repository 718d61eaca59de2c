package feedback

import "log/slog"

var discardLog = slog.New(slog.DiscardHandler)

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return discardLog
	}
	return log
}
