package rig

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// stolenFares is testFares with a dearer route X1.
const stolenFares = `{"version": 1, "currency": "EUR", "timezone": "Europe/Berlin", "service_day_start": "04:00",
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}, "X1": {"adult": 400}},
  "transfer": {"window": "1m", "fare": 0}, "daily_cap": {"adult": 2000}}`

// stolenTap is a tap record of the attacker's device with the code text.
func (a *attacker) stolenTap(t *testing.T, epoch string, seq uint64, when time.Time, route, vehicle, text string) wire.Record {
	t.Helper()
	code, err := paycode.ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	rec := record.Tap{DeviceID: a.id, Epoch: epoch, Seq: seq, Time: when.Truncate(time.Millisecond), Route: route, Vehicle: vehicle,
		Scanner: "front", Code: code.Bytes(), Account: code.Account, Serial: code.Serial, Profile: code.Profile, Fare: 250,
		Currency: "EUR", FareVersion: 1, KeyringVersion: 1}
	data, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return wire.Record{Seq: seq, Data: data}
}

// scanHonest taps text on the honest device and waits for its charge.
func scanHonest(t *testing.T, ctx context.Context, r *Rig, d *Device, rd *APIRider, text string) {
	t.Helper()
	if line, err := d.Scan(ctx, text); err != nil || !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("honest tap: %q, %v", line, err)
	}
	waitBalance(t, ctx, r, rd.ID, 10_000-250)
}

// denyEntries returns the deny-list entries (serial, reason) of account.
func denyEntries(t *testing.T, ctx context.Context, r *Rig, account uint64) []string {
	t.Helper()
	var dl struct {
		Entries []struct {
			Account uint64 `json:"account"`
			Serial  uint32 `json:"serial"`
			Reason  string `json:"reason"`
		} `json:"entries"`
	}
	if err := r.API(ctx, "GET", "/v1/denylist", nil, &dl); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range dl.Entries {
		if e.Account == account {
			out = append(out, fmt.Sprintf("%d:%s", e.Serial, e.Reason))
		}
	}
	return out
}

// settleAttack sends b on c and waits until the ledger has taken it (the
// attacker's batch is acked, or a while has passed).
func settleAttack(t *testing.T, a *attacker, c mqtt.Client, b *wire.Batch) {
	t.Helper()
	a.send(t, c, b)
	time.Sleep(1500 * time.Millisecond)
}

