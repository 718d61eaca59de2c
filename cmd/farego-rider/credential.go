package main

import (
	"context"
	"fmt"
	"io"

	"github.com/farego/farego/cmd/internal/cli"
)

func cmdCredential(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("credential")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	return fetchCredential(ctx, *statePath, stdout)
}

func fetchCredential(ctx context.Context, path string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	var out struct {
		Serial     uint32 `json:"serial"`
		NotAfter   string `json:"not_after"`
		Credential string `json:"credential"`
		TokenSeed  string `json:"token_seed"`
	}
	if err := s.call(ctx, path, "POST", fmt.Sprintf("%s/v1/accounts/%d/credentials", s.Server, s.Account), nil, &out); err != nil {
		return err
	}
	s.Credential, s.TokenSeed, s.NotAfter, s.Counter = out.Credential, out.TokenSeed, out.NotAfter, 0
	if err := s.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "credential %d for account %d, valid until %s; codes now work offline\n", out.Serial, s.Account, out.NotAfter)
	return nil
}
