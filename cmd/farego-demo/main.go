// Command farego-demo runs the whole farego system on one machine, with no
// external services, and narrates what happens: a settlement server
// (embedded MQTT broker, SQLite ledger), a provisioned validator reading a
// pseudo-terminal "scanner", riders with real payment codes, valid and
// invalid taps, a bus driving out of coverage and back, and the resulting
// rides and balances on the server. It is what `make demo` runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/rig"
	"github.com/farego/farego/driver/feedback"
)

const fares = `{
  "version": 1,
  "currency": "EUR",
  "timezone": "Europe/Berlin",
  "service_day_start": "04:00",
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}},
  "transfer": {"window": "60m", "fare": 0},
  "daily_cap": {"adult": 700, "child": 350, "senior": 350, "student": 500}
}`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.Exit("farego-demo", err, os.Stderr))
}

type demo struct {
	out  io.Writer
	bold bool // out is a terminal: steps in bold
	r    *rig.Rig
	d    *rig.Device
}

func (dm *demo) step(format string, a ...any) {
	if dm.bold {
		fmt.Fprintf(dm.out, "\n\033[1m==> "+format+"\033[0m\n", a...)
		return
	}
	fmt.Fprintf(dm.out, "\n==> "+format+"\n", a...)
}

func (dm *demo) say(format string, a ...any) { fmt.Fprintf(dm.out, "    "+format+"\n", a...) }

// tap scans a code and shows what the rider sees.
func (dm *demo) tap(ctx context.Context, who, code string) (string, error) {
	line, err := dm.d.Scan(ctx, code)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(dm.out, "    %-30s validator: %s\n", who, line)
	return line, nil
}

func run(ctx context.Context, args []string, out, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-demo", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory with the farego binaries (make build)")
	keep := fs.Bool("keep", false, "keep the server (and its rider's wallet) running until Ctrl-C, and the demo's files afterwards")
	version := fs.Bool("version", false, "print the version and exit")
	// Said first, as the other programs' help does: "Usage of farego-demo"
	// and two flags told a newcomer nothing of what it runs.
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `farego-demo: run the whole system on this machine and narrate it: a settlement
server (embedded MQTT broker, SQLite ledger), a validator reading a
pseudo-terminal as its QR scanner, riders tapping valid and invalid codes, a
network cut, a kiosk's payment and refund; every process on 127.0.0.1 ports
the kernel picks, its files in a temporary directory, removed at the end.

Usage:
  farego-demo [--bin DIR] [--keep]     (make demo; make demo DEMO_FLAGS=--keep)

Flags:
`)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, out, stderr); err != nil {
		return err
	}
	if *version {
		cli.PrintVersion(out, "farego-demo")
		return nil
	}
	for _, b := range rig.Binaries {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run \"make build\" (or \"make demo\")", b, *bin)
		}
	}
	abs, _ := filepath.Abs(*bin)
	dir, err := os.MkdirTemp("", "farego-demo-")
	if err != nil {
		return err
	}
	dm := &demo{out: out, bold: cli.IsTerminal(out), r: rig.New(dir, abs, io.Discard)}
	ok := false
	defer func() {
		dm.r.Close()
		if dm.d != nil {
			dm.d.Close()
		}
		interrupted := ctx.Err() != nil && !ok
		if *keep || (!ok && !interrupted) {
			fmt.Fprintf(out, "\nThe demo's files are in %s (server.log, devices/*/validator.log).\n", dir)
			return
		}
		if interrupted {
			// Ctrl-C: cleaned up as a finished run is (the files hold
			// the demo fleet's private keys), and said so.
			os.RemoveAll(dir)
			fmt.Fprintf(out, "\nInterrupted: cleaned up %s (run with --keep to keep the files).\n", dir)
			return
		}
		os.RemoveAll(dir)
		fmt.Fprintf(out, "\nCleaned up %s (run with --keep to look at the files).\n", dir)
	}()
	fmt.Fprintf(out, "farego demo: offline QR fare payment, end to end, on this machine.\nWorking in %s\n", dir)
	if err := dm.script(ctx); err != nil {
		if ctx.Err() != nil {
			return cli.ErrInterrupted
		}
		return err
	}
	ok = true
	if err := dm.wallet(ctx, dir, *keep); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// wallet points at the rider's wallet the server serves and, with --keep,
