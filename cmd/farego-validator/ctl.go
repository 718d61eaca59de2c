package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/wire"
)

const ctlUsage = `Usage: farego-validator ctl [--socket PATH] COMMAND

Talks to the running validator over its control socket (for the bus's
onboard computer and technicians; the caller must be in the socket's group,
farego-ctl in the packaged unit: usermod -aG farego-ctl USER).

Commands:
  status          print the validator's state as JSON
  route ROUTE     serve ROUTE from the next tap on (kept across restarts)
  vehicle NAME    record NAME as the vehicle from the next tap on

The socket is $FAREGO_CTL_SOCKET, else /run/farego-validator/ctl.sock (the
validator's default: ctl.socket in validator.toml).

Flags:
`

// DefaultCtlSocket is the control socket when neither the config nor
// $RUNTIME_DIRECTORY name one.
const DefaultCtlSocket = "/run/farego-validator/ctl.sock"

// Bounds of the control protocol.
const (
	maxCtlRequest = 4 << 10 // one request line
	ctlDeadline   = 5 * time.Second
	maxCtlConns   = 4
)

// ctlRequest is one request on the control socket: a line of JSON.
type ctlRequest struct {
	Op    string `json:"op"`              // status, route, vehicle
	Value string `json:"value,omitempty"` // the route or vehicle
}

// ctlResponse is the answer: a line of JSON.
type ctlResponse struct {
	OK     bool       `json:"ok"`
	Error  string     `json:"error,omitempty"`
	Status *ctlStatus `json:"status,omitempty"`
}

// ctlStatus is what "ctl status" shows.
type ctlStatus struct {
	Device        string            `json:"device"`
	Software      string            `json:"software"`
	Route         string            `json:"route"`
	Vehicle       string            `json:"vehicle"`
	Source        string            `json:"assignment_source"`
	ServerVersion uint64            `json:"assignment_server_version,omitempty"`
	InService     bool              `json:"in_service"`
	OutOfService  string            `json:"out_of_service,omitempty"`
	Versions      map[string]uint64 `json:"versions"`
	QueueDepth    int               `json:"queue_depth"`
	ClockOffsetMS *int64            `json:"clock_offset_ms,omitempty"`
	// OldestUnsentSec: the age of the oldest tap the server has not
	// acknowledged, in seconds (absent when none waits): how long the bus
	// has been unsynced, which queue_depth alone did not say (the
	// server's status and /metrics had it, not the technician at the bus).
	OldestUnsentSec *int64 `json:"oldest_unsent_s,omitempty"`
	// KeyringEnds: when the issuer keys valid now, and those renewed to
	// follow them without a gap, end (absent with none valid). From then
	// every rider is refused; the server publishes
	// its renewal 30 days before, so a date this close says the device
	// has not heard from it since (selftest warns 14 days before).
	KeyringEnds *time.Time `json:"keyring_ends,omitempty"`
	// UplinkConnected: connected to the broker now (absent without [mqtt]).
	UplinkConnected *bool `json:"uplink_connected,omitempty"`
	// UplinkStatusProblem: why the last status sent failed the server's
	// check and was sent sanitized (uplink.Stats.StatusProblem).
	UplinkStatusProblem string `json:"uplink_status_problem,omitempty"`
	// UplinkError: while not connected, why the last attempt failed or
	// the connection was lost ("connect: not Authorized": credentials
	// replaced). The log says it once, when the outage began, maybe days
	// before the technician asks. Connected, a run of sends without any
	// ack (uplinkProblem: the server refuses the device's batches).
	UplinkError string `json:"uplink_error,omitempty"`
	// Update: a software update waiting to report healthy, or the last
	// one that failed and why (absent without [update] or with neither).
	// The server and the metrics had it; the technician at the bus, with
	// ctl status, saw the old version and no reason.
	Update *wire.UpdateStatus `json:"update,omitempty"`
	// Scanners: each scanner reader, read now or not and why not (the
	// log said it once, when it began: "in use by another reader" while
	// ctl status said in service, and riders' codes went unread).
	Scanners []ctlScanner `json:"scanners,omitempty"`
}

// ctlScanner is one scanner in ctl status.
type ctlScanner struct {
	Name    string `json:"name"`
	Up      bool   `json:"up"`                // its device is open and read
	Problem string `json:"problem,omitempty"` // why not
}

// ctlSocketPath returns the socket the validator listens on ("" : none).
func ctlSocketPath(cfg *Config) string {
	switch s := cfg.Ctl.Socket; s {
	case "off":
		return ""
	case "":
		if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
			return filepath.Join(filepath.SplitList(d)[0], "ctl.sock")
		}
		return DefaultCtlSocket
	default:
		return cfg.path(s)
	}
}

// ctlServer answers the control socket. It listens from the start: until
// the queue file is open (the validator may wait hours for its clock)
// status says why it is not running yet, and the other ops are refused.
type ctlServer struct {
	device string
	log    *slog.Logger
	// starting says why the validator takes no taps before it runs.
	starting func() string
	running  atomic.Pointer[ctlRunning]
}

