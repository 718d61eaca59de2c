package rig

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
)

// TestValidatorPowerCutsBrownOutsClockBackKeyRotation: a real
// farego-validator whose data directory is on a power-cut disk, through
// what a bus's supply does to it. Its real-time clock loses two hours at
// each cut (no battery); the power goes again within a fraction of a
// second of coming back, while it boots on what the last cut left (a
// brown-out, twice in a row every other round); then, the power staying
// on, riders tap while its clock is behind, an issuer key rotation and a
// deny-list update arrive over MQTT, NTP sets the clock right, riders tap
// again (with the new key too) and the power goes mid-tap or while the
// uplink sends and acks. After every cut, on a copy of what survived:
// every tap shown green is queued or in the ledger, no sequence number
// reused, every document it logged as applied (the keyring's new version
// too) still there. No tap is green while the clock is behind; once it is
// right the validator takes taps by itself. Finally the ledger holds
// exactly the green taps, no refused one, and verify is clean.
func TestValidatorPowerCutsBrownOutsClockBackKeyRotation(t *testing.T) {
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	const lost = -2 * time.Hour
	disk := powercut.Mount(t, &powercut.Options{Seed: 23})
	r, ctx := newRig(t)
	dev, err := r.Provision(ctx, "brownout-0", "42")
	must(t, err)
	defer dev.Close()
	dataDir := disk.Path("var", "lib", "farego")
	must(t, dev.SetPolicy("passback_window", `"-1s"`))
	must(t, dev.SetPolicy("risk_cap", "-1"))
	must(t, dev.SetConfig("data_dir", strconv.Quote(dataDir)))
	riders := newRiders(t, ctx, r, 6, 1_000_000)
	denied, err := r.NewAPIRider(ctx, "adult", 0)
	must(t, err)
	rnd := rand.New(rand.NewPCG(23, 23))
	c := newCutChecker(t, r, riders, dev.ID)
	queueFile, logFile := filepath.Join(dataDir, "validator.db"), filepath.Join(dev.Dir, "validator.log")
	cuts, bootCuts, refusedBehind, rotations := 0, 0, 0, 0
	cut := func(when string) {
		dev.Stop(true)
		for l := range dev.Lines {
			c.feedback("", l)
		}
		c.settleInFlight()
		_, err := disk.Cut(rnd.IntN(2) == 0)
		must(t, err)
		cuts++
		must(t, dev.SetClockSkew(lost)) // the clock lost at the cut
		c.check(ctx, when, queueFile, logFile)
	}
	tapGreen := func(when string, rd *APIRider) {
		code := rd.Code(time.Now())
		line, err := dev.Scan(ctx, code)
		must(t, err)
		if !strings.Contains(line, "ACCEPTED") {
			t.Errorf("%s: the clock right, the power on, a tap refused: %q", when, line)
		}
		c.feedback(code, line)
	}

	// The bus ran with its clock right: taps queued.
	must(t, dev.SetClockSkew(0))
	must(t, dev.Start(ctx))
	for range 4 {
		tapGreen("first run", riders[rnd.IntN(len(riders))])
	}
	cut("the first cut")

	for i := range rounds {
		when := fmt.Sprintf("round %d", i+1)
		// Brown-outs: the power goes while it boots on what survived.
		for range 1 + (i+1)%2 {
			if err := dev.StartKilled(ctx, time.Duration(30+rnd.IntN(400))*time.Millisecond); err != nil {
				bootCuts++
			}
			cut(when + ", a brown-out while it booted")
		}
		// The power stays on; the clock is two hours behind.
		must(t, dev.Start(ctx))
		for range 2 {
			code := riders[rnd.IntN(len(riders))].Code(time.Now())
			line, err := dev.Scan(ctx, code)
			must(t, err)
			if strings.Contains(line, "ACCEPTED") {
				t.Errorf("%s: a tap green with the clock %s behind: %q", when, -lost, line)
				c.feedback(code, line)
			} else {
				refusedBehind++ // never charged: drain checks the ledger
			}
		}
		var kr struct {
			Version uint64 `json:"version"`
		}
		must(t, r.API(ctx, "POST", "/v1/keyring/rotate", map[string]any{"activate_in": "0s"}, &kr))
		rotations++
		method := map[bool]string{true: "POST", false: "DELETE"}[i%2 == 0]
		must(t, r.API(ctx, method, "/v1/denylist", map[string]any{"account": denied.ID, "reason": "brownout_test"}, nil))
		fresh, err := r.NewAPIRider(ctx, "adult", 1_000_000) // a credential of the new key
		must(t, err)
		c.riders = append(c.riders, fresh)
		if err := WaitFor(ctx, 30*time.Second, "the new keyring applied", func() bool {
			b, _ := os.ReadFile(logFile)
			return appliedDocs(string(b))[record.DocKeyring] >= kr.Version
		}); err != nil {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("%s: %v; the validator's log ends:\n%s", when, err, tail(string(b), 30))
		}
		// NTP sets the clock; the validator goes back in service by itself.
		must(t, dev.SetClockSkew(0))
		time.Sleep(1100 * time.Millisecond) // the test clock file is read once a second
		tapGreen(when, fresh)
		for range 2 {
			tapGreen(when, riders[rnd.IntN(len(riders))])
		}
		switch rnd.IntN(2) {
		case 0: // mid-tap
			code := riders[rnd.IntN(len(riders))].Code(time.Now())
			must(t, dev.Write(code))
			time.Sleep(time.Duration(rnd.IntN(12000)) * time.Microsecond)
			c.inFlight(code)
		case 1: // while the uplink sends and acks
			time.Sleep(time.Duration(rnd.IntN(300)) * time.Millisecond)
		}
		cut(when)
	}

	must(t, dev.SetClockSkew(0))
	must(t, dev.Start(ctx))
	c.drain(ctx, []*Device{dev})
	dev.Stop(false)
	c.check(ctx, "after the drain", queueFile, logFile)
	t.Logf("brown-outs: %d power cuts (%d before the validator was ready), its clock %s behind after each; %d key rotations; "+
		"%d taps refused while the clock was behind, none charged; %d taps, %d green; %d green taps and %d documents logged as applied found after the cuts; ledger: %d rides, exactly the green ones (+%d of %d cut off mid-tap)",
		cuts, bootCuts, -lost, rotations, refusedBehind, c.taps, len(c.green), c.greenChecked, c.appliedChecked, c.rides, c.cutOffSettled, len(c.cutOff))
}
