package ridertext

import "errors"

// ErrUnknownLanguage is returned (wrapped, with the tag) by [Parse] for a
// language the catalog does not have.
var ErrUnknownLanguage = errors.New("ridertext: unknown language")