// ctlRunning is what the control socket answers from once the validator
// runs.
type ctlRunning struct {
	a *agent.Agent
	q *queue.Queue
	// connected reports the uplink's connection (nil without one).
	connected func() bool
	// statusProblem reports uplink.Stats.StatusProblem (nil without one).
	statusProblem func() string
	// uplinkError reports why the uplink is down, or connected, that no ack
	// has come for several sends ("" otherwise; nil without one).
	uplinkError func() string
	// update reports the software update's state (nil without [update]).
	update func() *wire.UpdateStatus
	// scanners reports the scanner readers (nil: none to report).
	scanners func() []ctlScanner
	// scannerOut says why no scanner is read (scannerOutOfService).
	scannerOut func() string
}

// ctlSocketFree refuses a control socket another validator answers on:
// taking it over would leave that one without a control socket (and ours
// removed at exit, without any). A stale one, or none, is free.
func ctlSocketFree(path string) error {
	if path == "" {
		return nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, ctlDeadline); err == nil {
			c.Close()
			return fmt.Errorf("%w: ctl.socket: %s is in use by a running validator (stop it, or give this one another ctl.socket)",
				errConfig, path)
		}
	}
	return nil
}

// ctlStatusCommand is the command that asks the validator of cfg for its
// status ("" when its control socket is off).
func ctlStatusCommand(cfg *Config) string {
	switch path := ctlSocketPath(cfg); path {
	case "":
		return ""
	case DefaultCtlSocket:
		return "farego-validator ctl status"
	default:
		return "farego-validator ctl --socket " + path + " status"
	}
}

// serveCtl listens on path (mode 0660, replacing a stale socket) and
// answers until ctx is done. A default path whose directory does not exist
// only disables the socket (logged); a configured one is an error. A group
// (ctl.group: a name or number) is given the socket; one the validator
// cannot give it (not one of its groups: the unit's SupplementaryGroups=
// lacks it) leaves the socket in the validator's own group, logged: fewer
// may connect, but the validator runs.
func serveCtl(ctx context.Context, path, group string, configured bool, s *ctlServer) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil && !configured {
		s.log.Warn("no control socket: its directory is missing (set ctl.socket, or RuntimeDirectory= in the unit)",
			"path", path)
		return func() {}, nil
	}
	if err := ctlSocketFree(path); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path) // a stale socket of an earlier run
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w: ctl.socket: %w", errConfig, err)
	}
	// bind made the socket 0777 less the umask (0700 under the unit's
	// UMask=0077): only the validator's user can connect (that takes write
	// permission) until its group and mode are set.
	if group != "" {
		if err := chownGroup(path, group); err != nil {
			s.log.Warn("control socket left in the validator's own group: members of ctl.group cannot use it "+
				"(create the group, and name it in the unit's SupplementaryGroups=)", "path", path, "group", group, "err", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%w: ctl.socket: %w", errConfig, err)
	}
	s.log.Info("control socket listening", "path", path, "group", group)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxCtlConns)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					s.log.Warn("control socket", "err", err)
				}
				return
			}
			select {
			case sem <- struct{}{}:
			default:
				writeCtl(c, ctlResponse{Error: "busy: too many control connections"})
				c.Close()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				s.handle(c)
			}()
		}
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	return func() {
		stop()
		ln.Close()
		wg.Wait()
	}, nil
}

// CtlGroupEnv names the control socket's group where the configuration
// does not ([ctl] group): the unit sets it (farego-ctl), so bundles need
// no key that validators of the release before would refuse.
const CtlGroupEnv = "FAREGO_CTL_GROUP"

// ctlGroup is the control socket's group: [ctl] group, else $FAREGO_CTL_GROUP,
// else none (the validator's own).
func ctlGroup(cfg *Config) string {
	if cfg.Ctl.Group != "" {
		return cfg.Ctl.Group
	}
	return os.Getenv(CtlGroupEnv)
}

// chownGroup gives path to group, a group name or number.
func chownGroup(path, group string) error {
	gid, err := strconv.Atoi(group)
	if err != nil {
		g, err := user.LookupGroup(group)
		if err != nil {
			return err
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return err
		}
	}
	return os.Chown(path, -1, gid)
}

// socketGroup names the group of the socket at path (farego-ctl, the
// packaged unit's, if it cannot be read).
func socketGroup(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "farego-ctl"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "farego-ctl"
	}
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(gid); err == nil {
		return g.Name
	}
	return gid
}

// handle answers one request on c.
func (s *ctlServer) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ctlDeadline))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxCtlRequest+1), maxCtlRequest+1).ReadSlice('\n')
	if err != nil {
		msg := "a request is one line of JSON ending in a newline"
		if len(line) > maxCtlRequest || errors.Is(err, bufio.ErrBufferFull) {
			msg = fmt.Sprintf("request longer than %d bytes", maxCtlRequest)
		}
		writeCtl(c, ctlResponse{Error: msg})
		return
	}
	var req ctlRequest
	if err := decodeStrictJSON(line, &req); err != nil {
		writeCtl(c, ctlResponse{Error: "bad request: " + err.Error()})
		return
	}
	writeCtl(c, s.do(req))
}

