package wire

import (
	"bytes"
	"compress/flate"
	"crypto/ed25519"
	"fmt"
	"io"
	"sync"
)

// Type is a message type.
type Type uint8

// Message types.
const (
	TypeBatch    Type = 1 // device → server: tap records (device key)
	TypeAck      Type = 2 // server → device: records committed (fleet key)
	TypeStatus   Type = 3 // device → server: status (device key)
	TypeDownlink Type = 4 // server → devices: keyring, deny list, fare table (fleet key)
	TypeReplay   Type = 5 // server → device: resend archived records (fleet key)
	TypeAssign   Type = 6 // server → device: route and vehicle (fleet key)
)

func (t Type) String() string {
	switch t {
	case TypeBatch:
		return "batch"
	case TypeAck:
		return "ack"
	case TypeStatus:
		return "status"
	case TypeDownlink:
		return "downlink"
	case TypeReplay:
		return "replay"
	case TypeAssign:
		return "assign"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	magic       = "FGW1"
	sigContext  = "farego-wire-v1"
	headerSize  = len(magic) + 2
	flagDeflate = 1 << 0
	knownFlags  = flagDeflate

	// MaxMessageSize bounds a message as sent (after compression): 384
	// KiB. The largest batch a validator sends by default (100 records,
	// at most 256 KiB of record data, before compression) fits with
	// margin, and brokers can keep their largest packet well under a
	// megabyte (server/broker, testdata/broker). A sender splits a batch
	// that would not fit (sync/uplink).
	MaxMessageSize = 384 << 10
	// MaxDownlinkSize bounds a fleet downlink as the server publishes it
	// (after compression): small enough for brokers whose largest packet
	// is well under a megabyte. The deny list goes in shards to stay under
	// it.
	MaxDownlinkSize = 256 << 10
	// MaxPayloadSize bounds a payload after inflating.
	MaxPayloadSize = 4 << 20
	// compressMin is the payload size below which compression is not tried.
	compressMin = 256
)

func signedMessage(t Type, flags byte, payload []byte) []byte {
	m := make([]byte, 0, len(sigContext)+2+len(payload))
	m = append(m, sigContext...)
	m = append(m, byte(t), flags)
	return append(m, payload...)
}

// deflaters holds reusable DEFLATE writers (flate.BestSpeed) for Seal: a
// new one allocates about a megabyte of tables, more work than compressing
// a batch. Reset makes a reused writer's output identical to a new one's.
var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
	return w
}}

// Seal wraps a payload into a signed envelope, DEFLATE-compressing it when
// compress is set and that makes it smaller.
func Seal(t Type, payload []byte, compress bool, key ed25519.PrivateKey) ([]byte, error) {
	if len(payload) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(payload), MaxPayloadSize)
	}
	var flags byte
	body := payload
	if compress && len(payload) >= compressMin {
		var buf bytes.Buffer
		w := deflaters.Get().(*flate.Writer)
		w.Reset(&buf)
		w.Write(payload)
		w.Close()
		w.Reset(io.Discard) // drops buf
		deflaters.Put(w)
		if buf.Len() < len(payload) {
			body, flags = buf.Bytes(), flagDeflate
		}
	}
	if headerSize+len(body)+ed25519.SignatureSize > MaxMessageSize {
		return nil, fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, headerSize+len(body)+ed25519.SignatureSize, MaxMessageSize)
	}
	msg := make([]byte, 0, headerSize+len(body)+ed25519.SignatureSize)
	msg = append(msg, magic...)
	msg = append(msg, byte(t), flags)
	msg = append(msg, body...)
	return append(msg, ed25519.Sign(key, signedMessage(t, flags, body))...), nil
}

// PeekType returns a message's type after checking its header, without
// verifying it.
func PeekType(msg []byte) (Type, error) {
	if len(msg) > MaxMessageSize {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg), MaxMessageSize)
	}
	if len(msg) < headerSize+ed25519.SignatureSize || string(msg[:len(magic)]) != magic {
		return 0, fmt.Errorf("%w: not a farego envelope", ErrMalformed)
	}
	t, flags := Type(msg[4]), msg[5]
	if t < TypeBatch || t > TypeAssign || flags&^knownFlags != 0 {
		return 0, fmt.Errorf("%w: type %d, flags %#x", ErrUnsupported, t, flags)
	}
	return t, nil
}

// Open checks an envelope of the wanted type against pub and returns its
// payload (inflated). The signature is verified before anything is inflated.
func Open(msg []byte, want Type, pub ed25519.PublicKey) ([]byte, error) {
	return OpenLimit(msg, want, pub, MaxPayloadSize)
}

// OpenLimit is Open for a payload of at most limit bytes (at most
// MaxPayloadSize): a larger one is refused (ErrTooLarge), inflated no
// further than that. A few kilobytes of DEFLATE inflate to MaxPayloadSize:
// a stolen validator's statuses so had the server inflate 4 MiB each to
// find them over their 8 KiB (an attack review: 800 in 20 s, 3.2 GB).
func OpenLimit(msg []byte, want Type, pub ed25519.PublicKey, limit int) ([]byte, error) {
	limit = min(limit, MaxPayloadSize)
	t, err := PeekType(msg)
	if err != nil {
		return nil, err
	}
	if t != want {
		return nil, fmt.Errorf("%w: got a %s message, want %s", ErrUnsupported, t, want)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: no valid public key to check it with", ErrBadSignature)
	}
	flags := msg[5]
	body := msg[headerSize : len(msg)-ed25519.SignatureSize]
	sig := msg[len(msg)-ed25519.SignatureSize:]
	if !ed25519.Verify(pub, signedMessage(t, flags, body), sig) {
		return nil, ErrBadSignature
	}
	if flags&flagDeflate == 0 {
		if len(body) > limit {
			return nil, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(body), limit)
		}
		return body, nil
	}
	r := flate.NewReader(bytes.NewReader(body))
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: inflate: %w", ErrMalformed, err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: inflates past %d bytes", ErrTooLarge, limit)
	}
	return out, nil
}