// stolenRig starts a server with stolenFares, an honest validator
// honest-N and a stolen one stolen-N connected by hand, both assigned
// route 42 and a vehicle of their own through the API.
func stolenRig(t *testing.T, n string) (*Rig, context.Context, *Device, *attacker, mqtt.Client) {
	t.Helper()
	r, ctx := newRigWith(t, stolenFares)
	honest := startDevice(t, ctx, r, "honest-"+n, fast...)
	a := provisionAttacker(t, ctx, r, "stolen-"+n)
	for _, id := range []string{honest.ID, a.id} {
		if err := r.API(ctx, "PUT", "/v1/devices/"+id+"/assignment", map[string]any{"route": "42", "vehicle": "bus-" + id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // the honest validator takes its assignment
	c, _, err := a.dial("", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return r, ctx, honest, a, c
}

// TestAttackStolenVehicleClaim: a stolen validator holds a code an honest
// validator took and sends it once, 30 s later, claiming the honest
// validator's vehicle. Judged by that claim, the reuse was two doors of
// one bus, never forgiven: one photographed code denied the rider's pass
// (and the account, with a second pass). A vehicle that is not the
// device's assignment is now unknown: the reuse is a quick transfer,
// forgiven.
func TestAttackStolenVehicleClaim(t *testing.T) {
	r, ctx, honest, a, c := stolenRig(t, "2")
	rider, err := r.NewAPIRider(ctx, "adult", 10_000)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	text := rider.Code(at)
	scanHonest(t, ctx, r, honest, rider, text)
	settleAttack(t, a, c, &wire.Batch{DeviceID: a.id, Epoch: "e1", SentAt: time.Now(),
		Records: []wire.Record{a.stolenTap(t, "e1", 1, at.Add(30*time.Second), "42", "bus-"+honest.ID, text)}})
	acct, err := r.Account(ctx, rider.ID)
	if err != nil {
		t.Fatal(err)
	}
	rides, _ := r.Rides(ctx, rider.ID)
	deny := denyEntries(t, ctx, r, rider.ID)
	t.Logf("balance %d, deny %v, rides %+v", acct.Balance, deny, rides)
	if len(deny) > 0 || acct.Balance != 10_000-250 {
		t.Errorf("one code another validator took, sent once by a stolen validator claiming that validator's vehicle: balance %d, deny %v; want one fare, not denied",
			acct.Balance, deny)
	}
	verifyClean(t, ctx, r)
}

// TestAttackStolenClaims: what a stolen validator's own records and
// statuses can claim, and what its revocation leaves it.
func TestAttackStolenClaims(t *testing.T) {
	r, ctx := newRigWith(t, stolenFares)
	honest := startDevice(t, ctx, r, "honest-2", fast...)
	a := provisionAttacker(t, ctx, r, "stolen-2")
	c, _, err := a.dial("", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	newRider := func() *APIRider {
		rd, err := r.NewAPIRider(ctx, "adult", 10_000)
		if err != nil {
			t.Fatal(err)
		}
		return rd
	}
	report := func(what string, rd *APIRider) Account {
		acct, err := r.Account(ctx, rd.ID)
		if err != nil {
			t.Fatal(err)
		}
		rides, _ := r.Rides(ctx, rd.ID)
		t.Logf("%s: balance %d, deny %v, rides %+v", what, acct.Balance, denyEntries(t, ctx, r, rd.ID), rides)
		return acct
	}
	seal := func(b *wire.Batch) []byte {
		p, _ := b.MarshalBinary()
		msg, _ := wire.Seal(wire.TypeBatch, p, false, a.key)
		return msg
	}

	// Altered claims: fare 1, fare version 99, USD (a profile other than
	// the code's makes the record malformed: quarantined, not charged).
	riderC := newRider()
	now := time.Now()
	textC := riderC.Code(now)
	code, _ := paycode.ParseText(textC)
	rec := record.Tap{DeviceID: a.id, Epoch: "e1", Seq: 1, Time: now.Truncate(time.Millisecond), Route: "42", Vehicle: "bus-stolen-2",
		Scanner: "front", Code: code.Bytes(), Account: code.Account, Serial: code.Serial, Profile: code.Profile, Fare: 1,
		Currency: "USD", FareVersion: 99, KeyringVersion: 1}
	data, _ := rec.MarshalBinary()
	b := &wire.Batch{DeviceID: a.id, Epoch: "e1", SentAt: time.Now(), Records: []wire.Record{{Seq: 1, Data: data}}}
	settleAttack(t, a, c, b)
	// The same batch three more times, and under a new epoch.
	for range 3 {
		a.send(t, c, b)
	}
	rec.Epoch = "e2"
	data2, _ := rec.MarshalBinary()
	settleAttack(t, a, c, &wire.Batch{DeviceID: a.id, Epoch: "e2", SentAt: time.Now(), Records: []wire.Record{{Seq: 1, Data: data2}}})
	if acct := report("altered claims, resent, new epoch", riderC); acct.Balance != 10_000-250 || len(denyEntries(t, ctx, r, riderC.ID)) > 0 {
		t.Errorf("altered, resent and re-epoched record: balance %d, deny %v; want one fare, no deny", acct.Balance, denyEntries(t, ctx, r, riderC.ID))
	}

	// Two records under one seq in one batch, another rider's codes.
	riderD := newRider()
	d1, d2 := riderD.Code(time.Now()), riderD.Code(time.Now())
	settleAttack(t, a, c, &wire.Batch{DeviceID: a.id, Epoch: "e1", SentAt: time.Now(),
		Records: []wire.Record{a.stolenTap(t, "e1", 5, time.Now(), "42", "", d1), a.stolenTap(t, "e1", 5, time.Now(), "42", "", d2)}})
	report("two records one seq", riderD)

	// Another device's id: in the batch, and in a record.
	riderE := newRider()
	e1 := riderE.Code(time.Now())
	fb := wire.Batch{DeviceID: "honest-2", Epoch: "e1", SentAt: time.Now(), Records: []wire.Record{a.stolenTap(t, "e1", 7, time.Now(), "42", "", e1)}}
	if tok := c.Publish("farego/dev/"+a.id+"/taps", 1, false, seal(&fb)); !tok.WaitTimeout(5 * time.Second) {
		t.Log("publish of the other device's batch: no answer")
	}
	code, _ = paycode.ParseText(e1)
	other := record.Tap{DeviceID: "honest-2", Epoch: "e1", Seq: 8, Time: time.Now().Truncate(time.Millisecond), Route: "42",
		Scanner: "front", Code: code.Bytes(), Account: code.Account, Serial: code.Serial, Profile: code.Profile, Fare: 250,
		Currency: "EUR", FareVersion: 1, KeyringVersion: 1}
	od, _ := other.MarshalBinary()
	settleAttack(t, a, c, &wire.Batch{DeviceID: a.id, Epoch: "e1", SentAt: time.Now(), Records: []wire.Record{{Seq: 8, Data: od}}})
	if acct := report("another device's id", riderE); acct.Balance != 10_000 {
		t.Errorf("a record naming another device charged %d", 10_000-acct.Balance)
	}

	// Status lies: clock +9 min, versions far ahead, queue huge.
	off := int64(9 * time.Minute / time.Millisecond)
	st := wire.Status{DeviceID: a.id, Online: true, Time: time.Now(), Epoch: "e9", QueueDepth: 1 << 30, ClockOffsetMS: &off,
		Versions: map[string]uint64{"fares": 1 << 60, "keyring": 1 << 60, "denylist": 1 << 60}}
	sp, _ := st.MarshalBinary()
	sm, _ := wire.Seal(wire.TypeStatus, sp, false, a.key)
	if tok := c.Publish("farego/dev/"+a.id+"/status", 1, true, sm); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Logf("status publish: %v", tok.Error())
	}
	time.Sleep(time.Second)
	devs, _ := r.Devices(ctx)
	t.Logf("devices after the status lie: %+v", devs)

	// Revoked: a tap of a code read before, dated before the revocation.
	riderF := newRider()
	f1 := riderF.Code(time.Now())
	fRec := a.stolenTap(t, "e1", 20, time.Now(), "42", "", f1)
	if err := r.API(ctx, "POST", "/v1/devices/"+a.id+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	tok := c.Publish("farego/dev/"+a.id+"/taps", 1, false, seal(&wire.Batch{DeviceID: a.id, Epoch: "e1", SentAt: time.Now(), Records: []wire.Record{fRec}}))
	tok.WaitTimeout(5 * time.Second)
	t.Logf("publish right after the revocation: %v", tok.Error())
	if c2, _, err := a.dial("", true); err == nil {
		t.Errorf("a revoked device logged in")
		c2.Disconnect(0)
	} else {
		t.Logf("login after the revocation: %v", err)
	}
	time.Sleep(2 * time.Second)
	if acct := report("revoked", riderF); acct.Balance != 10_000 {
		t.Errorf("a revoked device's tap charged %d", 10_000-acct.Balance)
	}
	victimSettles(t, ctx, r, honest)
	verifyClean(t, ctx, r)
}

// TestAttackStolenStatusFlood: a stolen validator sends signed statuses as
// fast as its broker budget lets it, its clock offset swinging ±9 min
// (each swing a history entry), its versions and queue made up. Each is a
// ledger write; the history stays bounded, an honest device's tap
// settles, no money moves.
func TestAttackStolenStatusFlood(t *testing.T) {
	r, ctx, honest, a, c := stolenRig(t, "3")
	var sent, failed int
	start := time.Now()
	for i := 0; time.Since(start) < 10*time.Second; i++ {
		off := int64(9 * time.Minute / time.Millisecond)
		if i%2 == 1 {
			off = -off
		}
		st := wire.Status{DeviceID: a.id, Online: true, Time: time.Now(), Epoch: fmt.Sprintf("epoch-%d", i), QueueDepth: i,
			ClockOffsetMS: &off, Versions: map[string]uint64{"fares": uint64(i), "keyring": 1 << 60}}
		p, _ := st.MarshalBinary()
		m, _ := wire.Seal(wire.TypeStatus, p, false, a.key)
		tok := c.Publish("farego/dev/"+a.id+"/status", 1, false, m)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			failed++
			if !c.IsConnected() {
				break
			}
			continue
		}
		sent++
	}
	took := victimSettles(t, ctx, r, honest)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(r.DataDir(), "ledger.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var hist int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_status_history WHERE device_id = ?`, a.id).Scan(&hist); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d statuses sent in %v (%d failed, connected %v); history entries %d; honest tap settled in %v", sent, time.Since(start).Round(time.Millisecond),
		failed, c.IsConnected(), hist, took)
	if hist > 60 {
		t.Errorf("%d history entries kept for one device", hist)
	}
	verifyClean(t, ctx, r)
}

// TestAttackStolenDuplicateResend: a stolen validator sends one batch of
// 800 valid taps (its thief's own codes) and then the same batch again
// and again. A resent tap is a duplicate, not charged and not counted
// against the device's aside budget: each resend costs the server the
// code checks and a ledger transaction, bounded by the broker's budget
// alone. Measured here: the server's CPU over the resends, and an honest
// device's tap meanwhile.
func TestAttackStolenDuplicateResend(t *testing.T) {
	const n = 800
	r, ctx, honest, a, c := stolenRig(t, "4")
	thief, err := r.NewAPIRider(ctx, "adult", 5000)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Millisecond)
	b := &wire.Batch{DeviceID: a.id, Epoch: "dup", SentAt: time.Now()}
	for i := range n {
		when := t0.Add(time.Duration(i) * 50 * time.Millisecond)
		b.Records = append(b.Records, a.stolenTap(t, "dup", uint64(i+1), when, "42", "bus-"+a.id, thief.Code(when)))
	}
	p, _ := b.MarshalBinary()
	msg, _ := wire.Seal(wire.TypeBatch, p, false, a.key)
	t.Logf("batch of %d records: %d bytes", n, len(msg))
	settleAttack(t, a, c, b)
	cpu0, _ := r.ServerCPU()
	start := time.Now()
	var sent int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for time.Since(start) < 15*time.Second && c.IsConnected() {
			tok := c.Publish("farego/dev/"+a.id+"/taps", 1, false, msg)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				sent++
			}
		}
	}()
	time.Sleep(5 * time.Second)
	took := victimSettles(t, ctx, r, honest)
	<-done
	elapsed := time.Since(start)
	time.Sleep(2 * time.Second)
	cpu1, _ := r.ServerCPU()
	rides, _ := r.Rides(ctx, thief.ID)
	var charged int64
	for _, rd := range rides {
		charged += rd.Charge
	}
	t.Logf("%d resends (%d records) in %v, connected %v: server CPU %v; honest tap settled in %v; thief: %d rides, charged %d",
		sent, sent*n, elapsed.Round(time.Millisecond), c.IsConnected(), cpu1-cpu0, took, len(rides), charged)
	if len(rides) != n || charged != 250 {
		t.Errorf("thief: %d rides charged %d; want %d, one fare", len(rides), charged, n)
	}
	verifyClean(t, ctx, r)
}
