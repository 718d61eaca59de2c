package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
)

// TestRestoreKeepsLostCredentials: a ledger restored from a backup lost
// the credentials issued since; riders' phones hold them and validators
// accept their codes. Taps of such a credential replayed (or new) after
// `restored` are charged, the credential taken in from the tap (its
// issuer signature was checked by the ingest); a credential issued before
// the backup's newest, or after the restore, that the ledger does not
// know stays unknown_credential. New credentials get serials past the
// lost ones. They used to be charged nothing, and serial 2 was issued a
// second time with another rider key.
func TestRestoreKeepsLostCredentials(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		issue(t, s, acct) // in the backup
		a, err := s.Account(ctx, acct)
		if err != nil {
			t.Fatal(err)
		}
		next := a.LastSerial + 1

		// Since the backup (lost): the next serial, issued after the last.
		lostPub, _, _ := ed25519.GenerateKey(nil)
		issuedAt := time.Now().Truncate(time.Second)
		lost := func(seq uint64, minutes int, issued time.Time, serial uint32) Tap {
			tp := mkTap("bus-1", seq, acct, at(minutes), "")
			tp.Serial, tp.RiderKey, tp.CodeKey = serial, lostPub, codeKey(acct, serial, at(minutes))
			tp.CredentialNotBefore, tp.CredentialNotAfter = issued.Add(-5*time.Minute), issued.Add(24*time.Hour)
			return tp
		}
		// Before `restored`, an unknown credential is what it always was.
		if r := commit(t, s, lost(1, 0, issuedAt, next)); r[0].Flag != FlagUnknownCredential {
			t.Fatalf("before restored: %+v; want unknown_credential", r[0])
		}
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // the next credential is issued after the restore
		r := commit(t, s, lost(2, 90, issuedAt, next))
		if r[0].Flag != "" || r[0].Charge != 250 {
			t.Errorf("a tap of the lost credential after restored: %+v; want charged 250", r[0])
		}
		if b := balance(t, s, acct); b != 750 {
			t.Errorf("balance %d; want 750", b)
		}
		// Reopened (another instance, a restart): the window is kept.
		s2 := db.open(t, nil)
		if r := commit(t, s2, lost(3, 180, issuedAt, next)); r[0].Flag != "" || r[0].Charge != 250 {
			t.Errorf("after a reopen: %+v; want charged", r[0])
		}
		// Not taken in: issued before the backup's newest credential, or
		// after the restore.
		for name, issued := range map[string]time.Time{"before the backup": issuedAt.Add(-time.Hour), "after the restore": time.Now().Add(time.Hour)} {
			if r := commit(t, s2, lost(uint64(10+len(name)), 300, issued, next+5)); r[0].Flag != FlagUnknownCredential {
				t.Errorf("a credential issued %s: %+v; want unknown_credential", name, r[0])
			}
		}
		// A new credential's serial is past the lost ones.
		serial, err := s2.IssueCredentialSerial(ctx, acct, time.Now().Add(24*time.Hour), riderKey(acct))
		if err != nil || serial <= a.LastSerial+RestoreSerialMargin {
			t.Errorf("the next serial after the restore: %d, %v; want past %d", serial, err, a.LastSerial+RestoreSerialMargin)
		}
	})
}

