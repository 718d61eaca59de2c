// Package update is the validator's over-the-air self-update: it takes
// the fleet's signed rollout (the wire.DocRelease downlink), downloads the
// release binary for its architecture from the settlement server, checks
// it, installs it beside the running binary and asks to be restarted; at
// the next start it watches the new version and puts the previous binary
// back if the new one does not report healthy in time.
//
// # Files
//
// Everything lives beside the binary B (its directory must be writable
// by the validator; systemd restarts it: Restart=always):
//
//	.B.download     the download in progress (resumed with an HTTP Range request)
//	.B.previous     the binary that ran before the last update (a hard link)
//	.B.update.json  the updater's state: the update waiting for its health
//	                check, its boot count, the last failure, and the newest
//	                rollout seen (the replay guard); written whole or not
//	                at all (queue/durable)
//	.B.update-guard the replay guard again, alone, with a CRC-32: written
//	                the same way, whenever the guard advances and before
//	                the rollout is acted on
//
// # Checks
//
// A rollout is applied only if its downlink verifies with the fleet key
// (the uplink checks that), the device is in it (listed, or its
// wire.RolloutBucket is under the percentage), the manifest for this
// architecture verifies with the fleet key, its version is not older
// than the running one unless the rollout allows a downgrade, and the
// same version did not already fail here under the same rollout, and no
// newer rollout was seen (an older one is a replay). The guard is the
// newest rollout of both valid copies (the state file's and
// .B.update-guard's), so a state file found damaged, or gone while
// .B.previous is kept, starts afresh with the guard file's, and a damaged
// guard file is written again from the state's. Only when neither copy
// can be read is the guard lost: until a rollout is installed, a rollout
// older than the running version is then refused even if it allows a
// downgrade (an older upgrade can still come through, as on a new device:
// the fleet's current rollout, retained, takes it back at the next
// connection). The
// download is bounded by the manifest's size (and Config.MaxSize); its
// size and SHA-256 must be the manifest's, or it is deleted and the
// failure recorded.
//
// # Install and rollback
//
// The running binary is hard-linked to .B.previous, the state records the
// pending version, and the verified download is renamed over B (rename(2)
// is atomic: B is always a whole binary, old or new) and the directory
// fsynced (queue/durable). [Updater.Run] then returns [ErrRestart]: the
// validator stops cleanly and systemd starts the new binary.
//
// The new binary calls [Updater.Boot] first: it counts the starts of the
// unconfirmed version within one kernel boot (Config.BootID: a start after
// a power cut or a reboot follows no crash, and the count starts again),
// and past Config.MaxBoots (a crash loop) renames
// .B.previous back over B and returns [ErrRolledBack]. [Updater.Healthy]
// confirms the version (the validator calls it once it has reached the
// broker and its tap loop has beaten once); if that does not happen within
// Config.HealthTimeout, Run rolls back the same way. The failure is kept
// in the state file, reported in the device status (wire.UpdateStatus)
// and logged; the same version is not tried again until the operator
// publishes a new rollout.
//
// # Caveats
//
// A binary that dies before it reaches Boot (not a Go binary for this
// machine, say) cannot count its own boots; the manifest's architecture
// and SHA-256 make that unlikely but only an outside watcher (systemd's
// OnFailure=) could catch it. Nor can Boot tell a version that takes the
// whole machine down at start (a reboot each time) from power cuts.
package update
