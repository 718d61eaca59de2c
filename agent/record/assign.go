package record

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckAssignment checks a route and vehicle name as every part of the
// system takes them (the operator's API and the ledger, the signed
// command, the validator's config and ctl): route 1 to 64 bytes, vehicle
// at most 64 (the tap record's limit), both valid UTF-8 without control
// characters or surrounding spaces. One rule, so that an assignment the
// ledger records is one the device can be sent and accepts.
func CheckAssignment(route, vehicle string) error {
	if route == "" {
		return fmt.Errorf("route is empty")
	}
	for _, f := range []struct{ name, v string }{{"route", route}, {"vehicle", vehicle}} {
		switch {
		case len(f.v) > maxName:
			return fmt.Errorf("%s is %d bytes, limit %d", f.name, len(f.v), maxName)
		case !utf8.ValidString(f.v):
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		case strings.TrimSpace(f.v) != f.v:
			return fmt.Errorf("%s %q has surrounding spaces", f.name, f.v)
		case strings.IndexFunc(f.v, unicode.IsControl) >= 0:
			return fmt.Errorf("%s has control characters", f.name)
		}
	}
	return nil
}
