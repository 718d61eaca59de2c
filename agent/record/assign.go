package record

import (
	"fmt"
	"strings"
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
		if err := CheckText(f.name, f.v, maxName); err != nil {
			return err
		}
		if strings.TrimSpace(f.v) != f.v {
			return fmt.Errorf("%s %q has surrounding spaces", f.name, f.v)
		}
	}
	return nil
}

// CheckNewAssignment is CheckAssignment for a name given new (a route a
// fare table publishes, an assignment the operator makes): it may also
// hold no invisible formatting character (Hidden), which would show it as
// another name on the console and the validator's display. Names stored
// before (a validator's records and stored assignment, an older table)
// keep CheckAssignment, so that they still load and are charged.
func CheckNewAssignment(route, vehicle string) error {
	if err := CheckAssignment(route, vehicle); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"route", route}, {"vehicle", vehicle}} {
		if strings.IndexFunc(f.v, Hidden) >= 0 {
			return fmt.Errorf("%s %q has an invisible formatting character (a bidirectional control or a zero-width space): it would be shown as another", f.name, f.v)
		}
	}
	return nil
}