// keeps everything running until interrupted so a person can open it.
func (dm *demo) wallet(ctx context.Context, dir string, keep bool) error {
	url := "http://" + dm.r.HTTP + "/wallet/"
	dm.step("The rider's wallet (a web app that makes codes offline): %s", url)
	if !keep {
		dm.say("run \"make demo DEMO_FLAGS=--keep\" (or farego-demo --keep) to keep the server up and open it in a browser")
		return nil
	}
	// The script's riders took passes at any balance (the rig's
	// --credential-minimum -1: Cy rides into the red); the server kept up
	// for a person runs on the default, as an operator's does: a pass
	// needs a day's cap on the balance, so a new account in the wallet is
	// asked to top up first. It handed out passes at 0.00, and the
	// "Get a pass" below was never shown.
	if err := dm.r.StopServer(false); err != nil {
		return fmt.Errorf("restarting the server for the wallet: %w", err)
	}
	dm.r.ServerArgs = append(dm.r.ServerArgs, "--credential-minimum", "0")
	if err := dm.r.StartServer(ctx); err != nil {
		return fmt.Errorf("restarting the server for the wallet: %w", err)
	}
	dm.say("open it in Chromium, Firefox or Safari on this machine (WebCrypto needs https or 127.0.0.1) and create an account;")
	dm.say("a pass needs an adult's daily cap on the balance (7.00 EUR: the server's default --credential-minimum), so the wallet asks you to top up first;")
	dm.say("top it up as the payment provider would (ACCOUNT is the number the wallet shows):")
	dm.say("  curl -H \"Authorization: Bearer $(cat %s)\" -H 'Content-Type: application/json' \\", filepath.Join(dir, "server", "keys", "operator.token"))
	dm.say("       -d '{\"amount\": 1000, \"reference\": \"demo-'$(date +%%s%%N)'\"}' http://%s/v1/accounts/ACCOUNT/topups", dm.r.HTTP)
	dm.say("(a reference names one payment: the same one again adds nothing)")
	dm.say("then press Refresh (or \"Get a pass\"): the wallet fetches its pass; switch the network off (or stop this demo) and the wallet still makes codes")
	dm.say("the operator's console: http://%s/console/ (sign in with the operator token in %s)", dm.r.HTTP,
		filepath.Join(dir, "server", "keys", "operator.token"))
	dm.say("the server stays up; press Ctrl-C to stop (to tap the wallet's codes at a validator of your own, see the README's \"By hand\")")
	<-ctx.Done()
	return nil
}

func (dm *demo) script(ctx context.Context) error {
	r := dm.r
	dm.step("Operator: create the fleet (signing key, MQTT CA) and the settlement server's keys and ledger")
	if err := r.Init(ctx, fares); err != nil {
		return err
	}
	dm.say("fare table v1: adult 2.50, child 1.20 EUR; 60-minute free transfer; daily cap 7.00")
	if err := r.StartServer(ctx); err != nil {
		return err
	}
	dm.say("settlement server up: HTTP API http://%s, embedded MQTT broker %s, SQLite ledger", r.HTTP, r.MQTT)
	dm.say("rider's wallet (web app): http://%s/wallet/; operator's console: http://%s/console/", r.HTTP, r.HTTP)

	dm.step("Technician: provision validator bus-17-front (device key, client certificate, config, keyring)")
	d, err := r.Provision(ctx, "bus-17-front", "42")
	if err != nil {
		return err
	}
	dm.d = d
	if err := d.Start(ctx); err != nil {
		return err
	}
	dm.say("validator running on route 42, its QR scanner is the pseudo-terminal %s", filepath.Join(d.Dir, "scanner-front"))

	dm.step("Riders: register (the operator confirms Ben's child and Dee's student fares), top up (as the payment provider), fetch a credential (token seed) while online")
	type who struct {
		name, profile string
		topUp         int64
	}
	riders := map[string]*rig.Rider{}
	for _, w := range []who{{"Ada", "adult", 1000}, {"Ben", "child", 500}, {"Cy", "adult", 100}, {"Dee", "student", 1000}} {
		rd, err := r.NewRider(ctx, strings.ToLower(w.name), w.profile, w.topUp)
		if err != nil {
			return err
		}
		riders[w.name] = rd
		dm.say("%-4s account %d, %s, balance %s", w.name, rd.ID, w.profile, money(w.topUp))
	}

	dm.step("On the bus (online): riders show their codes; the validator decides offline in milliseconds")
	ada, _ := riders["Ada"].Code(ctx, filepath.Join(r.Dir, "ada.png"))
	if _, err := dm.tap(ctx, "Ada (adult)", ada); err != nil {
		return err
	}
	ben, _ := riders["Ben"].Code(ctx, "")
	dm.tap(ctx, "Ben (child)", ben)
	dm.tap(ctx, "Ada shows the same code again", ada)
	dm.tap(ctx, "a torn sticker", "HELLO-WORLD")
	dm.tap(ctx, "Ben's code, one byte forged", forge(ben))
	old, _ := riders["Dee"].CodeAt(ctx, time.Now().Add(-10*time.Minute), "")
	dm.tap(ctx, "Dee, a screenshot 10 min old", old)

	dm.step("The bus enters a tunnel: the validator's network link is cut")
	d.Link.Cut()
	cy, _ := riders["Cy"].Code(ctx, "")
	dm.tap(ctx, "Cy (balance 1.00)", cy)
	dee, _ := riders["Dee"].Code(ctx, "")
	dm.tap(ctx, "Dee (student)", dee)
	dm.say("both taps are on the validator's disk (fsync'd before the green light), not yet on the server")
	for _, n := range []string{"Cy", "Dee"} {
		a, _ := r.Account(ctx, riders[n].ID)
		dm.say("server still shows %-3s balance %s", n, money(a.Balance))
	}

	dm.step("Out of the tunnel: the link is restored and the queued taps settle")
	d.Link.Restore()
	err = rig.WaitFor(ctx, 60*time.Second, "the offline taps to settle", func() bool {
		a, err1 := r.Account(ctx, riders["Cy"].ID)
		b, err2 := r.Account(ctx, riders["Dee"].ID)
		return err1 == nil && err2 == nil && len(a.Rides) == 1 && len(b.Rides) == 1
	})
	if err != nil {
		return err
	}
	a, _ := r.Account(ctx, riders["Cy"].ID)
	dm.say("Cy's balance is now %s: the account is deny-listed fleet-wide until topped up", money(a.Balance))
	err = rig.WaitFor(ctx, 60*time.Second, "the deny list to reach the validator", func() bool {
		code, _ := riders["Cy"].Code(ctx, "")
		line, err := d.Scan(ctx, code)
		if err == nil && strings.Contains(line, "(denied)") {
			fmt.Fprintf(dm.out, "    %-30s validator: %s\n", "Cy tries again", line)
			return true
		}
		return false
	})
	if err != nil {
		return err
	}

	if err := dm.shop(ctx, riders["Ada"]); err != nil {
		return err
	}

	dm.step("Settlement server: rides and balances")
	tw := tabwriter.NewWriter(dm.out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "    rider\taccount\tbalance\trides (route, charge)\tstatus")
	for _, n := range []string{"Ada", "Ben", "Cy", "Dee"} {
		a, err := r.Account(ctx, riders[n].ID)
		if err != nil {
			return err
		}
		var rides []string
		for _, rd := range a.Rides {
			rides = append(rides, fmt.Sprintf("%s %s", rd.Route, money(rd.Charge)))
		}
		status := "ok"
		if a.Denied {
			status = "DENIED"
		}
		fmt.Fprintf(tw, "    %s\t%d\t%s\t%s\t%s\n", n, a.ID, money(a.Balance), strings.Join(rides, ", "), status)
	}
	tw.Flush()
	out, err := r.Verify(ctx)
	if err != nil {
		return err
	}
	dm.say("%s", strings.TrimSpace(out))
	dm.step("Done: every accepted tap charged exactly once; refused taps charged nothing")
	return nil
}

