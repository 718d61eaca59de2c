package release

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/farego/farego/agent"
)

// A build for another machine cannot be caught by the device: a binary
// that dies before its first line of Go runs cannot count its own starts,
// so the update's rollback never comes and the validator stays down until a
// technician replaces the binary. So Add checks what the binary is, from
// the build information every Go program carries (also stripped, also
// built with -trimpath): a Go program, for linux, for the architecture
// the release names, and not one of farego's other programs.

// goArchRE is an architecture name a validator asks for (update.Arch): a
// GOARCH, or armvN (GOARCH arm with GOARM N). A release under any other
// name would never be fetched.
var goArchRE = regexp.MustCompile(`^(386|amd64|arm64|armv[5-7]|loong64|mips|mipsle|mips64|mips64le|ppc64|ppc64le|riscv64|s390x)$`)

// archAliases are other names of the architectures validators ask for
// (Debian's, the kernel's), for the refusal's hint.
var archAliases = map[string]string{
	"armhf": "armv7", "armel": "armv5", "arm": "armv7", "armv7l": "armv7", "armv6l": "armv6",
	"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64", "i386": "386", "i686": "386",
}

// checkArch refuses an architecture name no validator asks for.
func checkArch(arch string) error {
	if goArchRE.MatchString(arch) {
		return nil
	}
	hint := "validators ask for their GOARCH, with armv5, armv6 or armv7 for 32-bit ARM (arm64, amd64, …)"
	if a, ok := archAliases[strings.ToLower(arch)]; ok {
		hint = fmt.Sprintf("%s is %s to a validator", arch, a)
	}
	return fmt.Errorf("%w: no validator asks for architecture %q, so none would install this release: %s", ErrInvalid, arch, hint)
}

// otherPrograms are farego's programs that are not the validator.
var otherPrograms = []string{"farego-settlement", "farego-provision", "farego-rider", "farego-sim", "farego-demo"}

// checkBinary checks the stored binary at path for a release for arch.
func checkBinary(path, version, arch string) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // not the name of the copy being checked
		}
		return fmt.Errorf("%w: the file is not a Go program with build information (%v): upload the farego-validator that make dist builds",
			ErrInvalid, err)
	}
	for _, p := range otherPrograms {
		if info.Path == "github.com/farego/farego/cmd/"+p {
			return fmt.Errorf("%w: the file is %s, not farego-validator", ErrInvalid, p)
		}
	}
	set := map[string]string{}
	for _, s := range info.Settings {
		set[s.Key] = s.Value
	}
	if goos := set["GOOS"]; goos != "linux" {
		return fmt.Errorf("%w: the binary is built for %s (GOOS), not linux", ErrInvalid, goos)
	}
	built := set["GOARCH"]
	if built == "arm" {
		goarm, _, _ := strings.Cut(set["GOARM"], ",") // "7" or "7,softfloat"
		if goarm == "" {
			goarm = "7"
		}
		built = "armv" + goarm
	}
	if built != arch {
		return fmt.Errorf("%w: the binary is built for %s, not %s: a validator cannot start it, nor roll it back", ErrInvalid, built, arch)
	}
	return checkStamp(path, version)
}

// checkStamp refuses a binary that does not carry its release's version:
// a validator that installs it reports another version and rolls it back,
// the whole fleet in turn. make stamps the version into the program twice:
// as agent.Version and between markers (agent.VersionStamp,
// "farego-version:1.4.0/"); a build without VERSION= carries the commit.
// Go does not record -ldflags in the build information of a -trimpath
// build, so the binary's bytes are searched: for the marked version when
// the binary has a stamp, else (a build from before the stamp, or not by
// make) for the version's bytes alone, which a dependency's version string
// may hold by chance (the device's rollback stays the guard then).
func checkStamp(path, version string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	bare := strings.TrimPrefix(version, "v")
	found := bytes.Contains(data, []byte(bare))
	if bytes.Contains(data, []byte(agent.StampPrefix)) {
		found = bytes.Contains(data, []byte(agent.StampPrefix+bare+"/")) || bytes.Contains(data, []byte(agent.StampPrefix+"v"+bare+"/"))
	}
	if !found {
		return fmt.Errorf("%w: the binary does not carry the version %s: build it with make dist VERSION=%s "+
			"(linux armv7 and arm64; make build VERSION=%s for this machine's) "+
			"(a validator would install it, report another version and roll it back)", ErrInvalid, version, bare, bare)
	}
	return nil
}
