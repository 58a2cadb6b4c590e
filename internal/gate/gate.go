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
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/sentinel"
)

// state is immutable once published: readers use it without a lock.
type state struct {
	throttled bool
	released  bool
	reason    string
	// ep is the throttled epoch; states of one epoch (throttled with a
	// changing reason) share it. It is nil when clear.
	ep *epoch
}

// epoch is one throttled period: from a clear (or new) gate turning
// throttled to the write that clears or releases it.
type epoch struct {
	wake chan struct{} // closed when the epoch ends

	mu    sync.Mutex          // guards caps and ended
	caps  map[int64]*capTimer // per-call caps of this epoch's waiters, by end granule
	ended bool
}

// capGranule is the width of the time slots within which waiters share one
// cap. Ten thousand waiters that arrive together then share one or two timers
// instead of owning ten thousand, and each waits on two channels at most (its
// cap's, which also closes when the epoch ends, and its context's): a timer of
// its own, and a third channel to select on, cost each waiter more on wake
// than everything else it does. A cap may end up to one granule late, never
// early.
const capGranule = 5 * time.Millisecond

// capTimer's channel closes when its granule ends or its epoch ends,
// whichever is first; exactly once, by whoever removes it from the map.
type capTimer struct {
	c chan struct{}
	t *time.Timer
}

// clearState is shared by every gate: a clear state carries no epoch, so
// publishing "clear" needs no allocation.
var clearState = &state{}

// Gate is the throttled/clear state plus a broadcast to waiters. Its zero
// value is clear and ready to use. A Gate must not be copied after first use.
type Gate struct {
	cur atomic.Pointer[state] // nil means clear
	mu  sync.Mutex            // serialises writers; readers never take it

	// bound is the channel given to Bind: once it is closed the gate reads
	// as released, before anyone has called Release.
	bound atomic.Pointer[boundChan]

	obs  observers // guarded by mu
	acct account   // guarded by mu
}

type boundChan struct{ c <-chan struct{} }

// Throttled reports whether the gate is throttled: one atomic load when
// clear; no lock and no allocation either way.
func (g *Gate) Throttled() bool {
	s := g.cur.Load()
	return s != nil && s.throttled && !g.ended()
}

// Bind ties the gate to done, typically Open's ctx.Done(): once done is
// closed the gate reads as released at once, although the Release that a
// context.AfterFunc runs comes a goroutine switch later. Waiters already
// blocked are woken by that Release.
func (g *Gate) Bind(done <-chan struct{}) { g.bound.Store(&boundChan{done}) }

// ended reports whether the bound channel is closed: a non-blocking
// receive, which takes no lock.
func (g *Gate) ended() bool {
	if b := g.bound.Load(); b != nil && b.c != nil {
		select {
		case <-b.c:
			return true
		default:
		}
	}
	return false
}

// Released reports whether Release has been called, or the bound channel
// closed.
func (g *Gate) Released() bool {
	s := g.cur.Load()
	return s != nil && s.released || g.ended()
}

// Reason is the reason given with the current throttled state, "" when clear.
func (g *Gate) Reason() string {
	if s := g.cur.Load(); s != nil && !g.ended() {
		return s.reason
	}
	return ""
}

// Set publishes a new state, throttled for kind ("throttled" when empty)
// with reason, or clear, and reports whether the throttled flag flipped.
// Setting clear wakes every waiter. A change of kind is booked, logged and
// notified (Observe); any change runs the watchers. After Release, Set does
// nothing: a poll that finishes after Close must not throttle a closed
// throttler again.
func (g *Gate) Set(throttled bool, kind, reason string) (flipped bool) {
	switch {
	case !throttled:
		kind, reason = "", ""
	case kind == "":
		kind = "throttled"
	}
	g.mu.Lock()
	old := g.cur.Load()
	if old == nil {
		old = clearState
	}
	if old.released || old.throttled == throttled && old.reason == reason && g.acct.kind == kind {
		g.mu.Unlock()
		return false // nothing to publish; avoids an allocation per poll
	}
	if kind != g.acct.kind {
		g.transition(kind, reason, false, time.Now())
	}
	switch {
	case !throttled:
		g.cur.Store(clearState)
		old.ep.end()
	case old.throttled: // same epoch, new reason: keep the waiters' channels
		g.cur.Store(&state{throttled: true, reason: reason, ep: old.ep})
	default:
		g.cur.Store(&state{throttled: true, reason: reason, ep: &epoch{wake: make(chan struct{})}})
	}
	g.unlockWatched()
	return old.throttled != throttled
}

// Release clears the gate for good and wakes every waiter. It is idempotent
// and reports whether this call released the gate.
func (g *Gate) Release() bool {
	g.mu.Lock()
	old := g.cur.Load()
	if old != nil && old.released {
		g.mu.Unlock()
		return false
	}
	g.transition("", "", true, time.Now())
	g.cur.Store(&state{released: true})
	if old != nil && old.ep != nil {
		old.ep.end()
	}
	g.unlockWatched()
	return true
}

