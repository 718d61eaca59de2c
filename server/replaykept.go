package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// keptReplays are the devices a fleet's replay request is kept for
// (ledger.KeepReplay), as last read from the ledger (any instance may have
// kept it), and when this instance last tried to send each one.
type keptReplays struct {
	devices atomic.Pointer[map[string]bool]
	tried   sync.Map // device id → time.Time
	// sending counts the sends under way: Run waits for them before it
	// closes the ledger (a send claimed with the ledger closed under it
	// was counted and never made).
	sending sync.WaitGroup
}

// keptReplayRefresh is how often the devices a replay is kept for are read
// again from the ledger (a request kept through another instance).
const keptReplayRefresh = 30 * time.Second

// replayFleet is api.Config.ReplayFleet: one request id for the whole
// fleet, sent at once to the devices whose status says online (sends, by
// id: their queue epoch), and kept for every device not revoked. A send
// that fails (no broker link) fails the call, the request kept.
func (s *Server) replayFleet(ctx context.Context, sends map[string]string) ([]string, error) {
	id := s.ingest.NextReplayID()
	var asked []string
	var sendErr error
	for dev, epoch := range sends {
		if sendErr = s.ingest.ReplayAs(ctx, id, dev, epoch, 1, wire.ReplayWholeArchive); sendErr != nil {
			break
		}
		asked = append(asked, dev)
	}
	if err := s.ledger.KeepReplay(ctx, id, asked); err != nil {
		return nil, err
	}
	s.readKeptReplays(ctx)
	s.log.Info("replay kept for every device not reached", "id", id, "asked", len(asked), "until", time.Now().Add(ledger.KeptReplayFor).UTC())
	return asked, sendErr
}

// keptReplayLoop reads the devices a replay is kept for every
// keptReplayRefresh until ctx is done.
func (s *Server) keptReplayLoop(ctx context.Context) {
	t := time.NewTicker(keptReplayRefresh)
	defer t.Stop()
	for {
		s.readKeptReplays(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) readKeptReplays(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	devs, err := s.ledger.KeptReplays(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("reading the replays kept for devices", "err", err)
		}
		return
	}
	s.kept.devices.Store(&devs)
}

// sendKeptReplays sends the replay request kept for the device of an
// online status m, if one is (at most ledger.KeptReplaySends times,
// ledger.KeptReplayGap apart, whichever instance hears it), in the
// background: a status is never held up by it.
func (s *Server) sendKeptReplays(m *wire.Status) {
	devs := s.kept.devices.Load()
	if !m.Online || m.Epoch == "" || devs == nil || !(*devs)[m.DeviceID] {
		return
	}
	now := time.Now()
	if last, ok := s.kept.tried.Load(m.DeviceID); ok && now.Sub(last.(time.Time)) < ledger.KeptReplayGap {
		return
	}
	s.kept.tried.Store(m.DeviceID, now)
	s.kept.sending.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		id, err := s.ledger.TakeKeptReplay(ctx, m.DeviceID)
		if err != nil {
			s.log.Warn("a kept replay request not sent", "device", m.DeviceID, "err", err)
			return
		}
		if id == 0 {
			return
		}
		if err := s.ingest.ReplayAs(ctx, id, m.DeviceID, m.Epoch, 1, wire.ReplayWholeArchive); err != nil {
			s.log.Warn("a kept replay request not sent", "device", m.DeviceID, "err", err)
			if !errors.Is(err, ingest.ErrNotConnected) {
				return // a publish that timed out may have gone: counted
			}
			// Not a send: the next online status a minute on (tried)
			// may claim it again.
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			if err := s.ledger.ReturnKeptReplay(rctx, m.DeviceID, id); err != nil {
				s.log.Warn("a kept replay request's failed send still counted", "device", m.DeviceID, "err", err)
			}
		}
	})
}
