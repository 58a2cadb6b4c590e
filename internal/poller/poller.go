// Package poller is the lifecycle every polling throttler shares: measure
// once in Open, then one monitor goroutine that probes every interval, one
// probe in flight at a time with a timeout, a stale window after which a
// signal that cannot be read throttles, logging on changes only, and a
// release for good when the monitor stops.
//
// A throttler supplies a Probe that reads its signal and says what it calls
// for; the Poller owns the state (an internal/gate.Gate), the goroutine and
// the timers.
package poller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
	"github.com/throttlekit/throttler/internal/sentinel"
)

// Verdict is what one successful probe calls for.
type Verdict struct {
	Throttled bool
	// Kind names what the verdict is about ("lag", "not flowing", ...); a
	// log line is written when it changes, never once per probe. Clear
	// verdicts need no kind.
	Kind string
	// Reason is what ThrottleReason reports while throttled.
	Reason string
	// Fast asks for the next probe after Config.FastInterval instead of
	// Config.Interval: the signal is near its threshold, or throttled, so a
	// change matters now. A failed probe always waits the full interval:
	// a server that does not answer is not asked more often.
	Fast bool

	// gen is the Poller's rejudge generation when the probe that returned
	// the verdict started (see Rejudge).
	gen uint64
}

// Probe reads the signal once. It returns:
//   - a verdict and nil: a successful reading;
//   - an error and a zero verdict: the signal could not be read. The last
//     verdict stands until the stale window passes, then the throttler
//     throttles with the error in its reason;
//   - an error and a throttled verdict: an observation that is also an
//     error for the caller (a replica that lost its source): the verdict is
//     published at once and the error returned.
//
// Probes are never called concurrently.
type Probe func(ctx context.Context) (Verdict, error)

// Config is the Poller's timing; the root package validates it.
type Config struct {
	Interval time.Duration
	// FastInterval is the probe period after a Fast verdict; 0 means
	// Interval.
	FastInterval time.Duration
	StaleAfter   time.Duration
	QueryTimeout time.Duration
	MaxWait      time.Duration
	Logger       *slog.Logger // never nil
	// Owned: the Poller serves a throttler whose own lifecycle writes the
	// stopped and closed lines.
	Owned bool
	// Quiet: the owner combines this Poller's verdict with others and
	// logs and notifies the combined one; this gate writes no lines.
	Quiet bool
	// Notify, if set, gets the gate's Changes (unless Quiet).
	Notify *gate.Notifier
	// What a probe reads, for the stale reason: "no <What> for 3s"; empty
	// means "measurement".
	What string
}

// Poller runs a Probe on a schedule and publishes its verdicts.
type Poller struct {
	gate  gate.Gate // first: the hot path reads it at the struct's address
	cfg   Config
	probe Probe

	// flightMu guards flight, the probe in flight (nil when none). At most
	// one probe runs at a time, so a hung server costs one connection and one
	// goroutine, not a pile; whoever wants a probe while one runs waits for
	// it and shares its outcome instead of queueing a probe of its own.
	flightMu sync.Mutex
	flight   *flight

	life lifecycle.Runner

	stateMu sync.Mutex // guards the verdict fields below; never held during I/O
	lastOK  time.Time
	lastErr error
	stale   *time.Timer
	okCount int64 // successful probes
	errors  int64 // failed probes

	// judgeable: the published verdict is a successful reading's (not the
	// stale one, nor an observation that came with an error), so Rejudge
	// may judge that reading again. Guarded by stateMu.
	judgeable bool
	// gen counts Rejudge calls, and rejudge is the last one's judge:
	// a probe that started before the last Rejudge may have judged its
	// reading against the old threshold. Guarded by stateMu.
	gen     uint64
	rejudge func() Verdict

	fast atomic.Bool // the last verdict asked for a fast probe
	// hurry wakes the monitor when a verdict it did not probe itself (Open's,
	// UpdateLag's) asks for fast probes while it waits out a full interval.
	hurry chan struct{}
	// kick asks the monitor for a probe now, one that starts after the
	// kick (see Kick); kicks counts the Kicks, and flight.kicks is the
	// count when a probe started.
	kick  chan struct{}
	kicks atomic.Uint64
	// live: a successful Open published its first verdict (see Live).
	live atomic.Bool
}

