package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// SignalContext is signal.NotifyContext for SIGINT and SIGTERM in a
// one-shot command's main, with the exit to end it by: exit(code) ends
// the process with status code or, once such a signal came, by that
// signal (after the command has finished or cut its work short), as it
// would have ended without a handler. A shell runs a script's next
// command after one that exited with a status, even 130: a technician's
// loop (for id in …; do farego-provision device …; done) went on to the
// next device after every Ctrl-C, and stopped only when killed.
func SignalContext() (ctx context.Context, exit func(code int)) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	got := make(chan os.Signal, 1)
	go func() {
		s := <-ch
		got <- s
		cancel()
	}()
	return ctx, func(code int) {
		signal.Stop(ch)
		if ctx.Err() != nil {
			s := <-got
			signal.Reset(s)
			if sig, ok := s.(syscall.Signal); ok && syscall.Kill(os.Getpid(), sig) == nil {
				time.Sleep(time.Second) // the signal ends the process meanwhile
			}
		}
		cancel()
		os.Exit(code)
	}
}
