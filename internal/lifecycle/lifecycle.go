// Package lifecycle is the open/close state machine of a throttler that runs
// one monitor goroutine bound to Open's context: new, opening, open, closed.
//
// Start ties the monitor's life to a gate: the gate reads as released the
// moment the context ends (gate.Bind), is released by a context.AfterFunc
// without waiting for the monitor to look, and is released again when the
// monitor returns for any reason, so that nothing can stay throttled with no
// one left to clear it. Close releases, cancels and waits for the monitor.
package lifecycle

import (
	"context"
	"errors"
	"sync"

	"github.com/throttlekit/throttler/internal/gate"
)

// Errors of a lifecycle step out of order; the root package maps them to its
// sentinels.
var (
	ErrAlreadyOpen = errors.New("already open")
	ErrClosed      = errors.New("closed")
	ErrNotOpen     = errors.New("not open")
)

type phase int

const (
	phaseNew phase = iota
	phaseOpening
	phaseOpen
	phaseClosed
)

// Runner holds one throttler's lifecycle. Its zero value is new.
type Runner struct {
	mu      sync.Mutex // guards every field
	phase   phase
	ctx     context.Context // the monitor's: ends on Close or with Open's context
	cancel  context.CancelFunc
	done    chan struct{} // closed when the monitor has returned
	unwatch func() bool   // stops the AfterFunc that releases on the context's end
}

// Begin moves a new Runner (or one whose Open failed) to opening; Open does
// its first measurement after it, without the lock.
func (r *Runner) Begin() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseOpening, phaseOpen:
		return ErrAlreadyOpen
	case phaseClosed:
		return ErrClosed
	}
	r.phase = phaseOpening
	return nil
}

// Abort ends a failed Open: the Runner is new again, unless Close ran
// meanwhile (it then stays closed and Abort returns ErrClosed).
func (r *Runner) Abort() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseClosed {
		return ErrClosed
	}
	r.phase = phaseNew
	return nil
}

// Start opens the Runner and runs monitor in a goroutine with a context that
// ends with ctx or with Close; g is bound to that context and released when
// it ends or monitor returns. before runs under the Runner's lock just
// before the goroutine starts (to publish the first verdict), so that no
// Close can slip between it and the start. Start returns ErrClosed, and
// starts nothing, if Close ran since Begin.
func (r *Runner) Start(ctx context.Context, g *gate.Gate, before func(), monitor func(ctx context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseClosed {
		return ErrClosed
	}
	r.phase = phaseOpen
	if before != nil {
		before()
	}
	mctx, cancel := context.WithCancel(ctx)
	r.ctx, r.cancel, r.done = mctx, cancel, make(chan struct{})
	g.Bind(mctx.Done())
	// Release the moment the context ends, not when the monitor next looks:
	// waiters must not wait out a measurement in flight.
	r.unwatch = context.AfterFunc(mctx, func() { g.Release() })
	go func(done chan<- struct{}) {
		defer close(done)
		defer g.Release()
		monitor(mctx)
	}(r.done)
	return nil
}

// Close releases g, cancels the monitor and waits for it to return. It is
// idempotent and reports whether this call closed the Runner.
func (r *Runner) Close(g *gate.Gate) bool {
	r.mu.Lock()
	if r.phase == phaseClosed {
		r.mu.Unlock()
		return false
	}
	r.phase = phaseClosed
	cancel, done, unwatch := r.cancel, r.done, r.unwatch
	r.mu.Unlock()

	g.Release()
	if cancel != nil {
		cancel()
		<-done
		unwatch()
	}
	return true
}

// Closing reports whether Close has been called: a monitor that stops uses
// it to tell Close (which logs) from the end of Open's context.
func (r *Runner) Closing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase == phaseClosed
}

// CheckOpen is nil while open, ErrClosed after Close, ErrNotOpen otherwise.
func (r *Runner) CheckOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseOpen:
		return nil
	case phaseClosed:
		return ErrClosed
	}
	return ErrNotOpen
}

// Context is the monitor's context while open: it ends on Close or with
// Open's context, so work done for a caller can stop the moment the
// throttler does. It is ErrClosed after Close and ErrNotOpen before Start.
func (r *Runner) Context() (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseOpen:
		return r.ctx, nil
	case phaseClosed:
		return nil, ErrClosed
	}
	return nil, ErrNotOpen
}