const kindStale = "stale"

// flight is one probe in flight; its outcome is set before done closes.
type flight struct {
	done  chan struct{}
	v     Verdict
	err   error
	kicks uint64 // Poller.kicks when the probe started
	// abandoned: the probe's caller left (its context ended) before the
	// probe ended, so the outcome says nothing about the signal and was not
	// published: whoever shared it probes anew.
	abandoned bool
}

// New returns an unopened Poller.
func New(cfg Config, probe Probe) *Poller {
	p := &Poller{cfg: cfg, probe: probe, hurry: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	p.life.Gate = &p.gate
	if !cfg.Owned {
		p.life.Log = cfg.Logger
	}
	if !cfg.Quiet {
		p.gate.Observe(cfg.Logger, cfg.Notify)
	}
	return p
}

// Open probes once and returns that error; on success it publishes the
// verdict and starts the monitor, which runs until Close or until ctx is
// done. A failed Open may be retried.
func (p *Poller) Open(ctx context.Context) error {
	life, err := p.life.Begin(ctx)
	if err != nil {
		return err
	}
	v, err := p.run(life, false)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if p.life.Abort() != nil {
			return sentinel.ErrClosed // Close ran while we probed
		}
		return err
	}
	return p.life.Start(func() {
		p.stateMu.Lock()
		p.stale = time.AfterFunc(p.cfg.StaleAfter, p.checkStale)
		p.stateMu.Unlock()
		p.apply(v, nil, time.Now())
		p.live.Store(true)
	}, p.monitor)
}

// run probes once within the query timeout, or, while a probe is in flight,
// waits for it and returns its outcome: one probe serves every caller that
// came while it ran. The caller that probes publishes the outcome (when
// publish is set) before the others see it, so that each caller returns
// with the gate already showing its reading. ctx ends the wait; when it
// ends a probe, the probe is abandoned: nothing is published, and those
// who shared it probe anew, unless their own ctx ended too. Callers that
// must stop when the Poller stops pass a ctx that ends with it (Update);
// once the Poller is released, run starts no probe that would publish.
func (p *Poller) run(ctx context.Context, publish bool) (Verdict, error) {
	_, v, err := p.runFlight(ctx, publish)
	return v, err
}

// runFlight is run that also returns the flight whose outcome it returns
// (nil when none).
func (p *Poller) runFlight(ctx context.Context, publish bool) (*flight, Verdict, error) {
	for {
		p.flightMu.Lock()
		f := p.flight
		if f == nil && publish && p.gate.Released() {
			// Stopped: checked here, not only through ctx, whose end
			// after a stop comes a goroutine switch later (AfterFunc).
			p.flightMu.Unlock()
			return nil, Verdict{}, sentinel.ErrClosed
		}
		if f == nil {
			f = &flight{done: make(chan struct{}), kicks: p.kicks.Load()}
			p.flight = f
			p.flightMu.Unlock()
			v, err := p.fly(ctx, f, publish)
			return f, v, err
		}
		p.flightMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, Verdict{}, ctx.Err()
		}
		if !f.abandoned {
			return f, f.v, f.err
		}
		if err := ctx.Err(); err != nil {
			return nil, Verdict{}, err
		}
	}
}

// fly runs the probe of flight f, publishes its outcome and lands it.
func (p *Poller) fly(ctx context.Context, f *flight, publish bool) (Verdict, error) {
	defer func() {
		p.flightMu.Lock()
		p.flight = nil
		p.flightMu.Unlock()
		close(f.done)
	}()
	qctx, cancel := context.WithTimeout(ctx, p.cfg.QueryTimeout)
	defer cancel()
	p.stateMu.Lock()
	gen := p.gen
	p.stateMu.Unlock()
	f.v, f.err = p.probe(qctx)
	f.v.gen = gen
	if ctx.Err() != nil {
		// The caller left, or the Poller stopped: not the signal's doing,
		// and nothing to publish after a stop.
		f.abandoned = true
		if f.err == nil {
			return Verdict{}, ctx.Err() // unpublished: not a reading for the caller either
		}
		return Verdict{}, f.err
	}
	if publish {
		p.apply(f.v, f.err, time.Now())
	}
	return f.v, f.err
}

