// Package recordtest makes realistic tap records for tests: a real code
// from a real issuer (paycodetest), signed, with every field filled in.
package recordtest

import (
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
)

// Now is the time of Tap's code (it verifies at Now with paycodetest's
// keyring).
var Now = time.Unix(1767229250, 0)

// Tap returns a tap record of device "bus-17-front", sequence number seq,
// holding a real code of account 4242 made at Now.
func Tap(tb testing.TB, seq uint64) *record.Tap {
	tb.Helper()
	is := paycodetest.NewIssuer(tb, 7, Now)
	r := is.Rider(tb, 4242, Now)
	c, err := paycode.ParseText(r.Code(tb, Now))
	if err != nil {
		tb.Fatal(err)
	}
	return &record.Tap{
		DeviceID: "bus-17-front", Epoch: "0123456789abcdef0123456789abcdef", Seq: seq,
		Time: Now.Add(123 * time.Millisecond).UTC(), Route: "42", Vehicle: "bus-17", Scanner: "front",
		Code: c.Bytes(), Account: c.Account, Serial: c.Serial, Profile: c.Profile,
		Fare: 250, Currency: "EUR", FareVersion: 3, KeyringVersion: 2, Software: "v1.2.3",
		PrevHash: record.Hash([]byte("previous")),
	}
}
