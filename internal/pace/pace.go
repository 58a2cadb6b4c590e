// Package pace admits calls one at a time at a rate, for the root package's
// WithPacing and the Doorman throttler (they differ in where the rate comes
// from, and so in when waiters must queue again): one token bucket
// (golang.org/x/time/rate, burst 1) shared by every caller, each waiting
// for its slot. A waiter gives its slot back, for the others, when its
// context ends, when its cap would pass first, or when its owner sends it
// back to queue (a slot taken at an old rate would hold it long after a
// raise, or admit it after a cut the owner must see first).
package pace

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/throttlekit/throttler/internal/sentinel"
)

// Wait's: Requeue sent the caller back to queue; Stop or Release ended it.
var (
	ErrRequeue = errors.New("pace: queue again")
	ErrStopped = errors.New("pace: stopped")
)

// Pacer admits calls at its rate while on; off, every call at once.
type Pacer struct {
	mu        sync.Mutex
	lim       *rate.Limiter // at the last positive finite rate
	capped    error
	on        bool
	unlimited bool          // the rate is +Inf
	released  bool          // for good
	requeue   chan struct{} // closed (and replaced) by Requeue
	stop      chan struct{} // closed by Stop; replaced by the next Start

	times   []int64   // admission times (Unix ns), a ring; nil: not kept
	n       int64     // admissions so far; times[(n-1)%len] is the newest
	held    time.Time // when a caller last had to wait for its slot
	waiting int       // how many callers wait for their slot now
}

// New returns a Pacer, off, at r calls per second (+Inf: no pacing), that
// remembers its last remember admissions (for AdmittedBy) and ends a capped
// wait with ErrMaxWait saying why the call waited.
func New(r float64, remember int, why string) *Pacer {
	p := &Pacer{lim: rate.NewLimiter(rate.Inf, 1), capped: fmt.Errorf("%w: %s", sentinel.ErrMaxWait, why),
		requeue: make(chan struct{}), stop: make(chan struct{}), times: make([]int64, remember)}
	p.Set(r)
	return p
}

// Start turns pacing on, again after Stop; not after Release.
func (p *Pacer) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on && !p.released {
		p.on, p.stop = true, make(chan struct{})
	}
}

// Stop turns pacing off: the waits end (ErrStopped; nobody is paced until
// the next Start, so their slots are not given back), later ones admit at
// once.
func (p *Pacer) Stop() { p.end(false) }

// Release is Stop for good: later waits end at once too.
func (p *Pacer) Release() { p.end(true) }

func (p *Pacer) end(forGood bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on, p.released = false, p.released || forGood
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
}

// Set paces to r calls per second: +Inf admits every call at once, r of 0
// or less keeps the last positive rate. It reports whether the rate
// changed; waiters keep their slots unless the owner calls Requeue.
func (p *Pacer) Set(r float64) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return false
	}
	unlimited := math.IsInf(r, 1)
	changed = unlimited != p.unlimited
	p.unlimited = unlimited
	if !unlimited && r > 0 && float64(p.lim.Limit()) != r {
		p.lim.SetLimit(rate.Limit(r))
		changed = true
	}
	return changed
}

// Rate is the rate in calls per second (+Inf: unlimited).
func (p *Pacer) Rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unlimited {
		return math.Inf(1)
	}
	return float64(p.lim.Limit())
}

// Requeue sends every waiter back (ErrRequeue).
func (p *Pacer) Requeue() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.released {
		close(p.requeue)
		p.requeue = make(chan struct{})
	}
}

// Wait admits one call: at once when the rate allows (or pacing is off),
// otherwise at its slot. It returns nil when admitted, ErrRequeue,
// ErrStopped, ctx's error, or ErrMaxWait when the slot would come after
// *deadline: set max from now by the first Wait that has to wait (max 0:
// no cap), so that the cap holds across the caller's retries.
func (p *Pacer) Wait(ctx context.Context, max time.Duration, deadline *time.Time) error {
	p.mu.Lock()
	if p.released {
		p.mu.Unlock()
		return ErrStopped
	}
	if !p.on || p.unlimited {
		p.mu.Unlock()
		return nil
	}
	now := time.Now()
	res := p.lim.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if delay == 0 {
		p.admitLocked(now)
		p.mu.Unlock()
		return nil
	}
	p.held = now
	p.waiting++
	requeue, stop := p.requeue, p.stop
	p.mu.Unlock()

	if deadline.IsZero() && max > 0 {
		*deadline = now.Add(max)
	}
	capped := !deadline.IsZero() && now.Add(delay).After(*deadline)
	if capped {
		delay = deadline.Sub(now)
	}
	t := time.NewTimer(delay)
	var err error
	select {
	case <-t.C:
		if capped {
			err = p.capped
		}
	case <-ctx.Done():
		err = ctx.Err()
	case <-requeue:
		err = ErrRequeue
	case <-stop:
		err = ErrStopped
	}
	t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting--
	switch err {
	case nil:
		p.admitLocked(time.Now())
	case ErrStopped:
	default:
		res.CancelAt(time.Now()) // give the slot back
	}
	return err
}

func (p *Pacer) admitLocked(at time.Time) {
	if len(p.times) > 0 {
		p.times[p.n%int64(len(p.times))] = at.UnixNano()
	}
	p.n++
}

// AdmittedBy is how many calls were admitted at or before t; before the
// oldest remembered admission, the count up to there (an estimate that
// errs low).
func (p *Pacer) AdmittedBy(t time.Time) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	size := int64(len(p.times))
	first := p.n - min(p.n, size)
	// The ring is in admission order, which is time order.
	return first + int64(sort.Search(int(p.n-first), func(i int) bool {
		return p.times[(first+int64(i))%size] > t.UnixNano()
	}))
}

// HeldSince reports whether a caller waits for its slot now, or had to at
// or after t: the callers would go faster.
func (p *Pacer) HeldSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting > 0 || !p.held.Before(t)
}
