package throttler

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/throttlekit/throttler/internal/pace"
)

// Pacing (WithPacing) admits a copier's chunks at the rate the replica is
// measured to apply, instead of only stopping it once the lag shows.
//
// Why: lag is the age of what the applier applies now, so it rises at most
// one second per second, while the work that will cause it is already on the
// replica. A copier C times faster than the replica overruns a tolerance T to
// about C/R × T before any measurement of lag can see it, however often it
// polls (make bench-pacing measures 15-28 s at T = 1 s for an uncapped
// copier). Pacing keeps the replica's backlog near a target instead.
//
// How, with no query beyond the lag measurement: each BlockWait call is one
// chunk, admitted by a shared token bucket (golang.org/x/time/rate, burst 1).
// The pacer remembers when it admitted each call. A measurement at time t
// that reads a delay d (the lag, or the backlog's predicted apply time where
// the source sees the backlog) says the replica has applied what was
// admitted before t-d, so the slope of that count over the last second is
// the replica's apply rate R̂, in chunks per second, with no knowledge of
// chunk sizes. The rate is then R̂ × clamp(1 + ½ × (target - d) / target,
// 0.1, 1.5): faster than the replica while under the target, slower above.
// While the replica keeps up (d under a quarter of the target) R̂ says only
// how fast the copier went, so the rate instead grows by paceGrowth per
// second for as long as the copier uses it: a slow start from paceStartRate
// that finds the replica's capacity within a few seconds.
//
// Throttled states still stop the copier outright: pacing only ever adds a
// wait after the gate's.

const (
	// paceStartRate is the first rate, in calls per second: low, because
	// nothing is known yet about the chunks or the replica.
	paceStartRate = 1
	// paceMinRate is the floor: a stalled replica slows the copier to one
	// call per 5 s rather than to none, and the gate stops it if the lag
	// reaches the tolerance.
	paceMinRate = 0.2
	// paceGrowth is the slow start's growth per second.
	paceGrowth = 4
	// paceMaxStep caps the slow start's growth between two measurements.
	paceMaxStep = 1.5
	// paceWindow is how far back the apply rate is measured: long enough
	// that a sub-second lag signal's noise averages out, short enough to
	// follow a replica that slows down.
	paceWindow = time.Second
	// paceRaise is how much the rate must rise for waiters to ask again
	// for an earlier slot.
	paceRaise = 1.25
	// paceAdmissions is how many admission times the pacer keeps: enough
	// for the window plus a delay of several seconds at thousands of calls
	// per second.
	paceAdmissions = 1 << 14
)

// pacer is the rate shared by every caller of one throttler: the slowest of
// its controllers' rates (one controller per replica), on while one steers.
type pacer struct {
	pace *pace.Pacer

	mu    sync.Mutex
	ctrls map[*paceController]struct{} // the open replicas' controllers
}

func newPacer() *pacer {
	return &pacer{pace: pace.New(paceStartRate, paceAdmissions, "paced to the replica's apply rate"), ctrls: map[*paceController]struct{}{}}
}

// add starts steering by c (its replica opened).
func (p *pacer) add(c *paceController) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctrls[c] = struct{}{}
	p.pace.Start()
	p.setLimitLocked()
}

// remove stops steering by c (its replica closed or its Open context ended);
// when no controller is left, every paced wait returns at once.
func (p *pacer) remove(c *paceController) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.ctrls[c]; !ok {
		return
	}
	delete(p.ctrls, c)
	if len(p.ctrls) == 0 {
		p.pace.Stop()
	} else {
		p.setLimitLocked()
	}
}

// setLimitLocked sets the shared rate to the slowest controller's; waiters
// queue again when it rises by more than paceRaise (after a stall).
func (p *pacer) setLimitLocked() {
	r := math.Inf(1)
	for c := range p.ctrls {
		r = min(r, c.rate)
	}
	if math.IsInf(r, 1) {
		return
	}
	raised := r > p.pace.Rate()*paceRaise
	p.pace.Set(r)
	if raised {
		p.pace.Requeue()
	}
}

// wait admits one call (pace.Pacer.Wait), capped at max > 0.
func (p *pacer) wait(ctx context.Context, max time.Duration) error {
	var deadline time.Time
	for {
		if err := p.pace.Wait(ctx, max, &deadline); !errors.Is(err, pace.ErrRequeue) {
			return err
		}
	}
}

// observe feeds one measurement of c's replica, taken at, that reads the
// replica delay d, and resets the shared rate. While the replica is
// throttled the gate stops the callers, and the rate is held: what the
// replica applies then says nothing of what it can apply (stopped threads, a
// configured delay), and resuming from the floor would cost a slow start.
func (p *pacer) observe(c *paceController, at time.Time, d time.Duration, throttled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	applied := p.pace.AdmittedBy(at.Add(-d))
	if throttled {
		c.hold(at, applied)
	} else {
		c.observe(at, d, applied, p.pace.HeldSince(c.last))
	}
	if _, ok := p.ctrls[c]; ok {
		p.setLimitLocked()
	}
}

// retarget sets the lag c steers to (the tolerance changed).
func (p *pacer) retarget(c *paceController, target time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.target = target
}

// rate is the shared rate in calls per second (for tests and status).
func (p *pacer) rate() float64 { return p.pace.Rate() }

// paceController turns one replica's measurements into a rate. It is
// guarded by its pacer's mutex.
type paceController struct {
	target time.Duration
	rate   float64 // calls per second

	// samples are (time, calls applied by then) over the last paceWindow
	// and one before it, oldest first.
	samples []paceSample
	last    time.Time // the previous observation
}

type paceSample struct {
	at      time.Time
	applied int64
}

func newPaceController(target time.Duration) *paceController {
	return &paceController{target: target, rate: paceStartRate}
}

// hold records a measurement without changing the rate.
func (c *paceController) hold(at time.Time, applied int64) {
	c.sample(at, applied)
	c.last = at
}

// sample records (at, applied) and drops samples older than the window
// needs.
func (c *paceController) sample(at time.Time, applied int64) {
	c.samples = append(c.samples, paceSample{at: at, applied: applied})
	for len(c.samples) > 2 && at.Sub(c.samples[1].at) >= paceWindow {
		c.samples = c.samples[1:]
	}
}

// observe updates the rate from one measurement: the replica's delay d at
// time at, and the calls it had applied by then. held says a caller waited
// for its turn since the last observation (the copier would go faster).
func (c *paceController) observe(at time.Time, d time.Duration, applied int64, held bool) {
	c.sample(at, applied)
	prev := c.last
	c.last = at
	if prev.IsZero() || !at.After(prev) {
		return
	}
	if d < c.target/4 {
		// The replica keeps up: its apply rate is only the copier's. Grow
		// while the rate holds the copier back, else hold.
		if held {
			// At most paceMaxStep per measurement: measurements that come
			// late (a busy server) must not compound into a jump.
			c.rate *= min(math.Pow(paceGrowth, at.Sub(prev).Seconds()), paceMaxStep)
		}
		return
	}
	f := 1 + 0.5*float64(c.target-d)/float64(c.target)
	f = min(max(f, 0.1), 1.5)
	first := c.samples[0]
	if span := at.Sub(first.at); span >= paceWindow/2 && applied > first.applied {
		applyRate := float64(applied-first.applied) / span.Seconds()
		c.rate = applyRate * f
	} else {
		// No apply rate yet (or nothing applied in the window: a stalled
		// replica): steer the current rate.
		c.rate *= f
	}
	c.rate = max(c.rate, paceMinRate)
}
