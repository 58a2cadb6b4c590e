// Package lifecycle is the open/close state machine every throttler shares:
// new, opening, open, closed.
//
// Open calls Begin, which returns the throttler's life: a context that ends
// with Open's context or with Close. Open does its first measurement, then
// calls Start, or Abort when it failed (a failed Open may be retried).
// Start may run a monitor goroutine for the life; a throttler that needs
// none (it publishes on its callers' calls) starts none.
//
// A Runner given a gate (Gate) ties it to the life: the gate reads as
// released the moment the life ends (gate.Bind), is released by a
// context.AfterFunc without waiting for the monitor to look, and is
// released again when the monitor returns for any reason, so that nothing
// can stay throttled with no one left to clear it. Close releases, cancels,
// waits for an Open in flight and for the monitor.
//
// The Runner writes the lifecycle's log lines (stopped, closed); the gate
// writes the verdict's (throttled, still throttled, resumed).
package lifecycle

import (
	"context"
	"log/slog"
	"sync"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/sentinel"
)

type phase int

const (
	phaseNew phase = iota
	phaseOpening
	phaseOpen
	phaseClosed
)

// Runner holds one throttler's lifecycle. Its zero value is new and logs
// nothing; set the exported fields before first use.
type Runner struct {
	// Gate, if set, is bound to the life and released when it ends.
	Gate *gate.Gate
	// Log, if set, gets the "stopped" and "closed" lines.
	Log *slog.Logger
	// Subject begins the lines ("throttler" when empty); Released ends the
	// stopped line ("the throttler is released" when empty).
	Subject, Released string
	// ClosedArgs, if set, adds attributes to the closed line, which is
	// written only after a successful Open when OnlyOpenedLogsClose.
	ClosedArgs          func() []any
	OnlyOpenedLogsClose bool
	// OnEnd, if set, runs once when the life of a started Runner ends (Close
	// or Open's context), after the gate's release.
	OnEnd func()

	mu        sync.Mutex // guards every field below
	phase     phase
	opened    bool               // Start succeeded once
	life      context.Context    // ends on Close or with Open's context
	cancel    context.CancelFunc // ends life
	opening   chan struct{}      // closed when the Open in flight calls Start or Abort
	done      chan struct{}      // closed when the monitor has returned; nil without one
	unwatch   func() bool        // stops the AfterFunc that runs when life ends
	unwatched chan struct{}      // closed when that AfterFunc's function has run
}

// Begin moves a new Runner (or one whose Open failed) to opening and
// returns the life, which ends with ctx or with Close: Open measures with
// it, so that Close ends an Open in flight.
func (r *Runner) Begin(ctx context.Context) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseOpening, phaseOpen:
		return nil, sentinel.ErrAlreadyOpen
	case phaseClosed:
		return nil, sentinel.ErrClosed
	}
	r.phase = phaseOpening
	r.life, r.cancel = context.WithCancel(ctx)
	r.opening = make(chan struct{})
	return r.life, nil
}

// Abort ends a failed Open: the Runner is new again, unless Close ran
// meanwhile (it then stays closed and Abort returns ErrClosed).
func (r *Runner) Abort() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancel()
	close(r.opening)
	if r.phase == phaseClosed {
		return sentinel.ErrClosed
	}
	r.phase = phaseNew
	return nil
}

// Start opens the Runner and, when monitor is not nil, runs it in a
// goroutine with the life. before runs under the Runner's lock just before
// (to publish the first verdict), so that no Close can slip between it and
// the start. Start returns ErrClosed, and starts nothing, if Close ran
// since Begin.
func (r *Runner) Start(before func(), monitor func(life context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(r.opening)
	if r.phase == phaseClosed {
		r.cancel()
		return sentinel.ErrClosed
	}
	r.phase, r.opened = phaseOpen, true
	if r.Gate != nil {
		r.Gate.Account() // before the first verdict, which is then a change
	}
	if before != nil {
		before()
	}
	life := r.life
	if r.Gate != nil {
		r.Gate.Bind(life.Done())
	}
	// Release the moment the life ends, not when the monitor next looks:
	// waiters must not wait out a measurement in flight.
	unwatched := make(chan struct{})
	r.unwatched = unwatched
	r.unwatch = context.AfterFunc(life, func() {
		defer close(unwatched)
		r.release()
		if r.OnEnd != nil {
			r.OnEnd()
		}
		if !r.Closing() && r.Log != nil {
			r.Log.Info(r.subject()+": stopped: Open's context ended; "+r.released(), "cause", context.Cause(life))
		}
	})
	if monitor != nil {
		r.done = make(chan struct{})
		go func(done chan<- struct{}) {
			defer close(done)
			defer r.release()
			monitor(life)
		}(r.done)
	}
	return nil
}

func (r *Runner) release() {
	if r.Gate != nil {
		r.Gate.Release()
	}
}

func (r *Runner) subject() string {
	if r.Subject == "" {
		return "throttler"
	}
	return r.Subject
}

func (r *Runner) released() string {
	if r.Released == "" {
		return "the throttler is released"
	}
	return r.Released
}

// Close releases the gate, ends the life, and waits for an Open in flight,
// the monitor and OnEnd. It is idempotent and reports whether this call
// closed the Runner.
func (r *Runner) Close() bool {
	r.mu.Lock()
	if r.phase == phaseClosed {
		r.mu.Unlock()
		return false
	}
	prev := r.phase
	r.phase = phaseClosed
	cancel, opening, done, unwatch, unwatched, opened := r.cancel, r.opening, r.done, r.unwatch, r.unwatched, r.opened
	r.mu.Unlock()

	r.release()
	if cancel != nil {
		cancel()
	}
	if prev == phaseOpening {
		<-opening // Open sees the close and cleans up
	}
	if done != nil {
		<-done
	}
	if unwatch != nil && !unwatch() {
		<-unwatched // the end of the life is being handled: let it finish
	}
	if r.Log != nil && (opened || !r.OnlyOpenedLogsClose) {
		var args []any
		if r.ClosedArgs != nil {
			args = r.ClosedArgs()
		}
		r.Log.Info(r.subject()+": closed", args...)
	}
	return true
}

// Closing reports whether Close has been called.
func (r *Runner) Closing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase == phaseClosed
}

// CheckOpen is nil while open, sentinel.ErrClosed after Close, sentinel.ErrNotOpen otherwise.
func (r *Runner) CheckOpen() error {
	_, err := r.Context()
	return err
}

// Context is the life while open: it ends on Close or with Open's context,
// so work done for a caller can stop the moment the throttler does. It is
// ErrClosed after Close and ErrNotOpen before Start.
func (r *Runner) Context() (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseOpen:
		return r.life, nil
	case phaseClosed:
		return nil, sentinel.ErrClosed
	}
	return nil, sentinel.ErrNotOpen
}
