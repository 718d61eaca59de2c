package console

import "errors"

// ErrCrossSite is the reason a POST that did not come from the console's
// own pages (its Origin, Referer or Sec-Fetch-Site say another site) is
// refused.
var ErrCrossSite = errors.New("console: request not from the console's own pages")

// ErrNoSession is returned for a request without a live session: no
// cookie, an unknown, ended, expired or idle session, or a revoked token.
var ErrNoSession = errors.New("console: not signed in")

// ErrBadCSRF is the reason a POST whose form lacks the session's CSRF
// token is refused.
var ErrBadCSRF = errors.New("console: missing or wrong CSRF token")
