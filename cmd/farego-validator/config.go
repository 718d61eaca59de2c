package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/uplink"
)

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

// Config is the validator's TOML configuration. Relative paths are relative
// to the config file's directory (so a device bundle can be moved as a whole).
type Config struct {
	DeviceID string `toml:"device_id"`
	Route    string `toml:"route"`
	Vehicle  string `toml:"vehicle"`
	DataDir  string `toml:"data_dir"`
	Language string `toml:"language"` // riders' language: en (default), zh-Hans

	Log       LogConfig       `toml:"log"`
	Policy    PolicyConfig    `toml:"policy"`
	Provision ProvisionConfig `toml:"provision"`
	Scanners  []ScannerConfig `toml:"scanner"`
	Feedback  FeedbackConfig  `toml:"feedback"`
	Metrics   MetricsConfig   `toml:"metrics"`
	Queue     QueueConfig     `toml:"queue"`
	MQTT      MQTTConfig      `toml:"mqtt"`
	Ctl       CtlConfig       `toml:"ctl"`
	Selftest  SelftestConfig  `toml:"selftest"`
	Update    UpdateConfig    `toml:"update"`

	dir string // the config file's directory
}

// LogConfig selects log level and format.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json (for journald)
}

// PolicyConfig holds the decision policy.
type PolicyConfig struct {
	MaxAge         Duration `toml:"max_age"` // default 120s
	Skew           Duration `toml:"skew"`    // default 30s; "0s": none
	noSkew         bool     // skew was written as 0
	PassbackWindow Duration `toml:"passback_window"` // default 5s; negative disables
	RiskCap        int      `toml:"risk_cap"`        // default 10; negative disables
	// MinClock: a system clock before this time is "unset" and puts the
	// validator out of service; default the build date.
	MinClock Date `toml:"min_clock"`
	// MaxClockOffset: a clock further than this from the settlement
	// server's (measured from its acks) puts the validator out of service;
	// default 30s (the code skew), negative disables.
	MaxClockOffset Duration `toml:"max_clock_offset"`
}

// ProvisionConfig names the provisioning bundle's documents; each is applied
// at start when newer than the device's own state.
type ProvisionConfig struct {
	Keyring  string `toml:"keyring"`
	Fares    string `toml:"fares"`
	DenyList string `toml:"denylist"`
}

// ScannerConfig is one QR scanner. Path "-" reads lines from standard input
// (development and demos).
type ScannerConfig struct {
	Name             string             `toml:"name"`
	Type             string             `toml:"type"` // serial (default) or evdev
	Path             string             `toml:"path"`
	Baud             int                `toml:"baud"`
	Terminator       scanner.Terminator `toml:"terminator"`
	Prefix           string             `toml:"prefix"`
	Suffix           string             `toml:"suffix"`
	MaxLen           int                `toml:"max_len"`
	InterCharTimeout Duration           `toml:"inter_char_timeout"`
}

// FeedbackConfig selects the rider feedback outputs.
type FeedbackConfig struct {
	Console *bool  `toml:"console"` // default true
	Color   string `toml:"color"`   // auto (default), always, never
	Green   string `toml:"gpio_green"`
	Red     string `toml:"gpio_red"`
	Buzzer  string `toml:"gpio_buzzer"`

	// GPIO character device (see hardware.go): preferred over the files
	// above, which become the fallback.
	Chip       string  `toml:"gpio_chip"`
	GreenLine  lineRef `toml:"gpio_green_line"`
	RedLine    lineRef `toml:"gpio_red_line"`
	BuzzerLine lineRef `toml:"gpio_buzzer_line"`
	ActiveLow  bool    `toml:"gpio_active_low"`
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `toml:"listen"` // e.g. 127.0.0.1:9100; empty disables
}

// CtlConfig is the control socket (farego-validator ctl).
type CtlConfig struct {
	// Socket is the unix socket's path; default $RUNTIME_DIRECTORY/ctl.sock
	// (systemd's RuntimeDirectory=), else DefaultCtlSocket; "off" disables
	// it. Created mode 0660: the validator's user and group may use it.
	Socket string `toml:"socket"`
	// Group is the socket's group (a name or number), whose members may
	// use it. Empty: $FAREGO_CTL_GROUP, which the unit sets to farego-ctl
	// (and gives the validator as a supplementary group), else the
	// validator's own group (farego under the unit, which also reads the
	// config, the keys and the devices). The bundle does not write it: a
	// validator of the release before refuses a key it does not know.
	Group string `toml:"group"`
}

