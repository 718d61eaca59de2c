package console

import (
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
)

// reasonAdvice is a count of records with one reason, what it means and
// what the operator can do about it.
type reasonAdvice struct {
	Reason  string
	Kind    string // "quarantine" or "held" on the money page's list
	Count   int64
	Latest  time.Time
	Means   string
	Do      string
	Charged string // what the records cost the riders
}

type advice struct{ means, do, charged string }

// flagAdvice explains each tap flag (ledger.Flag*).
var flagAdvice = map[string]advice{
	ledger.FlagDuplicateCode: {
		"The payment code had already paid (an earlier tap on any bus, or an online payment). An online payment keeps its code (also when this tap was made before it), and otherwise the earliest tap keeps it; this one was charged nothing. Unless the reuse looked innocent (once, on another bus, within the reuse window), the credential is on the deny list as code_reused, and the whole account as code_reused_account if it held other valid credentials.",
		"Open the account: if the rider is innocent (a screenshot taken by someone else, a shared phone), clear the credential's code_reused entry (and the account's code_reused_account entry) so they can get a new pass; if it is fraud, deny the whole account.",
		"nothing"},
	ledger.FlagInvalidCode: {
		"The validator sent a code that does not verify at its tap time (bad signature, expired, from the future): a tampered validator, or one whose clock is wrong.",
		"Open the device: check its clock offset and software. A validator with a bad clock needs its time source fixed; one that forges codes must be revoked.",
		"nothing"},
	ledger.FlagUnknownCredential: {
		"The code's credential (account, serial, rider key) is not one this ledger issued — typically after the ledger was restored from an older backup.",
		"If many appear after a restore, run the restore procedure (farego-settlement restored, then ask the fleet to replay). Otherwise a forged credential: check the device.",
		"nothing"},
	ledger.FlagUnknownAccount: {
		"The code names an account this ledger does not have (a ledger restored from an old backup).",
		"Run the restore procedure; the rider's new account will be charged from then on.",
		"nothing"},
	ledger.FlagCurrencyMismatch: {
		"The fare table's currency is not the account's.",
		"Publish a fare table in the accounts' currency (Fares). The code is used up; the tap is kept for audit.",
		"nothing"},
	ledger.FlagVoided: {
		"An operator voided the tap (POST /v1/taps/void): its fare was given back and its service day re-rated as if it had never been charged. The audit trail names who and why.",
		"Nothing; look at the audit trail if voids are many.",
		"nothing (given back)"},
}

// noteAdvice explains each tap note (ledger.Note*).
var noteAdvice = map[string]advice{
	ledger.NoteFareMismatch: {
		"The validator's claimed fare (or currency, or fare table) differs from what the server charged. The server's fare stands.",
		"Usually a validator with an older fare table: check its fares version on the fleet page (it takes the new table when it is online).",
		"the server's fare"},
	ledger.NoteUnknownFareVersion: {
		"The validator named a fare table version the server does not have, or one out of force for longer than the grace period; the tap was rated with the table in force at its time.",
		"Check the device's fares version; make sure every table the fleet uses was published here.",
		"the fare in force"},
	ledger.NoteProfileMismatch: {
		"The record's rider profile is not the credential's; the credential's profile was charged.",
		"A validator bug or tampering: check the device's software.",
		"the credential's profile"},
	ledger.NoteSameDeviceReuse: {
		"One validator recorded the same code more than once. A validator refuses a code it took, so this is the device's doing, not the rider's: charged nothing, credential not denied.",
		"Look at the device on the fleet page: stolen, tampered, or its queue file put back from a backup. Revoke it if it keeps doing this.",
		"nothing"},
	ledger.NoteCodeReuseWindow: {
		"The code was shown again on another bus within the reuse window, once: what a rider does on a quick transfer. Charged nothing, credential not denied.",
		"Nothing, unless one account shows many of these.",
		"nothing"},
	ledger.NoteRouteMismatch: {
		"The tap's route is not the one assigned its device (through the API or the console) at the tap's time: the vehicle runs another route than assigned, the device has not applied its assignment yet, or it claims a cheaper route.",
		"Open the device: check its assignment and the route its taps show; assign the route it really serves, or look into the device if it keeps claiming another.",
		"the fare of the tap's own route"},
}

// quarantineAdvice explains the quarantine reasons.
var quarantineAdvice = map[string]advice{
	ingest.RejectRevokedDevice: {
		"Batches that a revoked device sent: kept, never charged.",
		"If the device was revoked by mistake, replace (re-register) it and ask it to replay: its taps then settle normally.",
		"nothing"},
	"tap_id_conflict": {
		"A record whose tap id the ledger already holds with other contents: two validators running with one identity (an SD card cloned onto a spare bus, or a copied bundle: the log says \"another payment code\", the broker logs the two knocking each other off), a device that numbered its taps again (a queue file put back from an older backup while its clock was not set), or one that rewrote a record.",
		"Find a second device with this identity and provision it its own (farego-provision device --id); otherwise investigate the device (its queue file, its clock, its software). The stored tap stands, this record is not charged.",
		"nothing"},
}

// heldAdvice explains the hold reasons.
var heldAdvice = map[string]advice{
	string(paycode.ReasonUnknownIssuerKey): {
		"Taps whose code is signed by an issuer key the server's keyring lacks (after a keyring restored from an older backup): held uncharged, never lost.",
		"Restore the keyring that has the key; held taps are re-checked at once when the keyring changes, and every 30 s.",
		"nothing yet"},
}

var defaultQuarantine = advice{
	"Device records that are not taps at all (a validator bug or tampering): kept for investigation so the device's queue moves on.",
	"Open the device and check its software; the records are kept in the ledger's quarantine table.",
	"nothing"}

// advise attaches the advice to counts (def for reasons without any).
func advise(counts []ledger.ReasonCount, table map[string]advice, def advice) []reasonAdvice {
	out := make([]reasonAdvice, 0, len(counts))
	for _, c := range counts {
		a, ok := table[c.Reason]
		if !ok {
			a = def
		}
		out = append(out, reasonAdvice{Reason: c.Reason, Count: c.Count, Latest: c.Latest, Means: a.means, Do: a.do, Charged: a.charged})
	}
	return out
}

// unknownAdvice is for a flag, note or hold reason this console does not
// know.
var unknownAdvice = advice{"A reason this console has no advice for.", "See the records' device and account.", "nothing"}

// unknownNoteAdvice is for a note this console does not know: a note
// marks a charged tap, so it does not say the tap cost nothing.
var unknownNoteAdvice = advice{"A note this console has no advice for.", "See the records' device and account.", "the fare charged (a note does not change it)"}
