package rig

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/fleet"
	"github.com/farego/farego/sync/brokertest"
)

// TestMosquittoRestartWhileTapping: a depot's Mosquitto dies (SIGKILL)
// while riders tap on farego-sim's validators, and is started again 5 s
// later on the same port, as systemd does. The validators queue their
// taps meanwhile, reconnect (jittered) and resend; the settlement server
// (one `farego-settlement run`, SQLite) reconnects too. Devices that came
// back before the server had subscribed again had their first batches
// dropped by the broker: they send them again after their ack timeout,
// not only once riders stop. Every accepted tap is in the ledger once
// (farego-sim's reconciliation, balances included), nothing is left
// queued, and `farego-settlement verify` passes.
//
// It needs mosquitto (it skips without it, fails under FAREGO_CI).
// Knobs: FAREGO_SCALE_VALIDATORS (default 50; 30 with -short),
// FAREGO_SCALE_SECONDS of tapping (default 15).
func TestMosquittoRestartWhileTapping(t *testing.T) {
	validators, seconds := 50, 15 // make test's share: the point, not a load
	if testing.Short() {
		validators, seconds = 30, 15
	}
	validators = envInt(t, "FAREGO_SCALE_VALIDATORS", validators)
	seconds = envInt(t, "FAREGO_SCALE_SECONDS", seconds)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r := New(dir, binDir, nil)
	r.ExternalBroker = true
	defer r.Close()
	must(t, r.Init(ctx, fleet.DefaultFares))
	passwd := func() ([]byte, error) {
		out, err := r.command(ctx, "farego-settlement", "mqtt-passwd", "--data", r.DataDir())
		return []byte(out), err
	}
	m, passwdFile := startSampleMosquitto(t, passwd)
	r.MQTT = m.Addrs[0]
	in, err := r.Instance(ctx, "settlement")
	must(t, err)
	defer in.Stop(false)
	defer func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "settlement.log")); err == nil {
				t.Logf("settlement.log (tail):\n%s", tail(string(b), 30))
			}
		}
	}()

	token := filepath.Join(dir, "operator.token")
	must(t, os.WriteFile(token, []byte(r.Token), 0o600))
	// The password file is the one Mosquitto started again reads too.
	reload := fmt.Sprintf("%s mqtt-passwd --data %s > %s.new && mv %s.new %s && kill -HUP %d",
		filepath.Join(binDir, "farego-settlement"), r.DataDir(), passwdFile, passwdFile, passwdFile, m.PID)
	sim := exec.CommandContext(ctx, filepath.Join(binDir, "farego-sim"),
		"--server", "http://"+in.HTTP, "--broker", "tcp://"+r.MQTT, "--token", "@"+token,
		"--fleet-pub", r.FleetPub(), "--validators", strconv.Itoa(validators), "--riders", strconv.Itoa(2*validators),
		"--rate", "0.5", "--duration", fmt.Sprintf("%ds", seconds), "--outage-every", "0",
		"--drain", "3m", "--progress", "1s", "--on-registered", reload, "--dir", filepath.Join(dir, "sim"))
	stdout, err := sim.StdoutPipe()
	must(t, err)
	var simErr strings.Builder
	sim.Stderr = &simErr
	must(t, sim.Start())
	var report brokertest.SyncBuffer
	tapping, simExit := make(chan struct{}), make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			report.Write([]byte(sc.Text() + "\n"))
			// The kill comes once riders have tapped a while (the
			// third progress line of the tapping).
			if strings.Contains(sc.Text(), " tapping ") {
				if n++; n == 3 {
					close(tapping)
				}
			}
		}
		simExit <- sim.Wait()
	}()
	select {
	case <-tapping:
	case err := <-simExit:
		t.Fatalf("farego-sim ended before riders tapped: %v\n%s%s", err, report.String(), simErr.String())
	}

	must(t, syscall.Kill(m.PID, syscall.SIGKILL))
	time.Sleep(5 * time.Second) // the broker's outage, as long as a restart by systemd after a crash
	again := exec.Command("mosquitto", "-c", filepath.Join(m.Dir, "mosquitto.conf"))
	var againLog brokertest.SyncBuffer
	again.Stderr = &againLog
	must(t, again.Start())
	defer func() {
		again.Process.Kill()
		again.Wait()
		if t.Failed() {
			t.Logf("mosquitto started again, log:\n%s", againLog.String())
		}
	}()

	err = <-simExit
	t.Logf("farego-sim:\n%s", report.String())
	if err != nil {
		t.Fatalf("farego-sim: %v\n%s", err, simErr.String())
	}
	out := report.String()
	if !regexp.MustCompile(`ledger +(\d+) of (\d+) accepted taps, 0 lost, 0 doubled, 0 unexpected; 0 balances wrong`).MatchString(out) ||
		!strings.Contains(out, "left in queues     0") {
		t.Errorf("farego-sim's reconciliation is not clean:\n%s", out)
	}
	v, err := r.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, v)
	}
	t.Log(strings.TrimSpace(v))
	rss, _ := in.PeakRSS()
	t.Logf("settlement server: peak RSS %d MiB", rss>>20)
}