// SelftestConfig configures farego-validator selftest.
type SelftestConfig struct {
	// TimeURL is an HTTP(S) URL of the settlement server (its /healthz)
	// whose Date header the clock check compares with, when the validator
	// is not running (a running one measures its offset from the acks).
	TimeURL string `toml:"time_url"`
}

// QueueConfig bounds the on-device queue.
type QueueConfig struct {
	MaxRecords  int   `toml:"max_records"`   // default 1,000,000
	MaxFileSize int64 `toml:"max_file_size"` // bytes; default 512 MiB (queue.DefaultMaxFileSize)
}

// MQTTConfig is the uplink to the settlement server; an empty Broker runs
// the validator offline only (taps queue up until one is configured).
type MQTTConfig struct {
	Broker         string   `toml:"broker"` // tcp://host:1883, ssl://host:8883
	TopicPrefix    string   `toml:"topic_prefix"`
	Username       string   `toml:"username"`
	Password       string   `toml:"password"`
	CAFile         string   `toml:"ca_file"`
	CertFile       string   `toml:"cert_file"`
	KeyFile        string   `toml:"key_file"`
	DeviceKey      string   `toml:"device_key"`       // the device's Ed25519 private key (PEM)
	FleetPublicKey string   `toml:"fleet_public_key"` // the operator's fleet key (PEM)
	BatchRecords   int      `toml:"batch_records"`
	Heartbeat      Duration `toml:"heartbeat"`
	AckTimeout     Duration `toml:"ack_timeout"`
}

// brokers is the broker URLs of Broker, in the order they are tried.
func (m *MQTTConfig) brokers() []string { return strings.Split(m.Broker, ",") }

// Duration is a time.Duration written as a Go duration string ("5s").
type Duration time.Duration

// UnmarshalText reads a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration like \"5s\" or \"2m\", got %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes a duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Date is a point in time in the configuration: a TOML date or date-time
// (2027-01-01, 2027-01-01T00:00:00Z), or the same as a string. A date
// alone is midnight UTC. A quoted date was refused in Go's own terms
// ("parsing time … as \"2006-01-02T15:04:05Z07:00\"").
type Date struct{ time.Time }

// UnmarshalTOML reads a TOML date-time, date or string.
func (d *Date) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case time.Time:
		// A local date or date-time (no offset) is taken as UTC.
		if strings.HasSuffix(v.Location().String(), "-local") { // the TOML package's names for them
			v = time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
		}
		d.Time = v
		return nil
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
			if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
				d.Time = t
				return nil
			}
		}
		return fmt.Errorf("want a date like 2027-01-01 or a date and time like 2027-01-01T06:00:00Z, got %q", v)
	}
	return fmt.Errorf("want a date like 2027-01-01 or a date and time like 2027-01-01T06:00:00Z, got %v", v)
}

// errConfig marks configuration errors (exit status 2).
var errConfig = errors.New("config")

