package ingest

import "github.com/farego/farego/sync/wire"

// CheckRecord decodes one device record and re-verifies its payment code at
// the tap's time with the server's current keyring, as a batch's records
// are checked: the settlement server uses it to re-check records it held
// aside when its keyring changes.
func (in *Ingest) CheckRecord(device, epoch string, seq uint64, record []byte) Tap {
	return in.check(device, epoch, wire.Record{Seq: seq, Data: record}, in.cfg.Keyring())
}
