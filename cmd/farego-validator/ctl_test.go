package main

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/queue"
)

// FuzzCtlRequest sends arbitrary bytes to the control socket's handler
// (over a real connection pair, with a real agent on a real queue file):
// it always answers one line of JSON, and whatever it accepts leaves a
// valid assignment.
func FuzzCtlRequest(f *testing.F) {
	for _, s := range []string{`{"op":"status"}` + "\n", `{"op":"route","value":"42"}` + "\n", `{"op":"vehicle","value":""}` + "\n",
		`{"op":"route","value":"4\t2"}` + "\n", `{"op":"fly"}` + "\n", `{"op":"route"` + "\n", "\n", `{"op":"status"}{}` + "\n"} {
		f.Add([]byte(s))
	}
	q, err := queue.Open(filepath.Join(f.TempDir(), "validator.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { q.Close() })
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "bus-1", Route: "42", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	s := &ctlServer{a: a, q: q, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, req []byte) {
		client, server := net.Pipe()
		go func() {
			client.Write(req)
			client.Write([]byte("\n"))
		}()
		done := make(chan struct{})
		go func() { s.handle(server); close(done) }()
		line, err := bufio.NewReader(client).ReadBytes('\n')
		client.Close()
		<-done
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		var resp ctlResponse
		if err := json.Unmarshal(line, &resp); err != nil || resp.OK == (resp.Error != "") {
			t.Fatalf("answer %q: %v", line, err)
		}
		as := a.Assignment()
		if err := agent.CheckAssignment(as.Route, as.Vehicle); err != nil {
			t.Fatalf("assignment %+v after %q: %v", as, req, err)
		}
	})
}
