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
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/fleet"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/brokertest"
)

// sampleBroker is the shipped Mosquitto sample (configuration and ACL).
var sampleBroker = filepath.Join("..", "..", "..", "testdata", "broker")

// startSampleMosquitto starts a Mosquitto of the test's own with the
// shipped sample configuration and ACL (listener port, password file and
// persistence changed for the test; its TLS listener left out) and the
// password file passwd writes (farego-settlement mqtt-passwd). It returns
// the broker and the password file's path.
func startSampleMosquitto(t *testing.T, passwd func() ([]byte, error)) (*brokertest.Mosquitto, string) {
	t.Helper()
	var file string
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Config: func(m *brokertest.Mosquitto) string {
		file = filepath.Join(m.Dir, "farego.passwd")
		b, err := passwd()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		acl, err := filepath.Abs(filepath.Join(sampleBroker, "acl"))
		if err != nil {
			t.Fatal(err)
		}
		sample, err := os.ReadFile(filepath.Join(sampleBroker, "mosquitto.conf"))
		if err != nil {
			t.Fatal(err)
		}
		conf, _, found := strings.Cut(string(sample), "# MQTT over TLS")
		if !found {
			t.Fatal("the sample configuration changed: no TLS listener section")
		}
		conf = strings.NewReplacer(
			"/etc/mosquitto/farego.passwd", file,
			"/etc/mosquitto/farego.acl", acl,
			"listener 1883 127.0.0.1", "listener "+m.Ports[0]+" 127.0.0.1",
			"persistence true", "persistence false",
			"persistence_location /var/lib/mosquitto/\n", "",
		).Replace(conf)
		for _, must := range []string{file, acl, "listener " + m.Ports[0], "persistence false", "max_queued_bytes"} {
			if !strings.Contains(conf, must) {
				t.Fatalf("the sample configuration changed: %q not found", must)
			}
		}
		return conf
	}})
	return m, file
}

// instanceFigures are one instance's batches and new taps, from its log's
// debug lines msg="ledger: taps committed" … taps=N new=M.
type instanceFigures struct{ batches, taps, fresh int }

var committedRE = regexp.MustCompile(`msg="ledger: taps committed".* taps=(\d+) new=(\d+)`)

func readFigures(t *testing.T, log string, from int64) instanceFigures {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var f instanceFigures
	for _, m := range committedRE.FindAllStringSubmatch(string(b[min(from, int64(len(b))):]), -1) {
		n, _ := strconv.Atoi(m[1])
		fresh, _ := strconv.Atoi(m[2])
		f.batches, f.taps, f.fresh = f.batches+1, f.taps+n, f.fresh+fresh
	}
	return f
}

