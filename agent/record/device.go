package record

import (
	"fmt"
	"regexp"
)

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidDeviceID reports an error unless id is 1 to 64 characters of
// letters, digits, '_', '.', '-', starting with a letter or digit. Device ids
// appear in tap ids and MQTT topics, so MQTT wildcards and '/' are excluded.
func ValidDeviceID(id string) error {
	if !deviceIDRE.MatchString(id) {
		return fmt.Errorf("%w: device id %q must be 1-64 letters, digits, '_', '.' or '-'", ErrMalformed, id)
	}
	return nil
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