// loadConfig reads and checks a config file.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		dir := filepath.Dir(path)
		return nil, fmt.Errorf("%w: %w%s", errConfig, err, notReadableFix(err, fmt.Sprintf(
			"chown root:farego %s && chmod 0640 %s, and its directory chown root:farego %s && chmod 0750 %s", path, path, dir, dir)))
	}
	c, err := parseConfig(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// notReadableFix says how to give the validator's user a file of the
// bundle it may not read ("" for another error than permission denied). A
// technician's checks run as root read everything; the service, user
// farego, stopped on "permission denied" alone when INSTALL.txt's chown
// and chmod lines were left out or done in another order.
func notReadableFix(err error, fix string) string {
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	return fmt.Sprintf(" (the validator's user, farego under the unit, may not read it: %s, as the bundle's INSTALL.txt does)", fix)
}

// passwordOpenToAll says ("" if not) that the config file holds the
// broker password and every user may read it: anyone on the device could
// log in to the broker as the device. A key_file so open is refused; a
// config so open warns (refused, it would stop buses that run today).
func passwordOpenToAll(path string, c *Config) (why, fix string) {
	if c.MQTT.Password == "" {
		return "", ""
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		return "", ""
	}
	return fmt.Sprintf("%s holds the broker password (mqtt.password) and every user may read it (mode %04o): anyone on the device can log in to the broker as this device", path, fi.Mode().Perm()),
		fmt.Sprintf("chown root:farego %s && chmod 0640 %s", path, path)
}

// badType matches the TOML decoder's error for a value of the wrong type.
var badType = regexp.MustCompile(`\(last key "([^"]+)"\): incompatible types: TOML value has type ([^;]+); destination has type (.+)$`)

// typeHint says how to write a value the decoder found of the wrong type:
// its error names Go types alone ("TOML value has type int64; destination
// has type string" for route = 42, "map[string]any; … slice" for a
// [scanner] written with one bracket), which tells a technician nothing.
func typeHint(err error) string {
	m := badType.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	key, got, want := m[1], m[2], m[3]
	short := key[strings.LastIndex(key, ".")+1:]
	switch {
	case want == "string":
		return fmt.Sprintf(" (%s is text: write it in quotes, %s = \"…\")", key, short)
	case want == "integer":
		return fmt.Sprintf(" (%s is a number: write it without quotes)", key)
	case want == "boolean":
		return fmt.Sprintf(" (%s is true or false, without quotes)", key)
	case want == "slice" && strings.HasPrefix(got, "map"):
		return fmt.Sprintf(" (write [[%s]], with two brackets: one such table for each)", key)
	}
	return ""
}

// parseConfig decodes TOML strictly (unknown keys are errors) and checks
// every field.
func parseConfig(data []byte, dir string) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than %d", errConfig, len(data), maxConfigSize)
	}
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w%s", errConfig, err, typeHint(err))
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown keys: %s", errConfig, strings.Join(keys, ", "))
	}
	c.dir = dir
	// "0s" written out is not "left out": a max_age of 0 would accept no
	// code, and a skew of 0 is no tolerance, as farego-validator check's
	// --skew 0 (both once became the defaults without a word).
	if md.IsDefined("policy", "max_age") && c.Policy.MaxAge == 0 {
		return nil, fmt.Errorf("%w: policy.max_age 0s would accept no code (leave it out for the default %v)", errConfig, paycode.DefaultMaxAge)
	}
	c.Policy.noSkew = md.IsDefined("policy", "skew") && c.Policy.Skew == 0
	return &c, c.check()
}

