package doorman

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/throttlekit/throttler"
)

// errPaceChanged sends a waiter back to look at the gate and queue again:
// the grant changed while it waited for its turn (a slot taken at the old
// rate would hold it too long after a raise, or admit it after a cut to
// 0). errPaceStopped ends the waits of a released throttler.
var (
	errPaceChanged = errors.New("doorman: grant changed")
	errPaceStopped = errors.New("doorman: pacing stopped")
)

// pace admits calls at the granted rate: one token bucket shared by every
// caller, with a burst of 1, as the root package's WithPacing does. It
// paces only between the first grant and the release.
type pace struct {
	mu        sync.Mutex
	lim       *rate.Limiter
	on        bool // a grant was applied and the throttler is not released
	unlimited bool
	changed   chan struct{} // closed (and replaced) when the rate changes
	stop      chan struct{} // closed on release
	stopped   bool
}

func (p *pace) init() {
	p.lim = rate.NewLimiter(rate.Inf, 1)
	p.unlimited = true
	p.changed = make(chan struct{})
	p.stop = make(chan struct{})
}

// set paces to r calls per second (+Inf: no pacing). A rate of 0 or less
// keeps the last positive one: the gate throttles meanwhile, and waiters
// are sent back to it.
func (p *pace) set(r float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	unlimited := math.IsInf(r, 1)
	if p.on && unlimited == p.unlimited && (unlimited || r <= 0 || float64(p.lim.Limit()) == r) {
		if r <= 0 {
			p.wake() // the gate throttles now: waiters go back to it
		}
		return
	}
	p.on, p.unlimited = true, unlimited
	if !unlimited && r > 0 {
		p.lim.SetLimit(rate.Limit(r))
	}
	p.wake()
}

// wake sends every waiter back to the queue. Caller holds mu.
func (p *pace) wake() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// release ends every wait, for good.
func (p *pace) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped, p.on = true, false
		close(p.stop)
	}
}

// wait admits one call: at once when the rate allows, otherwise at its slot.
// It returns nil when admitted, errPaceChanged when the grant changed
// meanwhile (the slot is given back), errPaceStopped on release, ctx's
// error, or ErrMaxWait when the call's cap (*deadline, set from max on
// the first wait when zero; max 0 is no cap) passes first.
func (p *pace) wait(ctx context.Context, max time.Duration, deadline *time.Time) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return errPaceStopped
	}
	if !p.on || p.unlimited {
		p.mu.Unlock()
		return nil
	}
	now := time.Now()
	res := p.lim.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	changed, stop := p.changed, p.stop
	p.mu.Unlock()
	if delay == 0 {
		return nil
	}
	if deadline.IsZero() && max > 0 {
		*deadline = now.Add(max)
	}
	capped := !deadline.IsZero() && now.Add(delay).After(*deadline)
	if capped {
		delay = deadline.Sub(now)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	var err error
	select {
	case <-t.C:
		if !capped {
			return nil
		}
		err = fmt.Errorf("%w: paced to the granted rate", throttler.ErrMaxWait)
	case <-ctx.Done():
		err = ctx.Err()
	case <-changed:
		err = errPaceChanged
	case <-stop:
		return errPaceStopped
	}
	p.mu.Lock()
	res.CancelAt(time.Now()) // give the slot back
	p.mu.Unlock()
	return err
}