// TestSeveralInstances runs farego as several settlement instances are
// meant to run, with real processes: three `farego-settlement run` on one
// PostgreSQL database (a schema of the test's own) and one Mosquitto (the
// shipped sample configuration and ACL, passwords from
// `farego-settlement mqtt-passwd`, reloaded with SIGHUP once farego-sim
// has registered its validators), and farego-sim driving 500 validators
// with outages through them. Midway one instance is SIGKILLed and started
// again. Afterwards every accepted tap is in the ledger exactly once and
// nothing else is (farego-sim's reconciliation, balances included),
// `farego-settlement verify` passes, and every instance settled batches,
// the restarted one after its restart too.
//
// It needs FAREGO_TEST_POSTGRES and mosquitto (it skips without them,
// fails under FAREGO_CI). Knobs: FAREGO_SCALE_VALIDATORS (default 500;
// 100 with -short), FAREGO_SCALE_SECONDS of tapping (default 40; 15 with
// -short), at 0.5 taps/s a validator. About two minutes on 2 cores.
func TestSeveralInstances(t *testing.T) {
	validators, seconds := 500, 40
	if testing.Short() {
		validators, seconds = 100, 15
	}
	validators = envInt(t, "FAREGO_SCALE_VALIDATORS", validators)
	seconds = envInt(t, "FAREGO_SCALE_SECONDS", seconds)
	dsn := ledgertest.PostgresSchema(t)
	if _, err := exec.LookPath("mosquitto"); err != nil && os.Getenv("FAREGO_CI") == "" {
		t.Skipf("mosquitto not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r := New(dir, binDir, nil)
	r.ExternalBroker, r.DB = true, dsn
	defer r.Close()
	must(t, r.Init(ctx, fleet.DefaultFares))
	passwd := func() ([]byte, error) {
		out, err := r.command(ctx, "farego-settlement", "mqtt-passwd", "--data", r.DataDir(), "--db", dsn)
		return []byte(out), err
	}
	m, passwdFile := startSampleMosquitto(t, passwd)
	r.MQTT = m.Addrs[0]

	names := []string{"settlement-a", "settlement-b", "settlement-c"}
	instances := map[string]*Instance{}
	for _, n := range names {
		in, err := r.Instance(ctx, n)
		must(t, err)
		instances[n] = in
		defer func() { instances[n].Stop(false) }()
	}
	defer func() {
		if t.Failed() {
			for _, n := range names {
				if b, err := os.ReadFile(filepath.Join(dir, n+".log")); err == nil {
					t.Logf("%s.log (tail):\n%s", n, tail(string(b), 30))
				}
			}
		}
	}()

	token := filepath.Join(dir, "operator.token")
	must(t, os.WriteFile(token, []byte(r.Token), 0o600))
	// Once farego-sim has registered its validators, Mosquitto learns
	// their passwords: the password file written anew, then SIGHUP.
	reload := fmt.Sprintf("%s mqtt-passwd --data %s --db '%s' > %s.new && mv %s.new %s && kill -HUP %d",
		filepath.Join(binDir, "farego-settlement"), r.DataDir(), dsn, passwdFile, passwdFile, passwdFile, m.PID)
	sim := exec.CommandContext(ctx, filepath.Join(binDir, "farego-sim"),
		"--server", "http://"+instances["settlement-a"].HTTP, "--broker", "tcp://"+r.MQTT, "--token", "@"+token,
		"--fleet-pub", r.FleetPub(), "--validators", strconv.Itoa(validators), "--riders", strconv.Itoa(2*validators),
		"--rate", "0.5", "--duration", fmt.Sprintf("%ds", seconds), "--outage-every", "10s", "--outage-for", "3s",
		"--drain", "3m", "--progress", "5s", "--on-registered", reload, "--dir", filepath.Join(dir, "sim"))
	stdout, err := sim.StdoutPipe()
	must(t, err)
	var simErr strings.Builder
	sim.Stderr = &simErr
	must(t, sim.Start())
	// The report is logged at the end: nothing may log from a goroutine
	// once the test is over.
	var report strings.Builder
	connected, simExit := make(chan struct{}), make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			report.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "validators connected") {
				close(connected)
			}
		}
		simExit <- sim.Wait()
	}()
	select {
	case <-connected:
	case err := <-simExit:
		t.Fatalf("farego-sim ended before its validators connected: %v\n%s%s", err, report.String(), simErr.String())
	}
	// Riders tap now: kill an instance halfway through, restart it 3 s later.
	time.Sleep(time.Duration(seconds) * time.Second / 2)
	must(t, instances["settlement-c"].Stop(true))
	killedAt := time.Now()
	time.Sleep(3 * time.Second)
	st, err := os.Stat(filepath.Join(dir, "settlement-c.log"))
	must(t, err)
	restartedAt := st.Size()
	in, err := r.Instance(ctx, "settlement-c")
	must(t, err)
	instances["settlement-c"] = in
	t.Logf("settlement-c SIGKILLed %v into the tapping, restarted %v later", time.Duration(seconds)*time.Second/2,
		time.Since(killedAt).Round(time.Millisecond))
	err = <-simExit
	t.Logf("farego-sim:\n%s", report.String())
	if err != nil {
		t.Fatalf("farego-sim: %v\n%s", err, simErr.String())
	}
	out := report.String()
	if !regexp.MustCompile(`ledger +(\d+) of (\d+) accepted taps, 0 lost, 0 doubled, 0 unexpected; 0 balances wrong`).MatchString(out) {
		t.Errorf("farego-sim's reconciliation is not clean:\n%s", out)
	}
	v, err := r.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, v)
	}
	t.Log(strings.TrimSpace(v))
	for _, n := range names {
		f := readFigures(t, filepath.Join(dir, n+".log"), 0)
		rss, _ := instances[n].PeakRSS()
		t.Logf("%s: %d batches, %d taps (%d new); peak RSS %d MiB", n, f.batches, f.taps, f.fresh, rss>>20)
		if f.batches == 0 {
			t.Errorf("%s settled no batch: the shared subscription did not share", n)
		}
	}
	if f := readFigures(t, filepath.Join(dir, "settlement-c.log"), restartedAt); f.batches == 0 {
		t.Error("settlement-c settled no batch after its restart")
	} else {
		t.Logf("settlement-c after its restart: %d batches, %d taps (%d new)", f.batches, f.taps, f.fresh)
	}
}