func (p *Poller) monitor(ctx context.Context) {
	t := time.NewTimer(p.next(p.fast.Load()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.hurry:
			t.Reset(p.next(true))
		case <-p.kick:
			err := p.probeFresh(ctx)
			if ctx.Err() != nil {
				return
			}
			t.Reset(p.next(err == nil && p.fast.Load()))
		case <-t.C:
			_, err := p.run(ctx, true)
			if ctx.Err() != nil {
				return
			}
			select {
			case <-p.hurry: // its own verdict's: already heeded below
			default:
			}
			t.Reset(p.next(err == nil && p.fast.Load()))
		}
	}
}

// probeFresh probes until a probe that started after the last Kick has
// landed: one in flight when Kick came (an Update's, which the monitor
// would share) may have read the old target.
func (p *Poller) probeFresh(ctx context.Context) error {
	for {
		want := p.kicks.Load()
		f, _, err := p.runFlight(ctx, true)
		if f == nil || f.kicks >= want || ctx.Err() != nil {
			return err
		}
	}
}

// next is the time until the next probe.
func (p *Poller) next(fast bool) time.Duration {
	if fast && p.cfg.FastInterval > 0 {
		return p.cfg.FastInterval
	}
	return p.cfg.Interval
}

// Update probes once, synchronously, and publishes the result before it
// returns. While a probe is in flight (the monitor's, or another Update's)
// it starts none: it waits for that probe and returns its outcome, so N
// concurrent callers cost one probe. Once the Poller stops (Close, or the
// end of Open's context) every caller returns ErrClosed at once, those
// waiting included, and a probe in flight for a caller is cancelled.
func (p *Poller) Update(ctx context.Context) error {
	mctx, err := p.life.Context()
	if err != nil {
		return err
	}
	if p.gate.Released() {
		return sentinel.ErrClosed // Open's context ended
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(mctx, cancel)()
	_, err = p.run(ctx, true)
	if err != nil && mctx.Err() != nil {
		return sentinel.ErrClosed // whatever the probe said, the Poller stopped
	}
	return err
}

// apply turns one probe's outcome into the published state.
func (p *Poller) apply(v Verdict, err error, now time.Time) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if err != nil {
		p.lastErr = err
		p.errors++
		if v.Throttled {
			p.publish(v) // an observation: throttle now, not after the stale window
			p.judgeable = false
		}
		return // otherwise the last verdict stands until checkStale
	}
	p.lastOK, p.lastErr = now, nil
	p.okCount++
	if p.stale != nil {
		p.stale.Reset(p.cfg.StaleAfter)
	}
	if v.gen != p.gen && p.rejudge != nil {
		// The threshold changed while the probe ran, which may have
		// judged its reading against the old one: judge it again.
		v = p.rejudge()
	}
	p.judgeable = true
	p.setFast(v.Fast)
	p.publish(v)
}

// setFast records whether the published verdict asks for fast probes, and
// wakes the monitor when it newly does. Caller holds stateMu.
func (p *Poller) setFast(fast bool) {
	if fast && !p.fast.Swap(true) {
		select {
		case p.hurry <- struct{}{}:
		default:
		}
	} else if !fast {
		p.fast.Store(false)
	}
}

