// Package jsonstrict holds the JSON checks encoding/json does not make:
// a key named twice in one object. The server's API refuses such bodies,
// and fare tables are refused wherever they are read (API, files, the
// fleet's downlink).
package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// MaxDepth bounds the nesting DuplicateKeys follows.
const MaxDepth = 32

// DuplicateKeys refuses a JSON text in which an object names a key
// twice. encoding/json takes the last one silently, so
// {"amount":1,"amount":100000} would otherwise top up 100,000 while a
// proxy, a log or a signature check in front of us read 1. With fold,
// keys that differ only in case are the same key, as encoding/json matches
// them to a struct's fields: {"amount":1,"AMOUNT":100000} is refused too.
// Without fold, only identical keys are.
func DuplicateKeys(data []byte, fold bool) error { return duplicateKeys(data, fold, nil) }

// DuplicateKeysExcept is DuplicateKeys with fold, except in the objects
// that are the value of a key named in maps, and in all they hold: those
// are decoded into Go maps, whose keys are matched exactly ("X1" and "x1"
// are two routes of a fare table), while the keys around them name struct
// fields, matched regardless of case ({"version":1,"Version":7}).
func DuplicateKeysExcept(data []byte, maps ...string) error {
	except := map[string]bool{}
	for _, m := range maps {
		except[m] = true
	}
	return duplicateKeys(data, true, except)
}

func duplicateKeys(data []byte, fold bool, except map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		fold   bool
		keys   map[string]bool
		key    bool   // the next token in an object is a key
		last   string // the key whose value comes next
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // the decoder proper reports syntax errors
		}
		childFold := fold
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			childFold = top.fold
			if top.object {
				if top.key {
					if k, ok := tok.(string); ok {
						top.last = k
						if top.fold {
							k = foldKey(k)
						}
						if top.keys[k] {
							return fmt.Errorf("duplicate key %q", k)
						}
						top.keys[k] = true
						top.key = false
						continue
					}
				} else {
					top.key = true // this token is the value; a key comes next
					childFold = top.fold && !except[top.last]
				}
			}
		}
		switch tok {
		case json.Delim('{'):
			if len(stack) >= MaxDepth {
				return fmt.Errorf("JSON nested deeper than %d", MaxDepth)
			}
			stack = append(stack, frame{object: true, fold: childFold, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			if len(stack) >= MaxDepth {
				return fmt.Errorf("JSON nested deeper than %d", MaxDepth)
			}
			stack = append(stack, frame{fold: childFold})
		case json.Delim('}'), json.Delim(']'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// foldKey folds a key as encoding/json does when it matches a struct
// field: foldKey(a) == foldKey(b) exactly when strings.EqualFold(a, b).
func foldKey(k string) string {
	return strings.Map(func(r rune) rune {
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				return r2
			}
			r = r2
		}
	}, k)
}
