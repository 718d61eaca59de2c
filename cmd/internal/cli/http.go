package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// APIError is an error answer of the settlement server's API.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// NoAnswer is a request no server answered: nothing listens at Server
// (scheme://host), or the address is wrong. Its message names --server,
// the flag most commands take the address from; a command that takes it
// from elsewhere (farego-rider's state file) says so instead (Hint).
type NoAnswer struct {
	Err    error
	Server string
}

func (e *NoAnswer) Error() string { return e.Hint("check --server") }

// Hint is the message with what to check in place of --server.
func (e *NoAnswer) Hint(check string) string {
	return fmt.Sprintf("%v (is the server at %s running and reachable? %s)", e.Err, e.Server, check)
}

func (e *NoAnswer) Unwrap() error { return e.Err }

// refused reports whether err is a failure to connect (not an answer of
// the server: the address is wrong, or nothing listens there yet).
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// GetJSONWaiting is CallJSON for a GET that is the first contact with a
// server that may be starting: while the connection is refused (nothing
// listens there yet; not a name that does not resolve) it tries again
// every 200 ms for up to wait, telling progress once. A server started in
// the background (farego-settlement run … &) listens a moment later than
// the next command of a script runs.
func GetJSONWaiting(ctx context.Context, url string, wait time.Duration, progress io.Writer, out any) error {
	deadline := time.Now().Add(wait)
	told := false
	for {
		err := CallJSON(ctx, "GET", url, "", nil, out)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return err
		}
		if !told && progress != nil {
			fmt.Fprintf(progress, "no answer from %s yet; trying again for up to %s\n", url, wait)
			told = true
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CallJSON makes one request to the settlement server's API: body (if not
// nil) is sent as JSON, token as a bearer token, and a 2xx answer is decoded
// into out (if not nil). An error answer becomes an *APIError.
func CallJSON(ctx context.Context, method, url, token string, body, out any) error {
	_, err := CallJSONHeader(ctx, method, url, token, body, out)
	return err
}

// CallJSONHeader is CallJSON that also returns the answer's header (nil
// without an answer): Idempotent-Replayed says a retry changed nothing.
func CallJSONHeader(ctx context.Context, method, url, token string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if refused(err) {
			// Not an answer of the server: the address is wrong, or
			// nothing listens there.
			return nil, &NoAnswer{Err: err, Server: req.URL.Scheme + "://" + req.URL.Host}
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			return resp.Header, &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
		}
		return resp.Header, &APIError{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: resp.Status}
	}
	if out != nil {
		return resp.Header, json.Unmarshal(data, out)
	}
	return resp.Header, nil
}
