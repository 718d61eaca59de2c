package scanner

import (
	"context"
	"sync"
)

// Source is anything that delivers frames until its context is done: a
// [Serial] reader, a [LineSource], or a test double.
type Source interface {
	// Run sends frames to out until ctx is done or the source ends. It must
	// not close out, and must not send on it after returning.
	Run(ctx context.Context, out chan<- Frame) error
}

var (
	_ Source = (*Serial)(nil)
	_ Source = (*LineSource)(nil)
)

// RunAll runs every source at once, all delivering into out (the frames say
// which scanner they came from), and closes out once all of them have
// returned, so the consumer can range over it.
//
// It returns when ctx is done and every source has stopped, or when every
// source has ended by itself (a line source at end of input). If a source
// fails, RunAll stops the others and returns that first error.
func RunAll(ctx context.Context, sources []Source, out chan<- Frame) error {
	defer close(out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, src := range sources {
		wg.Go(func() {
			if err := src.Run(ctx, out); err != nil {
				once.Do(func() {
					first = err
					cancel()
				})
			}
		})
	}
	wg.Wait()
	return first
}
