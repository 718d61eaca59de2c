//go:build !farego_testhooks

package main

import "log/slog"

// The release build's test hooks do nothing: the fault injection of the
// OTA tests is in testhooks.go, built only with -tags farego_testhooks.

func crashAtStart(*slog.Logger) {}

func silentTapLoop(*slog.Logger) bool { return false }