func (c *Config) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errConfig}, a...)...)
	}
	if err := record.ValidDeviceID(c.DeviceID); err != nil {
		return bad("device_id: %v", err)
	}
	if c.Route == "" {
		return bad("route is required")
	}
	if err := agent.CheckAssignment(c.Route, c.Vehicle); err != nil {
		return bad("route or vehicle: %v", err)
	}
	if u := c.Selftest.TimeURL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return bad("selftest.time_url must be an http:// or https:// URL, got %q", u)
	}
	if c.DataDir == "" {
		return bad("data_dir is required")
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return bad("log.level must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return bad("log.format must be text or json, got %q", c.Log.Format)
	}
	if c.Policy.MaxAge < 0 {
		return bad("policy.max_age %v must not be negative (a duration like \"120s\"; leave it out for the default)", time.Duration(c.Policy.MaxAge))
	}
	if c.Policy.Skew < 0 {
		return bad("policy.skew %v must not be negative (a duration like \"30s\"; leave it out for the default)", time.Duration(c.Policy.Skew))
	}
	// The server re-verifies every code with its own policy (2 m and 30 s
	// by default): a validator more lenient lets riders through whom the
	// server then charges nothing (invalid_code). "2h" for "120s" is a
	// typo to refuse, not free rides.
	if time.Duration(c.Policy.MaxAge) > paycode.MaxPolicyAge || time.Duration(c.Policy.Skew) > paycode.MaxPolicySkew {
		return bad("policy.max_age %v and policy.skew %v: at most %v and %v (keep them within the server's --max-age and --skew: a code older than the server allows rides free)",
			time.Duration(c.Policy.MaxAge), time.Duration(c.Policy.Skew), paycode.MaxPolicyAge, paycode.MaxPolicySkew)
	}
	if len(c.Scanners) == 0 {
		return bad("at least one [[scanner]] is required")
	}
	var names, paths []string
	for i, s := range c.Scanners {
		if s.Name == "" || s.Path == "" {
			return bad("scanner %d: name and path are required", i+1)
		}
		names, paths = append(names, s.Name), append(paths, s.Path)
	}
	if err := record.CheckScanners(names, paths); err != nil {
		return bad("%v", err)
	}
	switch c.Feedback.Color {
	case "", "auto", "always", "never":
	default:
		return bad("feedback.color must be auto, always or never, got %q", c.Feedback.Color)
	}
	if err := c.checkHardware(); err != nil {
		return err
	}
	if c.Queue.MaxRecords < 0 {
		return bad("queue.max_records %d must not be negative (0 or left out: the default)", c.Queue.MaxRecords)
	}
	if c.Queue.MaxFileSize < 0 {
		return bad("queue.max_file_size %d must not be negative (0 or left out: the default)", c.Queue.MaxFileSize)
	}
	if c.Queue.MaxFileSize != 0 {
		if err := queue.CheckFileSize(c.Queue.MaxFileSize); err != nil {
			return bad("queue.max_file_size %v", err)
		}
	}
	// Negative values other than -1 are typos more likely than meant: each
	// would turn a fraud control off without a word.
	if c.Policy.RiskCap < -1 {
		return bad("policy.risk_cap %d: a count of taps, 0 for the default (10), or -1 to turn the cap off", c.Policy.RiskCap)
	}
	if pw := time.Duration(c.Policy.PassbackWindow); pw < 0 && pw != -time.Second {
		return bad("policy.passback_window %v: a duration like \"5s\", or \"-1s\" to turn the passback check off", pw)
	}
	if mo := time.Duration(c.Policy.MaxClockOffset); mo < 0 && mo != -time.Second {
		return bad("policy.max_clock_offset %v: a duration like \"30s\", or \"-1s\" to turn the clock check off", mo)
	}
	// A broker URL the uplink cannot use is a config error like any other,
	// found before the validator makes its data directory and queue file
	// (it was found only when the uplink started, after both, in the
	// uplink's own terms: "broker URL 1 of 1 is not a URL").
	if c.MQTT.Broker != "" {
		brokers := c.MQTT.brokers()
		for i, b := range brokers {
			if err := uplink.CheckBroker(b); err != nil {
				// The check's errors never repeat a password of the URL.
				return bad("mqtt.broker (URL %d of %d): %v", i+1, len(brokers), err)
			}
			// The uplink refuses a login in the URL, but only once it
			// starts (after the queue file), in its own terms; selftest
			// printed the URL, password and all, on its broker line.
			if u, err := url.Parse(b); err == nil && u.User != nil {
				return bad("mqtt.broker (URL %d of %d) %s holds a login: put the user name and password in mqtt.username and mqtt.password, and leave them out of the URL",
					i+1, len(brokers), u.Redacted())
			}
		}
	}
	if c.MQTT.Broker != "" && (c.MQTT.DeviceKey == "" || c.MQTT.FleetPublicKey == "") {
		return bad("mqtt.device_key and mqtt.fleet_public_key are required with mqtt.broker")
	}
	if c.Update.Server != "" && c.MQTT.Broker == "" {
		return bad("update.server needs [mqtt] broker: a validator learns of rollouts over MQTT (configure [mqtt], or leave [update] out)")
	}
	if (c.MQTT.CertFile == "") != (c.MQTT.KeyFile == "") {
		return bad("mqtt.cert_file and mqtt.key_file go together")
	}
	return nil
}

// path resolves p relative to the config file's directory.
func (c *Config) path(p string) string {
	if p == "" || p == "-" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// configFlag adds the --config FILE flag of the subcommands that read the
// validator config.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "validator config file (TOML) (required)")
}

// parseConfigArgs parses the arguments of a subcommand that takes
// --config FILE and no other argument. When ok is false the subcommand
// exits with code (what went wrong is written).
func parseConfigArgs(fs *flag.FlagSet, configPath *string, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	name := "farego-validator " + fs.Name()
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return cli.Exit(name, err, stderr), false
	}
	if *configPath == "" || fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s: --config FILE is required (and nothing else)\n", name)
		return exitUsage, false
	}
	return exitOK, true
}

// codePolicy is the policy codes are verified with: a skew written as 0 is
// none (paycode's negative), one left out the default.
func (p PolicyConfig) codePolicy() paycode.Policy {
	skew := time.Duration(p.Skew)
	if p.noSkew {
		skew = -1
	}
	return paycode.Policy{MaxAge: time.Duration(p.MaxAge), Skew: skew}
}

// agentConfig is the agent's configuration from the validator config: what
// run decides taps with and what selftest reads the device state with.
func (c *Config) agentConfig() agent.Config {
	return agent.Config{
		DeviceID: c.DeviceID, Route: c.Route, Vehicle: c.Vehicle,
		Policy:         c.Policy.codePolicy(),
		PassbackWindow: time.Duration(c.Policy.PassbackWindow), RiskCap: c.Policy.RiskCap, MinClock: c.Policy.MinClock.Time,
		MaxClockOffset: time.Duration(c.Policy.MaxClockOffset),
		Language:       c.language(),
	}
}
