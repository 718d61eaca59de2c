package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
)

// MaxDenyEntries bounds a deny list.
const MaxDenyEntries = 1_000_000

// DenyList is the deny-list document: accounts (Serial 0) or single
// credentials (account + serial) that validators must refuse.
type DenyList struct {
	Version uint64      `json:"version"`
	Entries []DenyEntry `json:"entries"`
}

// DenyEntry is one deny-list entry.
type DenyEntry struct {
	Account uint64 `json:"account"`
	Serial  uint32 `json:"serial,omitempty"` // 0: the whole account
	Reason  string `json:"reason,omitempty"`
	// Expires is when the entry stops mattering (unix seconds; the
	// credential it names expires then); 0: never. Validators drop
	// expired entries by their own clock.
	Expires int64 `json:"expires,omitempty"`
}

// ParseDenyList decodes a deny-list document strictly.
func ParseDenyList(b []byte) (*DenyList, error) {
	jd := json.NewDecoder(bytes.NewReader(b))
	jd.DisallowUnknownFields()
	var dl DenyList
	if err := jd.Decode(&dl); err != nil {
		return nil, fmt.Errorf("%w: deny list: %w", ErrMalformed, err)
	}
	if _, err := jd.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: deny list: trailing data", ErrMalformed)
	}
	if dl.Version == 0 {
		return nil, fmt.Errorf("%w: deny list version must be at least 1", ErrMalformed)
	}
	if len(dl.Entries) > MaxDenyEntries {
		return nil, fmt.Errorf("%w: deny list of %d entries, limit %d", ErrTooLarge, len(dl.Entries), MaxDenyEntries)
	}
	for i, e := range dl.Entries {
		if e.Account == 0 || e.Expires < 0 || e.Expires > math.MaxUint32 {
			return nil, fmt.Errorf("%w: deny list entry %d has no account or its expiry is out of range", ErrMalformed, i)
		}
	}
	return &dl, nil
}
