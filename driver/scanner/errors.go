package scanner

import "errors"

// ErrInvalidConfig is returned (wrapped, with the details) by [NewSerial] and
// [NewFramer] when a configuration field is out of range: an unsupported baud
// rate, a prefix or suffix containing CR or LF, a negative length, and so on.
var ErrInvalidConfig = errors.New("scanner: invalid config")

// ErrRunning is returned by Run when the source is already running. A
// [LineSource] can be run only once, because its input can be read only once.
var ErrRunning = errors.New("scanner: already running")

// errDeviceLost wraps the reason a connected scanner was given up on (hang-up,
// read error, device path gone or now naming another device). It only appears
// in log lines: the reader reconnects by itself.
var errDeviceLost = errors.New("scanner: device lost")
