package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/sync/update"
	"github.com/farego/farego/sync/uplink"
)

// UpdateConfig configures over-the-air updates ([update]). They need
// [mqtt] (the rollout comes as a fleet downlink, checked with its key).
type UpdateConfig struct {
	// Server is the settlement server's HTTP address, where binaries are
	// downloaded from (http://host:8080). Empty: updates off.
	Server string `toml:"server"`
	// Binary is the installed binary (default: the running executable).
	// Its directory must be writable by the validator.
	Binary string `toml:"binary"`
	// HealthTimeout: a new version must reach the broker with its tap
	// loop beating within this, or the previous one comes back (default 2m).
	HealthTimeout Duration `toml:"health_timeout"`
	// MaxBoots: starts of a new version without reporting healthy before
	// it counts as a crash loop and is rolled back (default 3).
	MaxBoots int `toml:"max_boots"`
	// MaxSize bounds a download in bytes (default 64 MiB).
	MaxSize int64 `toml:"max_size"`
}

// exitRestart is the exit status after installing an update or rolling
// one back: systemd (Restart=always) starts the binary now in place.
const exitRestart = 3

// errRestart ends the validator so that systemd starts the binary in place.
var errRestart = errors.New("restarting into the binary now in place")

// bootUpdater builds the updater (nil without [update] server or [mqtt])
// and runs its boot check: counting starts of an unconfirmed version, and
// rolling back a crash loop (errRestart).
func bootUpdater(cfg *Config, keys *linkKeys, log *slog.Logger) (*update.Updater, error) {
	if cfg.Update.Server == "" || keys == nil {
		return nil, nil
	}
	fleet := keys.fleet
	binary := cfg.Update.Binary
	if binary != "" {
		binary = cfg.path(binary)
	}
	u, err := update.New(update.Config{
		Binary: binary, Current: agent.Version, DeviceID: cfg.DeviceID, FleetPublicKey: fleet,
		BaseURL: cfg.Update.Server, MaxSize: cfg.Update.MaxSize, HealthTimeout: time.Duration(cfg.Update.HealthTimeout),
		MaxBoots: cfg.Update.MaxBoots, Logger: log.With("part", "update"),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: update: %w", errConfig, err)
	}
	if dir, err := filepath.Dir(u.StateFile()), writableDir(filepath.Dir(u.StateFile())); errors.Is(err, syscall.ENOSPC) {
		log.Warn("update: no space left in the binary's directory: no update can be installed until space is freed", "dir", dir)
	} else if err != nil {
		// Said at start, not when the first rollout fails on it: the
		// shipped unit's ProtectSystem=strict keeps /usr read-only, and a
		// device whose [update] was uncommented without the drop-in took
		// no update, the reason only in the log of the day of the rollout.
		log.Error("update: the binary's directory is not writable: no update can be installed",
			"dir", dir, "err", err,
			"fix", "a drop-in with ReadWritePaths="+dir+" (systemctl edit farego-validator), or [update] binary in a writable directory")
	}
	if err := u.Boot(); errors.Is(err, update.ErrRolledBack) {
		return nil, errRestart
	} else if err != nil {
		log.Error("update: boot check failed; running on", "err", err)
	}
	crashAtStart(log) // a test hook, absent from the release build
	return u, nil
}

// runUpdater connects the updater to the link and runs it until ctx is
// done: it confirms this version once the link is up and the tap loop has
// beaten (tapping), and cancels the validator (stop) to restart after an
// install or a rollback, setting *restart.
func runUpdater(ctx context.Context, u *update.Updater, up *uplink.Uplink, tapping func() bool, stop func(), restart *atomic.Bool, log *slog.Logger) func() {
	if u == nil || up == nil {
		return func() {}
	}
	// A refused update is reported at once, not with the next status.
	u.OnChange(up.StatusChanged)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := u.Run(ctx)
		if errors.Is(err, update.ErrRestart) || errors.Is(err, update.ErrRolledBack) {
			restart.Store(true)
			stop()
		} else if err != nil {
			log.Error("update stopped", "err", err)
		}
	}()
	if u.Pending() {
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if up.Connected() && tapping() {
					if err := u.Healthy(); err != nil {
						log.Error("update: recording the healthy start failed", "err", err)
					}
					up.StatusChanged()
					return
				}
			}
		}()
	}
	return func() { <-done }
}

// writableDir reports whether a file can be made in dir (and removes it);
// a variable so that a test can make the disk full.
var writableDir = func(dir string) error {
	f, err := os.CreateTemp(dir, ".farego-validator.probe*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// registerUpdateMetrics exports the update state.
func registerUpdateMetrics(reg *metrics.Registry, u *update.Updater) {
	if u == nil {
		return
	}
	reg.GaugeFunc("farego_update_pending", "1 while a newly installed version waits to report healthy.", func() float64 {
		if u.Pending() {
			return 1
		}
		return 0
	})
	reg.GaugeFunc("farego_update_failed", "1 if the last software update failed (refused or rolled back; see the status).", func() float64 {
		if st := u.Status(); st != nil && st.Failed != "" {
			return 1
		}
		return 0
	})
}
