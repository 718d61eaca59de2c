package wire

import (
	"fmt"
	"strconv"
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

// DenyShard returns the topic of deny-list shard n (PREFIX/fleet/denylist/N).
func (t Topics) DenyShard(n int) string { return t.Fleet(record.DocDenyList) + "/" + strconv.Itoa(n) }

// DenyShards returns the filter matching every deny-list shard topic.
func (t Topics) DenyShards() string { return t.Fleet(record.DocDenyList) + "/+" }

// DenyIndex returns the topic of the deny-list shard index
// (PREFIX/fleet/denyindex), which PREFIX/fleet/denylist/+ does not match.
func (t Topics) DenyIndex() string { return t.Fleet(record.DocDenyIndex) }

// ParseDenyShard returns the shard of a deny-list shard topic, and false
// for any other topic.
func (t Topics) ParseDenyShard(topic string) (int, bool) {
	rest, ok := strings.CutPrefix(topic, t.Fleet(record.DocDenyList)+"/")
	if !ok || rest == "" || len(rest) > 3 || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || n >= record.DenyShardCount {
		return 0, false
	}
	return n, true
}

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
