package feedback

import "errors"

// ErrInvalidConfig is returned (wrapped, with the details) by [NewGPIO] for
// a configuration it cannot use: no output at all, a negative hold time, an
// output path that cannot be written.
var ErrInvalidConfig = errors.New("feedback: invalid config")

// ErrClosed is returned by a [GPIO] used after Close.
var ErrClosed = errors.New("feedback: closed")