// TestRestoreAdoptRace: after a restore, a replay brings one lost pass's
// taps to two instances at once: both commit, the pass is taken in once
// and both taps are charged. On PostgreSQL the second instance's insert
// of the pass failed on the key the first had just committed (its read of
// the credentials came before its wait on the account's lock): its whole
// batch was refused, 20 rounds of 20.
func TestRestoreAdoptRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		var accts []uint64
		for range 10 {
			acct := newAccount(t, s, 100000)
			issue(t, s, acct)
			accts = append(accts, acct)
		}
		issuedAt := time.Now().Truncate(time.Second)
		time.Sleep(1100 * time.Millisecond)
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		s2 := db.open(t, nil)
		for round, acct := range accts {
			a, err := s.Account(ctx, acct)
			if err != nil {
				t.Fatal(err)
			}
			serial := a.LastSerial - RestoreSerialMargin + 1
			pub, _, _ := ed25519.GenerateKey(nil)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, st := range []*Store{s, s2} {
				wg.Go(func() {
					tp := mkTap([]string{"bus-a", "bus-b"}[i], uint64(round+1), acct, at(1+10*i), "")
					tp.Serial, tp.RiderKey, tp.CodeKey = serial, pub, codeKey(acct, serial, at(1+10*i))
					tp.CredentialNotBefore, tp.CredentialNotAfter = issuedAt.Add(-5*time.Minute), issuedAt.Add(24*time.Hour)
					_, errs[i] = st.CommitTaps(ctx, []Tap{tp})
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			}
			if b := balance(t, s, acct); b != 100000-250 {
				t.Errorf("round %d: balance %d; want one fare (the second ride is a free transfer)", round, b)
			}
		}
	})
}

