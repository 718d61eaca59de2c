package update

import "errors"

// ErrConfig is returned (wrapped) by New for a configuration it cannot use.
var ErrConfig = errors.New("update: bad configuration")

// ErrRestart is returned by Run once a new binary is installed: the
// validator stops cleanly and exits so that systemd starts it.
var ErrRestart = errors.New("update: new version installed; restart")

// ErrRolledBack is returned by Boot and Run when the running version
// failed (a crash loop, no health report in time) and the previous binary
// is back in place: the validator exits so that systemd starts it.
var ErrRolledBack = errors.New("update: rolled back to the previous version; restart")

// ErrBadDownload is returned (wrapped) for a download that does not match
// its manifest (size, SHA-256, a server sending too much) or cannot be
// stored: it is deleted and not retried under the same rollout.
var ErrBadDownload = errors.New("update: download refused")