// shop shows the online path: a shop's scanner sends the rider's code to
// the server, which verifies it and takes the amount at once; the same
// code cannot pay twice; the shop refunds part of it.
func (dm *demo) shop(ctx context.Context, ada *rig.Rider) error {
	r := dm.r
	dm.step("At a kiosk (online): its scanner sends Ada's code to the server, which checks it and her balance and takes the amount at once")
	tok, err := r.MerchantToken(ctx, "kiosk-9")
	if err != nil {
		return err
	}
	code, err := ada.Code(ctx, "")
	if err != nil {
		return err
	}
	api := "http://" + r.HTTP + "/v1/payments"
	var paid struct {
		ID     uint64 `json:"id"`
		Amount int64  `json:"amount"`
	}
	if err := cli.CallJSON(ctx, "POST", api, tok, map[string]any{"merchant_id": "kiosk-9", "order_id": "order-1", "code": code,
		"amount": 300}, &paid); err != nil {
		return err
	}
	dm.say("kiosk-9 order-1: paid %s (payment %d)", money(paid.Amount), paid.ID)
	err = cli.CallJSON(ctx, "POST", api, tok, map[string]any{"merchant_id": "kiosk-9", "order_id": "order-2", "code": code,
		"amount": 300}, nil)
	var ae *cli.APIError
	if !errors.As(err, &ae) || ae.Code != "code_used" {
		return fmt.Errorf("the same code paid twice: %v", err)
	}
	dm.say("the same code for another order: refused (%s): a code pays once, online or on a bus", ae.Code)
	var refund struct {
		Amount     int64 `json:"amount"`
		Refundable int64 `json:"refundable"`
	}
	if err := cli.CallJSON(ctx, "POST", api+"/kiosk-9/order-1/refunds", tok, map[string]any{"refund_id": "return-1", "amount": 100,
		"reason": "one item returned"}, &refund); err != nil {
		return err
	}
	a, err := r.Account(ctx, ada.ID)
	if err != nil {
		return err
	}
	dm.say("the kiosk refunds %s (one item returned; %s of the payment left to refund): Ada's balance %s",
		money(refund.Amount), money(refund.Refundable), money(a.Balance))
	return nil
}

// forge flips one bit of the rider's signature in a code.
func forge(text string) string {
	c, err := paycode.ParseText(text)
	if err != nil {
		return text
	}
	b := c.Bytes()
	b[paycode.CodeSize-1] ^= 1
	return paycode.EncodeText(b)
}

// money formats an amount of the demo's currency (its fare table's) as
// every farego tool does: 250 is "2.50 EUR".
func money(minor int64) string { return feedback.FormatAmount(minor, "EUR") }