// TestVerifyLastSerialAfterRestore: after a restore, an account's last
// serial has no credential (Restored moved it past the lost ones) until
// the account's next credential; verify excused that for every account for
// good, so a last serial edited after the restore went unseen. Now only
// accounts the restore moved, with no credential since, are excused.
func TestVerifyLastSerialAfterRestore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		moved, renewed := newAccount(t, s, 1000), newAccount(t, s, 1000)
		issue(t, s, moved)
		issue(t, s, renewed)
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		issue(t, s, renewed)
		made := newAccount(t, s, 1000)
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatalf("after the restore: %v", err)
		}
		for _, acct := range []uint64{renewed, made} {
			if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET last_serial = last_serial + 7 WHERE id = $1`, int64(acct)); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckInvariants(ctx); err == nil || !strings.Contains(err.Error(), "last serial without its credential") {
				t.Errorf("account %d's last serial edited after the restore: %v; want it reported", acct, err)
			}
			if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET last_serial = last_serial - 7 WHERE id = $1`, int64(acct)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A device's assignments made since the backup are lost with it, but the
// validator applied them and refuses a version not above its own: after
// `restored` the next assignment is numbered past any the lost history
// made (it was the restored ledger's last + 1, refused as stale, and the
// bus kept its old route). The history kept is the newest
// MaxAssignmentHistory, counted across the jump.
func TestRestoreAssignmentVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		var applied uint64 // what the validator holds
		for _, route := range []string{"42", "7", "X1"} {
			a, err := s.AssignDevice(ctx, "bus-7", route, "BUS-7", "op")
			if err != nil {
				t.Fatal(err)
			}
			applied = a.Version
		}
		// The backup held the first only.
		if _, err := s.db.ExecContext(ctx, `DELETE FROM device_assignments WHERE version > 1`); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		a, err := s.AssignDevice(ctx, "bus-7", "42", "BUS-7", "op")
		if err != nil {
			t.Fatal(err)
		}
		if a.Version <= applied {
			t.Fatalf("after the restore: assignment version %d, which the validator (at %d) refuses as stale", a.Version, applied)
		}
		for range MaxAssignmentHistory + 5 {
			if _, err := s.AssignDevice(ctx, "bus-7", "7", "BUS-7", "op"); err != nil {
				t.Fatal(err)
			}
		}
		var n, lo int64
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(version) FROM device_assignments WHERE device_id = 'bus-7'`).Scan(&n, &lo); err != nil {
			t.Fatal(err)
		}
		if n != MaxAssignmentHistory || uint64(lo) <= a.Version {
			t.Errorf("history after %d more assignments: %d kept from version %d; want the newest %d", MaxAssignmentHistory+5, n, lo, MaxAssignmentHistory)
		}
	})
}

// tableV3 is a fare table published after the backup of
// TestRestoreLostFareTables: the adult fare is 300.
const tableV3 = `{"version":3,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00",
	"fares":{"*":{"adult":300,"child":120,"senior":120,"student":180},"X1":{"adult":400}},
	"transfer":{"window":"60m","fare":0},"daily_cap":{"adult":900,"child":350,"senior":350,"student":500}}`

// TestRestoreLostFareTables: a fare table published after the backup is in
// no restored ledger, yet validators applied it, charge by it and name it
// in their taps. Given to Restored, it is stored again, and a tap naming
// it is rated by it from when the table before it came into force (or the
// restored ledger's newest credential, if later) — before, such taps were
// rated by the older table the ledger held (noted unknown_fare_version),
// and published again it was in force only from its new upload time. A tap
// naming the older table keeps it until the restore; a table refused
// changes nothing, not even the id counters; the same tables again are a
// no-op.
func TestRestoreLostFareTables(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db) // v1, in force since tablesSince
		clock := day0.Add(-time.Hour)
		s.now = func() time.Time { return clock }
		a1, a2, a3 := newAccount(t, s, 5000), newAccount(t, s, 5000), newAccount(t, s, 5000) // credentials issued at day0 − 1 h
		v3 := mustTable(t, tableV3)

		// The restore, three days after day0 (more than the fare grace); v3
		// had been published in between and is lost.
		clock = day0.Add(72 * time.Hour)
		next := func() uint64 {
			a, err := s.CreateAccount(ctx, AccountSpec{Name: "probe", SecretHash: []byte("hash")})
			if err != nil {
				t.Fatal(err)
			}
			return a.ID
		}
		before := next()
		// Refused, changing nothing: a table without its zone, a table of a
		// version the ledger holds with other contents, one below the
		// latest, the same version twice.
		noZone := mustTable(t, strings.Replace(tableV3, `"timezone":"Europe/Berlin",`, "", 1))
		otherV1 := mustTable(t, strings.Replace(tableV1, `"adult":250`, `"adult":260`, 1))
		putTableAt(t, s, tableV2, day0.Add(-48*time.Hour)) // in the backup
		below := mustTable(t, strings.Replace(tableV3, `"version":3`, `"version":2`, 1))
		for name, tables := range map[string][]*fare.Table{"no zone": {noZone}, "v1 with other contents": {otherV1},
			"below the latest": {below, v3}, "twice": {v3, v3}} {
			if _, _, err := s.Restored(ctx, 0, "test", tables...); err == nil {
				t.Errorf("%s: Restored took it", name)
			}
		}
		if got := next(); got != before+1 {
			t.Fatalf("a refused restore moved the account ids: %d after %d", got, before)
		}
		// Taken, with v1 (in the backup, the same contents: skipped).
		if _, _, err := s.Restored(ctx, 0, "test", v3, mustTable(t, tableV1)); err != nil {
			t.Fatal(err)
		}
		claim := func(seq uint64, acct uint64, when time.Time, version uint64) TapResult {
			tp := mkTap("bus-1", seq, acct, when, "")
			tp.FareVersion, tp.BaseFare = version, map[uint64]int64{1: 250, 2: 250, 3: 300}[version]
			return commit(t, s, tp)[0]
		}
		// A tap of the restore window naming v3 is rated by v3.
		if r := claim(1, a1, day0.Add(30*time.Minute), 3); r.Charge != 300 || r.RatedVersion != 3 || slices.Contains(r.Notes, NoteUnknownFareVersion) {
			t.Errorf("a tap naming the lost table: %+v; want 300 by v3", r)
		}
		// One naming v2 there keeps v2 until the restore.
		if r := claim(2, a2, day0.Add(40*time.Minute), 2); r.Charge != 250 || r.RatedVersion != 2 || len(r.Notes) != 0 {
			t.Errorf("a tap naming the table before: %+v; want 250 by v2", r)
		}
		// Named before the backup's newest credential (and the fare grace
		// before it), v3 is not believed: the tap is rated by the table in
		// force then.
		if r := claim(3, a3, day0.Add(-30*time.Hour), 3); r.RatedVersion != 2 || !slices.Contains(r.Notes, NoteUnknownFareVersion) {
			t.Errorf("a tap naming v3 before the backup: %+v; want rated by v2, noted", r)
		}
		// Long after the restore, v3 is in force: a tap naming v2 is rated
		// by v3.
		if r := claim(4, a2, day0.Add(72*time.Hour+30*time.Hour), 2); r.RatedVersion != 3 || r.Charge != 300 {
			t.Errorf("a tap naming v2 a day after the restore: %+v; want 300 by v3", r)
		}
		// Another instance reads the same.
		s2 := db.open(t, nil)
		if r := commit(t, s2, func() Tap {
			tp := mkTap("bus-2", 1, a3, day0.Add(5*time.Hour), "")
			tp.FareVersion, tp.BaseFare = 3, 300
			return tp
		}())[0]; r.RatedVersion != 3 || r.Charge != 300 {
			t.Errorf("another instance: %+v; want 300 by v3", r)
		}
		// The same again changes no table; v3 with other contents is refused.
		if _, _, err := s.Restored(ctx, 0, "test", v3); err != nil {
			t.Errorf("the same lost table again: %v", err)
		}
		if _, _, err := s.Restored(ctx, 0, "test", mustTable(t, strings.Replace(tableV3, `"adult":300`, `"adult":310`, 1))); !errors.Is(err, ErrFareVersion) {
			t.Errorf("v3 again with other contents: %v; want ErrFareVersion", err)
		}
	})
}

// TestRestoreLostFareTablesLater: restored run a second time, with the
// fare tables forgotten the first time, after the server has served and
// issued passes: the restore window keeps its start, so the lost table is
// still believed over the lost hours (it was computed again from the
// newest pass, issued after the restore, and the lost hours' taps naming it
// were rated by the older table). A lost table whose version is below one
// the backup holds is refused, and the fare version stays.
func TestRestoreLostFareTablesLater(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		putTableAt(t, s, tableV2, day0.Add(-48*time.Hour)) // in the backup
		clock := day0.Add(-time.Hour)
		s.now = func() time.Time { return clock }
		acct := newAccount(t, s, 5000)
		clock = day0.Add(72 * time.Hour)
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil { // --fares forgotten
			t.Fatal(err)
		}
		clock = day0.Add(73 * time.Hour)
		newAccount(t, s, 5000) // the server serves: a pass issued after the restore
		clock = day0.Add(74 * time.Hour)
		if _, _, err := s.Restored(ctx, 0, "test", mustTable(t, tableV3)); err != nil {
			t.Fatal(err)
		}
		tp := mkTap("bus-1", 1, acct, day0.Add(30*time.Minute), "")
		tp.FareVersion, tp.BaseFare = 3, 300
		if r := commit(t, s, tp)[0]; r.RatedVersion != 3 || r.Charge != 300 {
			t.Errorf("a tap of the lost hours naming the table given back later: %+v; want 300 by v3", r)
		}

		// Another ledger, whose backup holds v1 and v5: a v3 given as
		// lost cannot be (it would move the fare version back): refused,
		// nothing stored.
		s2 := ledgerWithTable(t, newDB(t, db.backend))
		putTableAt(t, s2, strings.Replace(tableV3, `"version":3`, `"version":5`, 1), day0.Add(-48*time.Hour))
		if _, _, err := s2.Restored(ctx, 0, "test", mustTable(t, tableV3)); !errors.Is(err, ErrFareVersion) || !strings.Contains(err.Error(), "not above") {
			t.Errorf("a lost table below the latest held: %v; want ErrFareVersion, not above the latest", err)
		}
		if tbl, err := s2.FareTable(ctx, 3); !errors.Is(err, ErrNotFound) {
			t.Errorf("the refused table is stored: %v, %v", tbl, err)
		}
	})
}

// TestFareVersionTheFleetHolds: after a restore whose lost fare table was
// not given to Restored, the validators hold version 2 (the lost table)
// and the ledger's latest is 1. A new table published as version 2 (or
// below what the fleet holds) was stored and published, and every
// validator took it for the version it already applied ("already applied":
// same version) or an older one, and kept the lost table: the fleet went
// on showing riders the lost fares, its status said version 2 like the
// ledger's, and the server rated their taps by the new table (no
// unknown_fare_version to tell). It is refused, naming the device and
// what to do; the lost table through Restored, or a version above the
// fleet's, is taken. A revoked device's report holds nothing back.
func TestFareVersionTheFleetHolds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db) // the backup: v1
		for i, id := range []string{"bus-1", "bus-2"} {
			k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32)).Public().(ed25519.PublicKey)
			if err := s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: k, MQTTHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil { // --fares forgotten
			t.Fatal(err)
		}
		// The validators report the lost table (v2) applied.
		for _, id := range []string{"bus-1", "bus-2"} {
			if err := s.UpdateDeviceStatus(ctx, id, DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
				Versions: map[string]uint64{"fares": 2, "keyring": 1}}); err != nil {
				t.Fatal(err)
			}
		}
		// Another table under the fleet's version: refused.
		other := mustTable(t, strings.Replace(tableV3, `"version":3`, `"version":2`, 1))
		err := s.PutFareTable(ctx, other)
		if !errors.Is(err, ErrFareVersion) || !strings.Contains(err.Error(), "bus-") {
			t.Fatalf("fare table version 2 while the fleet holds a version 2 the ledger does not: %v; want ErrFareVersion naming the device", err)
		}
		if v, _, _ := s.LatestFareTableShared(ctx); v != 1 {
			t.Errorf("after the refusal: latest fare version %d, want 1", v)
		}
		// The lost table given back to Restored is taken; then a version
		// above the fleet's is published as usual.
		if _, _, err := s.Restored(ctx, 0, "test", mustTable(t, tableV2)); err != nil {
			t.Fatal(err)
		}
		if err := s.PutFareTable(ctx, mustTable(t, tableV3)); err != nil {
			t.Errorf("version 3, above what the fleet holds: %v", err)
		}
		// A revoked device reporting a high version holds nothing back.
		if err := s.UpdateDeviceStatus(ctx, "bus-2", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"fares": 9}}); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, "bus-2"); err != nil {
			t.Fatal(err)
		}
		if err := s.PutFareTable(ctx, mustTable(t, strings.Replace(tableV3, `"version":3`, `"version":4`, 1))); err != nil {
			t.Errorf("version 4 with only a revoked device reporting 9: %v", err)
		}
	})
}

// The README's restore procedure has the operator deny again the entries
// made since the backup: a lost phone's pass issued since is in no
// credential of the restored ledger (until a tap brings it), yet was
// handed out, and the phone pays with it. Deny refused it as a credential
// the account was never issued (not_found), and the lost phone kept paying.
func TestDenyAPassIssuedSinceTheBackup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000) // credential 1; 2 is issued after the backup
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		if err := s.Deny(ctx, acct, 2, "lost_phone"); err != nil {
			t.Fatalf("deny the pass issued since the backup: %v", err)
		}
		wantErr(t, s.Deny(ctx, acct, 1+RestoreSerialMargin+1, "lost_phone"), ErrNotFound)
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDenyVersionAboveTheFleets: validators refuse a deny list (or shard)
// whose version is not above the one they applied. The version is the
// time in milliseconds, and Restored moves it to now — but the fleet holds
// the lists published since the backup, and if the server that published
// them ran its clock an hour ahead (or the restored server's runs behind),
// their versions are above the restored ledger's now: every deny entry
// made after the restore (a balance below zero, a reused code, a replaced
// secret's passes) was refused by every validator until the clock caught
// up. A device's reported deny-list version lifts the ledger's, so that
// the next change is above it; one far ahead of the clock (a false
// report: revoke the device) is not followed.
func TestDenyVersionAboveTheFleets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db) // the backup
		for i, id := range []string{"bus-1", "bus-2"} {
			k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32)).Public().(ed25519.PublicKey)
			if err := s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: k, MQTTHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		a := newAccount(t, s, 1000)
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		restored, err := s.DenyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// bus-1 applied a list published an hour ahead of this clock.
		fleet := restored + uint64(time.Hour/time.Millisecond)
		if err := s.UpdateDeviceStatus(ctx, "bus-1", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"denylist": fleet, "keyring": 1}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Deny(ctx, a, 0, "operator"); err != nil {
			t.Fatal(err)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v <= fleet {
			t.Fatalf("deny-list version after a change: %d, %v; the fleet holds %d and refuses it", v, err, fleet)
		}
		// A report far ahead of the clock is not followed.
		before, _ := s.DenyVersion(ctx)
		if err := s.UpdateDeviceStatus(ctx, "bus-2", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"denylist": before + uint64(30*24*time.Hour/time.Millisecond)}}); err != nil {
			t.Fatal(err)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v != before {
			t.Errorf("deny-list version after a report 30 days ahead: %d, %v; want %d unchanged", v, err, before)
		}
		// The fleet at the ledger's version, or behind it, moves nothing.
		if err := s.UpdateDeviceStatus(ctx, "bus-1", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"denylist": before}}); err != nil {
			t.Fatal(err)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v != before {
			t.Errorf("deny-list version after the fleet reported it: %d, %v; want %d unchanged", v, err, before)
		}
	})
}

// TestFleetDenyReportMovesNoVersion: a deny-list version a device reports
// above the ledger's must not become the ledger's deny-list version by
// itself: no list is published at it (the publisher sends only shards
// whose content changed, and the shard index with them), so every other
// device stayed below it — the console named each one "deny list behind",
// FaregoDenyListNotDelivered fired for the whole fleet ("it still
// accepts codes of denied accounts") — and each instance read the whole
// deny list again. A stolen validator moved it at every status, a
// millisecond at a time, up to a day ahead. The report only sets the
// floor of the next change's version.
func TestFleetDenyReportMovesNoVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "stolen", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		a := newAccount(t, s, 1000)
		if err := s.Deny(ctx, a, 0, "fraud"); err != nil {
			t.Fatal(err)
		}
		before, err := s.DenyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var reported uint64
		for i := range uint64(3) {
			reported = before + uint64(time.Hour/time.Millisecond) + i
			if err := s.UpdateDeviceStatus(ctx, "stolen", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
				Versions: map[string]uint64{"denylist": reported}}); err != nil {
				t.Fatal(err)
			}
			if v, err := s.DenyVersion(ctx); err != nil || v != before {
				t.Fatalf("deny-list version after a device reported %d: %d, %v; want %d (no list is published at it)",
					reported, v, err, before)
			}
		}
		// The next change goes above what the fleet reported.
		if err := s.Deny(ctx, a, 0, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v <= reported {
			t.Fatalf("deny-list version after a change: %d, %v; want above the reported %d", v, err, reported)
		}
	})
}

// A status the ingest took before a device's revocation and records after
// it changes nothing: it set the revoked device online again and could
// lift the deny-list version.
func TestRevokedDeviceStatusTakenForNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, "bus-7"); err != nil {
			t.Fatal(err)
		}
		before, err := s.DenyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"denylist": before + uint64(time.Hour/time.Millisecond)}}); err != nil {
			t.Fatal(err)
		}
		d, err := s.Device(ctx, "bus-7")
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.Online || d.Status.Epoch != "" {
			t.Errorf("revoked device after a status: online %v, epoch %q; want the status not recorded", d.Status.Online, d.Status.Epoch)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v != before {
			t.Errorf("deny-list version after a revoked device's status: %d, %v; want %d unchanged", v, err, before)
		}
	})
}
