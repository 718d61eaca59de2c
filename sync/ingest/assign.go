package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/farego/farego/sync/wire"
)

// Assign tells a device the route and vehicle the operator assigned it: a
// fleet-signed wire.Assignment published retained, at QoS 1, on
// PREFIX/dev/ID/cmd, so a device offline now gets it when it next
// connects (a replay request, not retained, does not disturb it).
// version must increase with every assignment of the device (the ledger
// numbers them); the device ignores one not newer than it applied.
// ErrNotConnected while the Ingest is not connected.
func (in *Ingest) Assign(ctx context.Context, deviceID string, version uint64, route, vehicle string) error {
	a := wire.Assignment{DeviceID: deviceID, Version: version, Route: route, Vehicle: vehicle, IssuedAt: time.Now()}
	p, err := a.MarshalBinary()
	if err != nil {
		return fmt.Errorf("ingest: assign: %w", err)
	}
	msg, err := wire.Seal(wire.TypeAssign, p, false, in.cfg.FleetKey)
	if err != nil {
		return fmt.Errorf("ingest: assign: %w", err)
	}
	c := in.conn.Load()
	if c == nil || !c.connected() {
		return ErrNotConnected
	}
	if err := c.publish(ctx, in.topics.Device(deviceID, wire.KindCmd), true, msg, in.cfg.PublishTimeout); err != nil {
		return err
	}
	in.log.Info("ingest: assignment published", "device", deviceID, "version", version, "route", route, "vehicle", vehicle)
	return nil
}
