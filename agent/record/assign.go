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