// checkStale runs on the stale timer, StaleAfter after the last success.
func (p *Poller) checkStale() {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.gate.Released() {
		return
	}
	age := time.Since(p.lastOK)
	if age < p.cfg.StaleAfter { // a success raced the timer
		return
	}
	what := p.cfg.What
	if what == "" {
		what = "measurement"
	}
	reason := fmt.Sprintf("no %s for %v (stale after %v)", what, age.Round(time.Millisecond), p.cfg.StaleAfter)
	if p.lastErr != nil {
		reason += ": " + p.lastErr.Error()
	} else {
		reason += ": a measurement is still in flight"
	}
	p.publish(Verdict{Throttled: true, Kind: kindStale, Reason: reason})
	p.judgeable = false
	// Keep the reason's age and error current while nothing succeeds.
	p.stale.Reset(p.cfg.Interval)
}

// publish sets the gate, which books, logs and notifies a change of kind.
// Caller holds stateMu.
func (p *Poller) publish(v Verdict) { p.gate.Set(v.Throttled, v.Kind, v.Reason) }

// Rejudge publishes what judge returns, as if a probe had just returned it,
// without probing: an owner whose threshold changed judges its last
// reading again, at once. judge must read the reading a successful probe
// stored before it returned, and the threshold now; it runs under the lock
// that publishing takes, so that two changes, or a change and a probe,
// publish in order. It publishes nothing before the first reading is
// published, while the last reading is stale (the stale verdict stands), or
// while the last probe's error came with an observation (a replica that
// lost its source: no reading to judge again), nor once the Poller is
// released; the next probe's reading is judged against the new threshold
// either way.
//
// A probe in flight during Rejudge may have judged its reading against the
// old threshold: the Poller then publishes the last judge's verdict in its
// place, which judges that probe's reading (stored before it returned).
func (p *Poller) Rejudge(judge func() Verdict) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	p.gen++
	p.rejudge = judge
	if !p.judgeable || p.gate.Released() {
		return
	}
	v := judge()
	p.setFast(v.Fast)
	p.publish(v)
}

// Kick asks the monitor for a probe now, one that starts after Kick (a
// probe in flight may have read an old target; its outcome is published,
// then the fresh probe's): an owner whose target changed (a URL) has no
// reading to judge again. It returns at once, and does nothing before Open
// or once the Poller is released.
func (p *Poller) Kick() {
	if !p.Live() {
		return // Open's probe reads the target anew
	}
	p.kicks.Add(1)
	select {
	case p.kick <- struct{}{}:
	default: // a kick is pending: it probes after this one too
	}
}

// Live reports whether the Poller is open and not released: a successful
// Open published its first verdict, and neither Close nor the end of Open's
// context has released it. It takes no lock.
func (p *Poller) Live() bool { return p.live.Load() && !p.gate.Released() }

// Counts are the probes that succeeded and failed, and when the last
// success was.
func (p *Poller) Counts() (ok, failed int64, last time.Time) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.okCount, p.errors, p.lastOK
}

// Close stops the monitor, waits for it to exit, and releases every waiter.
// It is idempotent and reports whether this call closed the Poller.
func (p *Poller) Close() bool {
	if !p.life.Close() {
		return false
	}
	p.stateMu.Lock()
	if p.stale != nil {
		p.stale.Stop()
	}
	p.stateMu.Unlock()
	return true
}

// Gate is the Poller's gate, for an owner that waits on several at once
// (gate.WaitAny); it publishes nothing to it.
func (p *Poller) Gate() *gate.Gate { return &p.gate }

// Throttled is the hot path: one atomic load when clear.
func (p *Poller) Throttled() bool { return p.gate.Throttled() }

// Released reports whether the Poller is released for good: closed, or its
// Open context ended (at once: the gate is bound to it).
func (p *Poller) Released() bool { return p.gate.Released() }

// Reason is the published reason, "" when clear.
func (p *Poller) Reason() string { return p.gate.Reason() }

// Wait blocks while throttled, up to MaxWait; see gate.Gate.Wait.
func (p *Poller) Wait(ctx context.Context) error { return p.gate.Wait(ctx, p.cfg.MaxWait) }

// WaitUntil blocks while throttled, up to deadline; see gate.Gate.WaitUntil.
func (p *Poller) WaitUntil(ctx context.Context, deadline time.Time) error {
	return p.gate.WaitUntil(ctx, deadline)
}
