package record

import (
	"fmt"
	"regexp"
	"strings"
)

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidDeviceID reports an error unless id is 1 to 64 characters of
// letters, digits, '_', '.', '-', starting with a letter or digit. Device ids
// appear in tap ids and MQTT topics, so MQTT wildcards and '/' are excluded.
func ValidDeviceID(id string) error {
	if !deviceIDRE.MatchString(id) {
		return fmt.Errorf("%w: device id %q must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", ErrMalformed, id)
	}
	return nil
}

// ReservedDeviceID reports whether id is one no device may have: the
// settlement server's and the broker's own names ("farego-…" and a few
// words an operator would recognise as not a bus). Registration and the
// provisioning tool refuse them.
func ReservedDeviceID(id string) bool {
	l := strings.ToLower(id)
	if strings.HasPrefix(l, "farego") {
		return true
	}
	switch l {
	case "server", "broker", "admin", "root", "operator", "settlement", "mosquitto", "emqx":
		return true
	}
	return false
}

// The device documents: versioned, fleet-wide state a validator decides
// with. The link carries them as signed downlinks (each kind is also the
// last topic level under PREFIX/fleet); the provisioning bundle seeds them.
const (
	DocKeyring  = "keyring"  // issuer keyring JSON (agent/paycode)
	DocDenyList = "denylist" // DenyList JSON
	DocFares    = "fares"    // fare table JSON (agent/fare)
)

// DocKinds lists the device documents.
var DocKinds = []string{DocKeyring, DocDenyList, DocFares}