// unlockWatched unlocks mu, then runs the watchers of the change just made
// (see Watch): outside the lock, so that a watcher may read the gate.
func (g *Gate) unlockWatched() {
	watchers := g.obs.watchers
	g.mu.Unlock()
	for _, f := range watchers {
		f()
	}
}

// end wakes the epoch's waiters: its wake channel, and every cap's channel,
// whose timers it stops (no waiter needs them any more).
func (ep *epoch) end() {
	close(ep.wake)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.ended = true
	for k, ct := range ep.caps {
		ct.t.Stop()
		delete(ep.caps, k)
		close(ct.c)
	}
}

// capChan returns a channel closed no earlier than deadline, or when the
// epoch ends if that is sooner, shared with the epoch's waiters whose caps
// end in the same granule.
func (ep *epoch) capChan(deadline time.Time) <-chan struct{} {
	end := deadline.UnixNano()
	key := (end + int64(capGranule) - 1) / int64(capGranule)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.ended {
		return ep.wake // closed
	}
	if ct := ep.caps[key]; ct != nil {
		return ct.c
	}
	if ep.caps == nil {
		ep.caps = make(map[int64]*capTimer)
	}
	ct := &capTimer{c: make(chan struct{})}
	ct.t = time.AfterFunc(time.Until(time.Unix(0, key*int64(capGranule))), func() {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		if ep.caps[key] == ct { // not already closed by end
			delete(ep.caps, key)
			close(ct.c)
		}
	})
	ep.caps[key] = ct
	return ct.c
}

// Wait returns nil at once when the gate is clear. Otherwise it blocks until
// the throttled epoch ends (nil, or sentinel.ErrClosed when it ended by
// Release), ctx is done (ctx.Err()), or max elapses (sentinel.ErrMaxWait,
// with the reason); max <= 0 means no cap.
//
// The clear path is small enough to inline: one atomic load and two loads of
// immutable fields. Any number of goroutines may wait at once.
func (g *Gate) Wait(ctx context.Context, max time.Duration) error {
	if s := g.cur.Load(); s == nil || !s.throttled && !s.released {
		return nil
	}
	return g.waitMax(ctx, max)
}

func (g *Gate) waitMax(ctx context.Context, max time.Duration) error {
	var deadline time.Time
	if max > 0 {
		deadline = time.Now().Add(max)
	}
	return g.wait(ctx, deadline)
}

// WaitUntil is Wait with the cap given as a deadline (zero: no cap), for a
// caller that waits on several gates in turn under one cap.
func (g *Gate) WaitUntil(ctx context.Context, deadline time.Time) error {
	if s := g.cur.Load(); s == nil || !s.throttled && !s.released {
		return nil
	}
	return g.wait(ctx, deadline)
}

func (g *Gate) wait(ctx context.Context, deadline time.Time) error {
	s := g.cur.Load()
	if g.ended() {
		return sentinel.ErrClosed
	}
	if !s.throttled {
		if s.released {
			return sentinel.ErrClosed
		}
		return nil // cleared since Wait looked
	}
	start := time.Now()
	err := g.block(ctx, s, deadline)
	g.CountWait(start, err)
	return err
}

// block waits on throttled state s's epoch.
func (g *Gate) block(ctx context.Context, s *state, deadline time.Time) error {
	// One channel ends the wait from the gate's side: the epoch's wake, or
	// the cap's, which also closes when the epoch ends.
	var c <-chan struct{} = s.ep.wake
	if !deadline.IsZero() {
		c = s.ep.capChan(deadline)
	}
	if done := ctx.Done(); done == nil {
		<-c // nothing else can end the wait: the cheapest wake-up there is
	} else {
		select {
		case <-c:
		case <-done:
			return ctx.Err()
		}
	}
	switch cur := g.cur.Load(); {
	case g.Released():
		return sentinel.ErrClosed
	case cur.throttled && cur.ep == s.ep:
		// The cap, not the end of the epoch.
		return fmt.Errorf("%w: %s", sentinel.ErrMaxWait, cur.reason)
	}
	return nil
}

// WaitAny is the wait of a throttler that is throttled while any of several
// gates is: it returns at once when one of gs is not throttled, and
// otherwise blocks until the throttled epoch of one of them ends (nil, or
// sentinel.ErrClosed when it ended by Release), ctx is done (ctx.Err()), or
// deadline passes (sentinel.ErrMaxWait, bare: the caller names the reasons);
// a zero deadline means no cap. The caller looks again after it returns:
// another of gs may still be throttled.
func WaitAny(ctx context.Context, deadline time.Time, gs ...*Gate) error {
	cases := make([]reflect.SelectCase, 0, len(gs)+2)
	for _, g := range gs {
		s := g.cur.Load()
		if s == nil || !s.throttled || g.ended() {
			if g.Released() {
				return sentinel.ErrClosed
			}
			return nil
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.ep.wake)})
	}
	if done := ctx.Done(); done != nil {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(done)})
	}
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.C)})
	}
	switch i, _, _ := reflect.Select(cases); {
	case i < len(gs) && gs[i].Released():
		return sentinel.ErrClosed
	case i < len(gs):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return sentinel.ErrMaxWait
}
