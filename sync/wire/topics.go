package wire

import (
	"fmt"
	"strings"

	"github.com/farego/farego/agent/record"
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
	if !ok || strings.Contains(kind, "/") || record.ValidDeviceID(id) != nil {
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
		for _, k := range record.DocKinds {
			if k == kind {
				return k, nil
			}
		}
	}
	return "", fmt.Errorf("%w: %q", ErrBadTopic, topic)
}

const maxName = 64 // bounds device ids, epochs and other names in messages
