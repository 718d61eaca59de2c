package ledger

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/record"
)

var reasonRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// Field limits.
const (
	maxName      = 64  // epoch, route, vehicle, code hash, merchant id, software
	maxLongName  = 128 // account name, order id, top-up reference
	maxSecret    = 256 // account secret hash
	maxTimestamp = math.MaxUint32
)

// ValidCurrency reports whether s is an ISO 4217 code's form (three
// capital letters), the rule for a ledger's and an account's currency:
// a fare table's (fare.ValidCurrency), which must be the ledger's.
func ValidCurrency(s string) bool { return fare.ValidCurrency(s) }

// validDeviceID checks a device id the ledger is given: the one rule of
// the agent, the link, the broker's ACL and registration
// (record.ValidDeviceID; the ledger once let an id start with '_', '.' or
// '-', which no device could ever connect as). Rows already stored are
// not checked again.
func validDeviceID(id string) error {
	if record.ValidDeviceID(id) != nil {
		return fmt.Errorf("device id %q must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	return nil
}

// checkText checks a free-text field the ledger is given new (a name, a
// reference, an id): record.CheckText (at most max bytes of UTF-8 without
// control characters), no hidden characters (record.Hidden: they would
// let one name read as another on the console), and (if required) not
// empty. Text a tap record carries is held to record.CheckString instead
// (see Tap.validate).
func checkText(field, s string, max int, required bool) error {
	if required && s == "" {
		return fmt.Errorf("%s is empty", field)
	}
	if err := record.CheckText(field, s, max); err != nil {
		return err
	}
	if strings.IndexFunc(s, record.Hidden) >= 0 {
		return fmt.Errorf("%s contains an invisible formatting character (a bidirectional control or a zero-width space)", field)
	}
	return nil
}

// CheckAccountName checks a rider's name for an account (optional): at
// most 128 bytes of UTF-8, no control or invisible formatting characters.
func CheckAccountName(name string) error {
	if name != "" && strings.TrimSpace(name) == "" {
		return fmt.Errorf("name is only spaces: leave it empty for none")
	}
	return checkText("name", name, maxLongName, false)
}

// CheckTokenName checks an API token's name (optional), as CreateToken
// does: at most 128 bytes of UTF-8, no control or invisible formatting
// characters.
func CheckTokenName(name string) error {
	return checkText("token name", name, maxLongName, false)
}

func checkAccountID(a uint64) error {
	if a == 0 || a > math.MaxInt64 {
		return fmt.Errorf("account id %d out of range", a)
	}
	return nil
}

func checkAmount(field string, v int64) error {
	if v <= 0 || v > MaxAmount {
		return fmt.Errorf("%s %d must be between 1 and %d", field, v, int64(MaxAmount))
	}
	return nil
}

// checkCodeKey checks a paycode.ID.Key: 18 bytes whose account and serial
// are the ones given.
func checkCodeKey(key []byte, account uint64, serial uint32) error {
	if len(key) != CodeKeySize {
		return fmt.Errorf("code key is %d bytes, want %d", len(key), CodeKeySize)
	}
	if binary.BigEndian.Uint64(key) != account || binary.BigEndian.Uint32(key[8:]) != serial {
		return fmt.Errorf("code key is for account %d serial %d, not %d serial %d",
			binary.BigEndian.Uint64(key), binary.BigEndian.Uint32(key[8:]), account, serial)
	}
	return nil
}

// Validate reports why CommitTaps would refuse t as invalid (nil if it
// would not): a caller that keeps the refused aside before committing
// spares the ledger the set refused whole and retried tap by tap.
func (t *Tap) Validate() error { return t.validate() }

func (t *Tap) validate() error {
	if err := validDeviceID(t.DeviceID); err != nil {
		return err
	}
	if t.Seq > math.MaxInt64 {
		return fmt.Errorf("seq %d out of range", t.Seq)
	}
	if err := checkText("epoch", t.Epoch, maxName, true); err != nil {
		return err
	}
	if strings.Contains(t.Epoch, "/") {
		return fmt.Errorf("epoch %q contains '/'", t.Epoch)
	}
	if want := TapID(t.DeviceID, t.Epoch, t.Seq); t.ID != want {
		return fmt.Errorf("tap id %q is not device/epoch/seq %q", t.ID, want)
	}
	if len(t.RiderKey) != ed25519.PublicKeySize {
		return fmt.Errorf("rider key is %d bytes, want %d", len(t.RiderKey), ed25519.PublicKeySize)
	}
	if t.Time.IsZero() || t.Time.Unix() < 0 || t.Time.Unix() > maxTimestamp {
		return fmt.Errorf("tap time %v out of range", t.Time)
	}
	if err := checkAccountID(t.Account); err != nil {
		return err
	}
	if err := checkCodeKey(t.CodeKey, t.Account, t.Serial); err != nil {
		return err
	}
	if !t.Profile.Valid() {
		return fmt.Errorf("rider profile %d is reserved", t.Profile)
	}
	if len(t.Notes) > 4 {
		return fmt.Errorf("%d notes, limit 4", len(t.Notes))
	}
	for _, n := range t.Notes {
		if err := checkText("note", n, maxName, true); err != nil || strings.Contains(n, ",") {
			return fmt.Errorf("note %q is not a note name", n)
		}
	}
	// BaseFare, Currency, FareVersion and ClaimedProfile are the
	// validator's claims: whatever they say is stored (within the columns'
	// range) and noted, never refused — a claim must not be a way out of
	// being charged.
	if t.FareVersion > math.MaxInt64 {
		return fmt.Errorf("fare version %d out of range", t.FareVersion)
	}
	for _, f := range []struct{ name, v string }{
		{"code hash", t.CodeHash}, {"route", t.Route}, {"vehicle", t.Vehicle}, {"currency", t.Currency},
	} {
		// The record's own rule, not checkText: a validator of the
		// release before wrote what its assignment held, which could hold
		// bidirectional marks (a Hebrew or Arabic route name) or C1
		// controls, and a tap the ledger refuses is quarantined, never
		// charged.
		if err := record.CheckString(f.name, f.v, maxName); err != nil {
			return err
		}
	}
	if len(t.Record) > MaxRecordSize {
		return fmt.Errorf("record is %d bytes, limit %d", len(t.Record), MaxRecordSize)
	}
	if t.Flag != "" && t.Flag != FlagInvalidCode {
		return fmt.Errorf("flag %q: a caller may only set %q", t.Flag, FlagInvalidCode)
	}
	return nil
}

func (r *PaymentRequest) validate() error {
	if err := checkText("merchant id", r.MerchantID, maxName, true); err != nil {
		return err
	}
	if err := checkText("order id", r.OrderID, maxLongName, true); err != nil {
		return err
	}
	if err := checkAccountID(r.Account); err != nil {
		return err
	}
	if err := checkCodeKey(r.CodeKey, r.Account, r.Serial); err != nil {
		return err
	}
	if err := checkText("code hash", r.CodeHash, maxName, false); err != nil {
		return err
	}
	if err := checkAmount("amount", r.Amount); err != nil {
		return err
	}
	if !ValidCurrency(r.Currency) {
		return fmt.Errorf("currency %q is not an ISO 4217 code", r.Currency)
	}
	return checkText("token id", r.TokenID, maxName, false)
}

// unstorable reports whether any of ss is text no stored row can hold: not
// UTF-8, or with a NUL (every id, name and reference is checked with
// checkText before it is stored). A lookup by such a key finds nothing;
// PostgreSQL refuses it with an error (SQLSTATE 22021), which a lookup
// must not pass on as a server fault: a shop's GET /v1/payments/shop/%00
// answered 500 and logged an error at every request (an attack review).
func unstorable(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}