func (s *ctlServer) do(req ctlRequest) ctlResponse {
	r := s.running.Load()
	switch req.Op {
	case "status":
	case "route", "vehicle":
		if r == nil {
			return ctlResponse{Error: fmt.Sprintf("the validator is not running yet (%s): set the %s once it is", s.starting(), req.Op)}
		}
		set := r.a.AssignLocalVehicle
		if req.Op == "route" {
			set = r.a.AssignLocalRoute
		}
		if err := set(req.Value); err != nil {
			return ctlResponse{Error: err.Error()}
		}
		s.log.Info("assignment changed over the control socket", "op", req.Op, "value", req.Value)
	default:
		return ctlResponse{Error: fmt.Sprintf("unknown op %q (want status, route or vehicle)", req.Op)}
	}
	st := s.status(r)
	return ctlResponse{OK: true, Status: &st}
}

func (s *ctlServer) status(r *ctlRunning) ctlStatus {
	if r == nil {
		return ctlStatus{Device: s.device, Software: agent.Version, OutOfService: s.starting(), Versions: map[string]uint64{}}
	}
	as := r.a.Assignment()
	st := ctlStatus{Device: r.a.DeviceID(), Software: agent.Version, Route: as.Route, Vehicle: as.Vehicle, Source: as.Source,
		ServerVersion: as.ServerVersion, OutOfService: outOfService(r.a, r.scannerOut), Versions: record.DocumentVersions(r.a.Versions())}
	st.InService = st.OutOfService == ""
	if qs, err := r.q.Stats(); err == nil {
		st.QueueDepth = qs.Count + qs.Adopted
		if !qs.OldestUnacked.IsZero() {
			age := max(0, int64(time.Since(qs.OldestUnacked)/time.Second))
			st.OldestUnsentSec = &age
		}
	}
	if end := r.a.StateHealth().KeysEnd; !end.IsZero() {
		end = end.UTC()
		st.KeyringEnds = &end
	}
	if off, _, ok := r.a.ClockOffset(); ok {
		ms := off.Milliseconds()
		st.ClockOffsetMS = &ms
	}
	if r.connected != nil {
		c := r.connected()
		st.UplinkConnected = &c
	}
	if r.statusProblem != nil {
		st.UplinkStatusProblem = r.statusProblem()
	}
	if r.uplinkError != nil {
		st.UplinkError = r.uplinkError()
	}
	if r.update != nil {
		st.Update = r.update()
	}
	if r.scanners != nil {
		st.Scanners = r.scanners()
	}
	return st
}

func writeCtl(w io.Writer, r ctlResponse) {
	b, _ := json.Marshal(r)
	w.Write(append(b, '\n'))
}

func decodeStrictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// cmdCtl is the client: farego-validator ctl.
func cmdCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), ctlUsage); fs.PrintDefaults() }
	def := os.Getenv("FAREGO_CTL_SOCKET")
	if def == "" {
		def = DefaultCtlSocket
	}
	socket := fs.String("socket", def, "the validator's control socket")
	if err := cli.ParseArgs(fs, args, stdout, stderr); err != nil {
		return cli.Exit("farego-validator ctl", err, stderr)
	}
	var req ctlRequest
	switch rest := fs.Args(); {
	case len(rest) == 1 && rest[0] == "status":
		req.Op = "status"
	case len(rest) == 2 && (rest[0] == "route" || rest[0] == "vehicle"):
		req.Op, req.Value = rest[0], rest[1]
	default:
		fmt.Fprintln(stderr, "farego-validator ctl: want one of: status, route ROUTE, vehicle NAME")
		return exitUsage
	}
	resp, err := ctlCall(*socket, req)
	if err != nil {
		fmt.Fprintf(stderr, "farego-validator ctl: %v\n", err)
		return exitFailure
	}
	if !resp.OK {
		fmt.Fprintf(stderr, "farego-validator ctl: the validator refused: %s\n", resp.Error)
		return exitFailure
	}
	b, _ := json.MarshalIndent(resp.Status, "", "  ")
	fmt.Fprintf(stdout, "%s\n", b)
	return exitOK
}

// ctlCall sends one request and reads the answer.
func ctlCall(socket string, req ctlRequest) (*ctlResponse, error) {
	c, err := net.DialTimeout("unix", socket, ctlDeadline)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			g := socketGroup(socket)
			return nil, fmt.Errorf("%w (join the socket's group, %s: usermod -aG %s USER, then log in again; or run as the validator's user)", err, g, g)
		}
		return nil, fmt.Errorf("%w (is the validator running? see its log; --socket or $FAREGO_CTL_SOCKET names another socket)", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ctlDeadline))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(c, 64<<10), 64<<10).ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	var resp ctlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return &resp, nil
}
