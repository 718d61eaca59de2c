package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"strings"
	"sync"
	"testing"
	"time"
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
