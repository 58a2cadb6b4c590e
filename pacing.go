package throttler

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// errPaceStopped ends a paced wait when pacing stops (every replica that
// steered it was closed, or its Open context ended); errPaceRaised sends a
// waiter back for an earlier slot when the rate rises.
var (
	errPaceStopped = errors.New("pacing stopped")
	errPaceRaised  = errors.New("pacing rate raised")
)

// pacer is the rate shared by every caller of one throttler: the slowest of
// its controllers' rates (one controller per replica).
type pacer struct {
	lim *rate.Limiter

	mu    sync.Mutex
	ctrls map[*paceController]struct{} // the open replicas' controllers
	stop  chan struct{}                // closed when the last controller leaves
	// raised is closed (and replaced) when the rate rises by more than
	// paceRaise.
	raised chan struct{}
	times  [paceAdmissions]int64 // admission times (Unix ns), a ring
	n      int64                 // admissions so far; times[(n-1)%len] is the newest
	held   time.Time             // when a caller last had to wait for its turn
	// waiting is how many callers wait for their turn now.
	waiting int
}

func newPacer() *pacer {
	return &pacer{lim: rate.NewLimiter(paceStartRate, 1), ctrls: map[*paceController]struct{}{}, raised: make(chan struct{})}
}

// add starts steering by c (its replica opened).
func (p *pacer) add(c *paceController) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ctrls) == 0 {
		p.stop = make(chan struct{})
	}
	p.ctrls[c] = struct{}{}
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
		close(p.stop)
	} else {
		p.setLimitLocked()
	}
}

// setLimitLocked sets the shared rate to the slowest controller's.
func (p *pacer) setLimitLocked() {
	r := math.Inf(1)
	for c := range p.ctrls {
		r = min(r, c.rate)
	}
	if math.IsInf(r, 1) {
		return
	}
	if old := float64(p.lim.Limit()); r > old*paceRaise {
		close(p.raised)
		p.raised = make(chan struct{})
	}
	p.lim.SetLimit(rate.Limit(r))
}

// wait admits one call: at once when the rate allows, otherwise at its slot.
// It returns ctx's error (the slot is given back), ErrMaxWait when max
// elapsed first (max > 0; the call is not admitted), or errPaceStopped when
// pacing stops meanwhile. A rate that rises while the caller waits takes it
// back to the queue for an earlier slot: a slot taken at a low rate (after a
// stall) would otherwise hold the copier long after the replica recovered.
func (p *pacer) wait(ctx context.Context, max time.Duration) error {
	var capped <-chan time.Time
	if max > 0 {
		t := time.NewTimer(max)
		defer t.Stop()
		capped = t.C
	}
	for {
		p.mu.Lock()
		if len(p.ctrls) == 0 {
			p.mu.Unlock()
			return nil
		}
		stop, raised := p.stop, p.raised
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
		p.mu.Unlock()

		t := time.NewTimer(delay)
		var err error
		select {
		case <-t.C:
		case <-ctx.Done():
			err = ctx.Err()
		case <-capped:
			err = ErrMaxWait
		case <-stop:
			err = errPaceStopped
		case <-raised:
			err = errPaceRaised
		}
		t.Stop()
		p.mu.Lock()
		p.waiting--
		switch {
		case err == nil:
			p.admitLocked(time.Now())
		case !errors.Is(err, errPaceStopped):
			res.CancelAt(time.Now()) // give the slot back
		}
		p.mu.Unlock()
		if !errors.Is(err, errPaceRaised) {
			return err
		}
	}
}

func (p *pacer) admitLocked(at time.Time) {
	p.times[p.n%paceAdmissions] = at.UnixNano()
	p.n++
}

// admittedBy is how many calls were admitted at or before t. Before the
// oldest remembered admission it is the count up to there: an estimate that
// errs low, as a replica further behind than the ring reaches is throttled
// by its lag anyway.
func (p *pacer) admittedBy(t time.Time) int64 {
	kept := min(p.n, paceAdmissions)
	first := p.n - kept
	tn := t.UnixNano()
	// The ring is in admission order, which is time order.
	i := sort.Search(int(kept), func(i int) bool {
		return p.times[(first+int64(i))%paceAdmissions] > tn
	})
	return first + int64(i)
}

// observe feeds one measurement of c's replica, taken at, that reads the
// replica delay d, and resets the shared rate. While the replica is
// throttled the gate stops the callers, and the rate is held: what the
// replica applies then says nothing of what it can apply (stopped threads, a
// configured delay), and resuming from the floor would cost a slow start.
func (p *pacer) observe(c *paceController, at time.Time, d time.Duration, throttled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.waiting > 0 || !p.held.Before(c.last)
	if throttled {
		c.hold(at, p.admittedBy(at.Add(-d)))
	} else {
		c.observe(at, d, p.admittedBy(at.Add(-d)), held)
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
func (p *pacer) rate() float64 { return float64(p.lim.Limit()) }

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
