package agent

// Version is the software version, set at build time with
// -ldflags "-X github.com/farego/farego/agent.Version=…". It is recorded in
// every tap record.
var Version = "dev"

// VersionStamp is set by make with Version, as StampPrefix + VERSION + "/":
// the version between markers, which farego-settlement release add looks
// for in a validator binary's bytes (the version alone may be found in a
// dependency's version strings, so a build without VERSION= passed for a
// release of it). Empty in a build without make.
var VersionStamp = ""

// StampPrefix starts VersionStamp.
const StampPrefix = "farego-version:"

func init() {
	// make sets both from one VERSION; a stamp that names another version
	// (a build that set one and not the other) is not believed.
	if VersionStamp != "" && VersionStamp != StampPrefix+Version+"/" {
		VersionStamp = ""
	}
}
