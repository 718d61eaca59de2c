package update

import "runtime/debug"

// goarm returns the GOARM this binary was built with ("7" by default).
func goarm() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" && s.Value != "" {
				return s.Value[:1] // "7" or "7,softfloat"
			}
		}
	}
	return "7"
}
