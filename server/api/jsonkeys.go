package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// maxJSONDepth bounds the nesting checkDuplicateKeys follows.
const maxJSONDepth = 32

// checkDuplicateKeys refuses a JSON text in which an object names a key
// twice. encoding/json takes the last one silently, so
// {"amount":1,"amount":100000} would otherwise top up 100,000 while a
// proxy, a log or a signature check in front of us read 1.
func checkDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token in an object is a key
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
		if n := len(stack); n > 0 && stack[n-1].object {
			top := &stack[n-1]
			if top.key {
				if k, ok := tok.(string); ok {
					if top.keys[k] {
						return fmt.Errorf("duplicate key %q", k)
					}
					top.keys[k] = true
					top.key = false
					continue
				}
			} else {
				top.key = true // this token is the value; a key comes next
			}
		}
		switch tok {
		case json.Delim('{'):
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("JSON nested deeper than %d", maxJSONDepth)
			}
			stack = append(stack, frame{object: true, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("JSON nested deeper than %d", maxJSONDepth)
			}
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}
