// Package gate is the state-and-broadcast primitive every throttler shares.
//
// A Gate holds one immutable state behind an atomic pointer. Readers (the hot
// path: IsThrottled, an unthrottled BlockWait) do a single atomic load. Writers
// (the monitor goroutine, UpdateLag, Close) replace the state under a mutex.
// Each throttled epoch owns a wake channel; the write that ends the epoch
// (clear or release) closes it, which wakes every waiter at once, however many
// there are, without a sleep or a poll.
package gate

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Wait.
var (
	// ErrReleased means the gate was released while the caller waited.
	ErrReleased = errors.New("gate released")
	// ErrMaxWait means the per-call cap elapsed while still throttled.
	ErrMaxWait = errors.New("maximum wait elapsed")
)

// state is immutable once published: readers use it without a lock.
type state struct {
	throttled bool
	released  bool
	reason    string
	// wake is closed when this throttled epoch ends. States of one epoch
	// (throttled with a changing reason) share it; it is nil when clear.
	wake chan struct{}
}

// clearState is shared by every gate: a clear state carries no channel, so
// publishing "clear" needs no allocation.
var clearState = &state{}

// Gate is the throttled/clear state plus a broadcast to waiters. Its zero
// value is clear and ready to use. A Gate must not be copied after first use.
type Gate struct {
	cur atomic.Pointer[state] // nil means clear
	mu  sync.Mutex            // serialises writers; readers never take it
}

// Throttled reports whether the gate is throttled: one atomic load, no lock,
// no allocation.
func (g *Gate) Throttled() bool {
	s := g.cur.Load()
	return s != nil && s.throttled
}

// Released reports whether Release has been called.
func (g *Gate) Released() bool {
	s := g.cur.Load()
	return s != nil && s.released
}

// Reason is the reason given with the current throttled state, "" when clear.
func (g *Gate) Reason() string {
	if s := g.cur.Load(); s != nil {
		return s.reason
	}
	return ""
}

// Set publishes a new state and reports whether the throttled flag flipped.
// Setting clear wakes every waiter. After Release, Set does nothing: a poll
// that finishes after Close must not throttle a closed throttler again.
func (g *Gate) Set(throttled bool, reason string) (flipped bool) {
	if !throttled {
		reason = ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cur.Load()
	if old == nil {
		old = clearState
	}
	if old.released {
		return false
	}
	if old.throttled == throttled && old.reason == reason {
		return false // nothing to publish; avoids an allocation per poll
	}
	switch {
	case !throttled:
		g.cur.Store(clearState)
		close(old.wake)
	case old.throttled: // same epoch, new reason: keep the waiters' channel
		g.cur.Store(&state{throttled: true, reason: reason, wake: old.wake})
	default:
		g.cur.Store(&state{throttled: true, reason: reason, wake: make(chan struct{})})
	}
	return old.throttled != throttled
}

// Release clears the gate for good and wakes every waiter. It is idempotent
// and reports whether this call released the gate.
func (g *Gate) Release() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cur.Load()
	if old != nil && old.released {
		return false
	}
	g.cur.Store(&state{released: true})
	if old != nil && old.wake != nil {
		close(old.wake)
	}
	return true
}

// Wait returns nil at once when the gate is clear. Otherwise it blocks until
// the throttled epoch ends (nil, or ErrReleased when it ended by Release),
// ctx is done (ctx.Err()), or max elapses (ErrMaxWait); max <= 0 means no cap.
//
// The clear path is small enough to inline: one atomic load and two loads of
// immutable fields. Only the throttled path allocates (its timer). Any number
// of goroutines may wait at once.
func (g *Gate) Wait(ctx context.Context, max time.Duration) error {
	if s := g.cur.Load(); s == nil || !s.throttled && !s.released {
		return nil
	}
	return g.wait(ctx, max)
}

func (g *Gate) wait(ctx context.Context, max time.Duration) error {
	s := g.cur.Load()
	if !s.throttled {
		if s.released {
			return ErrReleased
		}
		return nil // cleared since Wait looked
	}
	var expired <-chan time.Time
	if max > 0 {
		t := time.NewTimer(max)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-s.wake:
		if g.Released() {
			return ErrReleased
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
		return ErrMaxWait
	}
}
