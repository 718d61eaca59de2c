package hwtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// Environment variables that turn a skip for a missing kernel part into a
// failure.
const (
	RequireGPIOSim = "FAREGO_REQUIRE_GPIO_SIM"
	RequireUinput  = "FAREGO_REQUIRE_UINPUT"
)

// Unavailable skips the test because a kernel part is missing, or fails it
// when the environment variable env is set.
func Unavailable(tb testing.TB, env, what string) {
	tb.Helper()
	if os.Getenv(env) != "" {
		tb.Fatalf("%s unavailable, and %s is set: %s", env, env, what)
	}
	tb.Skipf("%s (set %s=1 to fail instead of skipping)", what, env)
}

// configfs is where configfs is mounted; gpioSimDir is gpio-sim's directory
// in it.
const (
	configfs   = "/sys/kernel/config"
	gpioSimDir = configfs + "/gpio-sim"
)

var simSeq atomic.Int64

// SimChip is one live gpio-sim chip.
type SimChip struct {
	// Chip is the chip's name, such as "gpiochip3" (its device is
	// /dev/gpiochip3).
	Chip string
	// Names are the line names, by offset.
	Names []string
	dir   string // the chip's device directory in sysfs
}

// Value reads the level the consumer drives on line offset: 0 or 1, as
// seen on the simulated pin (after any active-low inversion).
func (c *SimChip) Value(tb testing.TB, offset int) int {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "sim_gpio"+strconv.Itoa(offset), "value"))
	if err != nil {
		tb.Fatalf("gpio-sim: read line %d: %v", offset, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatalf("gpio-sim: line %d value %q", offset, b)
	}
	return v
}

// GPIOSim makes a simulated GPIO chip with one line per name (the names are
// made unique to the test process by a suffix, see SimChip.Names) and
// removes it when the test ends. It skips (or fails, see [Unavailable])
// when the kernel has no gpio-sim.
func GPIOSim(tb testing.TB, names ...string) *SimChip {
	tb.Helper()
	if err := loadGPIOSim(); err != nil {
		Unavailable(tb, RequireGPIOSim, "no gpio-sim here: "+err.Error())
	}
	dir := filepath.Join(gpioSimDir, fmt.Sprintf("farego-%d-%d", os.Getpid(), simSeq.Add(1)))
	bank := filepath.Join(dir, "bank0")
	var made []string // directories to remove, innermost last
	tb.Cleanup(func() {
		os.WriteFile(filepath.Join(dir, "live"), []byte("0"), 0)
		for i := len(made) - 1; i >= 0; i-- {
			if err := os.Remove(made[i]); err != nil {
				tb.Errorf("gpio-sim cleanup: %v", err)
			}
		}
	})
	mkdir := func(d string) {
		tb.Helper()
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatalf("gpio-sim: %v", err)
		}
		made = append(made, d)
	}
	write := func(f, v string) {
		tb.Helper()
		if err := os.WriteFile(f, []byte(v), 0); err != nil {
			tb.Fatalf("gpio-sim: %v", err)
		}
	}
	mkdir(dir)
	mkdir(bank)
	write(filepath.Join(bank, "num_lines"), strconv.Itoa(len(names)))
	c := &SimChip{}
	for i, n := range names {
		line := filepath.Join(bank, "line"+strconv.Itoa(i))
		mkdir(line)
		unique := fmt.Sprintf("%s-%d-%d", n, os.Getpid(), simSeq.Load())
		write(filepath.Join(line, "name"), unique)
		c.Names = append(c.Names, unique)
	}
	write(filepath.Join(dir, "live"), "1")
	read := func(f string) string {
		tb.Helper()
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatalf("gpio-sim: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	c.Chip = read(filepath.Join(bank, "chip_name"))
	c.dir = filepath.Join("/sys/devices/platform", read(filepath.Join(dir, "dev_name")), c.Chip)
	return c
}

// loadGPIOSim makes gpio-sim's configfs directory appear if it can: mount
// configfs, load the module.
func loadGPIOSim() error {
	if _, err := os.Stat(gpioSimDir); err == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(configfs, "..")); err == nil {
		if _, err := os.Stat(configfs); err == nil {
			// Mounting fails harmlessly if it is mounted already or we are not root.
			syscall.Mount("configfs", configfs, "configfs", 0, "")
		}
	}
	if p, err := exec.LookPath("modprobe"); err == nil {
		exec.Command(p, "gpio-sim").Run()
	}
	if _, err := os.Stat(gpioSimDir); err != nil {
		var why []string
		if _, err := os.Stat(configfs); err != nil {
			why = append(why, "no configfs at "+configfs)
		}
		if _, err := os.Stat("/dev/gpiochip0"); errors.Is(err, os.ErrNotExist) {
			why = append(why, "no /dev/gpiochip*")
		}
		why = append(why, "needs root and a kernel with CONFIG_GPIO_SIM and CONFIG_CONFIGFS_FS (modprobe gpio-sim)")
		return errors.New(strings.Join(why, "; "))
	}
	return nil
}

// Uinput returns the path of the uinput device, loading the module if it
// can, or skips (or fails, see [Unavailable]) when the kernel has none.
func Uinput(tb testing.TB) string {
	tb.Helper()
	const path = "/dev/uinput"
	if _, err := os.Stat(path); err != nil {
		if p, err := exec.LookPath("modprobe"); err == nil {
			exec.Command(p, "uinput").Run()
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		Unavailable(tb, RequireUinput, "no usable /dev/uinput here ("+err.Error()+"): needs root and a kernel with CONFIG_INPUT_UINPUT (modprobe uinput)")
	}
	f.Close()
	return path
}
