package durable

import "errors"

// ErrNoModes is returned (wrapped) by CheckModes for a directory whose
// filesystem keeps no Unix file modes (FAT or exFAT, as on USB sticks and
// SD cards): a file made there cannot be kept to its owner.
var ErrNoModes = errors.New("durable: the filesystem keeps no file modes")
