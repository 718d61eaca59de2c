//go:build !farego_testhooks

package main

import "log/slog"

// crashAtStart does nothing: the fault injection of the OTA tests is in
// testhooks.go, built only with -tags farego_testhooks.
func crashAtStart(*slog.Logger) {}
