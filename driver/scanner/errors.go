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

// ErrInUse is the reason (wrapped, with the path) a serial scanner cannot
// be opened while another reader holds it: another validator, or another
// [[scanner]] of the same one, configured with the same device. The reader
// retries (logged once) and takes the device when it is free.
var ErrInUse = errors.New("scanner: in use by another reader (another validator, another scanner with the same path, " +
	"or another program of a user who may open the device)")

// inUseError is ErrInUse with the process that holds the lock, as
// /proc/locks names it: what to stop, or whose account may open the
// scanner (a user of its group, a modem manager).
type inUseError struct{ holder string }

func (e *inUseError) Error() string { return ErrInUse.Error() + ": held by " + e.holder }

func (e *inUseError) Is(target error) bool { return target == ErrInUse }
