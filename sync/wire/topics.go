package wire

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultPrefix is the topic prefix when none is configured.
const DefaultPrefix = "farego"

// Per-device topic kinds.
const (
	KindTaps   = "taps"
	KindAck    = "ack"
	KindStatus = "status"
	KindCmd    = "cmd"
)

// Fleet downlink kinds; each is also the last topic level under PREFIX/fleet.
const (
	DownlinkKeyring  = "keyring"
	DownlinkDenyList = "denylist"
	DownlinkFares    = "fares"
)

// DownlinkKinds lists the fleet downlinks.
var DownlinkKinds = []string{DownlinkKeyring, DownlinkDenyList, DownlinkFares}

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidDeviceID reports an error unless id is 1 to 64 characters of
// letters, digits, '_', '.', '-', starting with a letter or digit. Device ids
// appear in topics and tap ids, so MQTT wildcards and '/' are excluded.
func ValidDeviceID(id string) error {
	if !deviceIDRE.MatchString(id) {
		return fmt.Errorf("%w: device id %q must be 1-64 letters, digits, '_', '.' or '-'", ErrMalformed, id)
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

// Topics builds topic names under a prefix.
type Topics struct {
	Prefix string // default DefaultPrefix
}

func (t Topics) prefix() string {
	if t.Prefix == "" {
		return DefaultPrefix
	}
	return strings.TrimSuffix(t.Prefix, "/")
}

// Device returns the topic of kind (KindTaps, …) for a device.
func (t Topics) Device(id, kind string) string { return t.prefix() + "/dev/" + id + "/" + kind }

// Fleet returns the topic of a fleet downlink kind.
func (t Topics) Fleet(kind string) string { return t.prefix() + "/fleet/" + kind }

// AllDevices returns the filter matching kind for every device.
func (t Topics) AllDevices(kind string) string { return t.prefix() + "/dev/+/" + kind }

// Shared returns filter as an MQTT v5-style shared subscription of group
// ("$share/GROUP/FILTER"), so several settlement instances share the load.
func Shared(group, filter string) string { return "$share/" + group + "/" + filter }

// ParseDevice splits a per-device topic into device id and kind.
func (t Topics) ParseDevice(topic string) (id, kind string, err error) {
	rest, ok := strings.CutPrefix(topic, t.prefix()+"/dev/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q", ErrBadTopic, topic)
	}
	id, kind, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(kind, "/") || ValidDeviceID(id) != nil {
		return "", "", fmt.Errorf("%w: %q", ErrBadTopic, topic)
	}
	switch kind {
	case KindTaps, KindAck, KindStatus, KindCmd:
		return id, kind, nil
	}
	return "", "", fmt.Errorf("%w: %q", ErrBadTopic, topic)
}

// ParseFleet returns the downlink kind of a fleet topic.
func (t Topics) ParseFleet(topic string) (string, error) {
	kind, ok := strings.CutPrefix(topic, t.prefix()+"/fleet/")
	if ok {
		for _, k := range DownlinkKinds {
			if k == kind {
				return k, nil
			}
		}
	}
	return "", fmt.Errorf("%w: %q", ErrBadTopic, topic)
}
