package throttler

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/pace"
	"github.com/throttlekit/throttler/internal/poller"
)

// Replication throttles while a replica lags, or while its lag cannot be
// known.
//
// The replica reads as throttled, with a reason from ThrottleReason, while
// its lag is at or above the tolerance, while replication is not flowing (a
// receiver or applier thread stopped or disconnected, an unknown lag, a
// replica that lost its source, a Group Replication member that is not
// ONLINE), with WithGroupApplierQueueLimit while a Group Replication member's
// applier queue is at or above the limit, and while it cannot be measured
// (see the package doc).
//
// Where the lag source sees the replica's backlog (what it has received but
// not applied), the replica also throttles while the backlog's predicted lag
// (Measurement.Predicted) is at or above the tolerance: a backlog throttles
// within one measurement of forming, not when the lag has grown to the
// tolerance. With WithPacing, BlockWait and Wait also pace their callers to
// the rate the replica applies (see WithPacing).
//
// Most callers need only Open, BlockWait before each chunk, and Close.
type Replication struct {
	db        *sql.DB
	name      string
	tolerance atomic.Int64 // nanoseconds; SetTolerance changes it
	maxWait   time.Duration
	queueMax  int64 // WithGroupApplierQueueLimit; 0: none
	log       *slog.Logger
	polling
	lag   atomic.Int64 // nanoseconds; written by the probe
	last  atomic.Pointer[measured]
	rates applyRate // the probe's only

	mu     sync.Mutex // guards source, and pacing's registration
	source LagSource  // nil until Open chooses one, unless WithLagSource gave it
	// configure applies WithChannels and WithLagBeyondDelay to the source
	// Open chooses.
	configure func(LagSource) (LagSource, error)

	// Pacing, with WithPacing: ctl steers pace from this replica's
	// measurements; paces is set when this throttler's own callers are
	// paced (not when it is one replica of a set that its owner paces).
	pace   *pacer
	ctl    *paceController
	paces  bool
	unpace func() bool // while steering: stops the AfterFunc that stops it when Open's context ends
	// paceTarget is WithPacing's target; 0: half the tolerance, which
	// follows SetTolerance.
	paceTarget time.Duration

	setMu sync.Mutex // serialises SetTolerance
}

// measured is a measurement, when it was taken, and by which source.
type measured struct {
	m   Measurement
	at  time.Time
	src LagSource
}

// NewReplicationThrottler returns a throttler that watches replica and
// throttles while its lag is at or above lagTolerance. It does no I/O; Open
// does. A nil logger logs nothing. Bad input (a nil DB, a tolerance or
// option out of range) is an error wrapping ErrInvalidConfig.
func NewReplicationThrottler(replica *sql.DB, lagTolerance time.Duration, logger *slog.Logger, opts ...Option) (*Replication, error) {
	var errs []error
	if replica == nil {
		errs = append(errs, errors.New("replica *sql.DB is nil"))
	}
	if lagTolerance <= 0 {
		errs = append(errs, fmt.Errorf("lag tolerance %v must be positive", lagTolerance))
	}
	o, problems := buildOptions(opts, "a replication throttler", replicationOptions)
	errs = append(errs, problems...)
	target, err := o.paceTarget(lagTolerance)
	if o.pacing && err != nil {
		errs = append(errs, err)
	}
	source := o.source
	if len(errs) == 0 && source != nil {
		if source, err = o.lagSource(source); err != nil {
			errs = append(errs, err)
		}
	}
	if err := configError(errs); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	r := &Replication{db: replica, name: o.name, maxWait: o.maxWait, queueMax: o.groupQueue, log: logger, source: source, configure: o.lagSource, paceTarget: o.pacingTarget}
	r.tolerance.Store(int64(lagTolerance))
	r.polling = polling{poll: poller.New(o.pollerConfig(logger, "lag measurement", "replication"), r.probe), updating: "update lag"}
	if o.pacing {
		r.ctl = newPaceController(target)
		r.pace, r.paces = o.sharedPacer, false
		if r.pace == nil {
			r.pace, r.paces = newPacer(), true
		}
	}
	return r, nil
}

// Open chooses the lag source (unless WithLagSource gave one) before it
// measures; a server that is not a replica fails it with ErrNotReplica.
func (r *Replication) Open(ctx context.Context) error {
	if err := r.poll.Open(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	if r.ctl != nil {
		r.mu.Lock()
		if !r.poll.Released() { // else Close (or the context's end) came first
			r.pace.add(r.ctl)
			r.unpace = context.AfterFunc(ctx, r.stopSteering)
		}
		r.mu.Unlock()
	}
	r.log.Info("throttler: open", "source", r.Source().String(), "lag", r.Lag(), "tolerance", r.Tolerance())
	return nil
}

// probe measures once and says what the measurement calls for. The poller
// never runs two probes at once.
func (r *Replication) probe(ctx context.Context) (poller.Verdict, error) {
	src := r.Source()
	if src == nil {
		f, err := DetectFlavor(ctx, r.db)
		if err != nil {
			return poller.Verdict{}, err
		}
		if src, err = r.configure(DefaultLagSource(f)); err != nil {
			return poller.Verdict{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		r.mu.Lock()
		r.source = src
		r.mu.Unlock()
	}
	m, err := src.Measure(ctx, r.db)
	at := time.Now()
	if err != nil {
		err = fmt.Errorf("%s: %w", src, err)
		if errors.Is(err, ErrNotReplica) {
			// An observation, not a failure to observe: the replica lost
			// its source. Throttle now rather than after the stale window.
			return poller.Verdict{Throttled: true, Kind: "not a replica", Reason: "replica lost its source: " + err.Error()}, err
		}
		return poller.Verdict{}, err
	}
	if m.channelProblem != "" && r.last.Load() == nil {
		// The first measurement is where the channels are first known: a
		// name that fits none of them is the caller's mistake, not a
		// replica to throttle on for ever (later, a channel that went away
		// reads as not flowing: see Channels).
		return poller.Verdict{}, fmt.Errorf("%s: %w: WithChannels: %s", src, ErrInvalidConfig, m.channelProblem)
	}
	r.rates.update(&m, at)
	r.lag.Store(int64(m.Lag))
	r.last.Store(&measured{m: m, at: at, src: src}) // before judging: see poller.Rejudge
	v := r.judge(m, src, r.Tolerance())
	if r.ctl != nil {
		r.pace.observe(r.ctl, at, replicaDelay(m), v.Throttled)
	}
	return v, nil
}

// judgeLast judges the last measurement against the tolerance now (for
// SetTolerance; see poller.Rejudge).
func (r *Replication) judgeLast() poller.Verdict {
	p := r.last.Load()
	if p == nil {
		return poller.Verdict{}
	}
	return r.judge(p.m, p.src, r.Tolerance())
}

// judge is the state a successful measurement m, taken from src, calls for
// against tolerance: the probe's verdict, and SetTolerance's.
func (r *Replication) judge(m Measurement, src LagSource, tolerance time.Duration) poller.Verdict {
	v := r.verdict(m, tolerance)
	if h, ok := src.(lagHinter); ok && v.Kind == "lag" {
		if hint := h.lagHint(m.Lag); hint != "" {
			v.Reason += " (" + hint + ")"
		}
	}
	v.Fast = v.Throttled || max(m.Lag, replicaDelay(m)) >= tolerance/2 || r.ctl != nil // steering needs fresh measurements
	return v
}

// replicaDelay is how far behind m says the replica is, as pacing steers on
// it: the backlog's predicted lag where known (sub-second where Lag may be
// whole seconds, and a step ahead), else the lag.
func replicaDelay(m Measurement) time.Duration {
	if predictionKnown(m) {
		return m.Predicted
	}
	return m.Lag
}

// verdict is the state a successful measurement calls for.
func (r *Replication) verdict(m Measurement, tolerance time.Duration) poller.Verdict {
	where := ""
	if m.Channel != "" {
		where = fmt.Sprintf(" (channel %q)", m.Channel)
	}
	switch {
	case m.NotFlowing != "":
		return poller.Verdict{Throttled: true, Kind: "not flowing", Reason: "replication not flowing" + where + ": " + m.NotFlowing}
	case m.Lag >= tolerance:
		return poller.Verdict{Throttled: true, Kind: "lag", Reason: fmt.Sprintf("replica lag %v >= %v%s", roundLag(m.Lag), tolerance, where)}
	case r.queueMax > 0 && m.groupApplierQueue() >= r.queueMax:
		return poller.Verdict{Throttled: true, Kind: "applier queue", Reason: fmt.Sprintf("group replication applier queue %d transactions >= %d", m.GroupReplication.ApplierQueue, r.queueMax)}
	case predictionKnown(m) && m.Predicted >= tolerance:
		return poller.Verdict{Throttled: true, Kind: "backlog", Reason: fmt.Sprintf("replica backlog: predicted lag %v >= %v (%s to apply%s)", roundLag(m.Predicted), tolerance, m.Backlog.size(), where)}
	}
	return poller.Verdict{}
}

func roundLag(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func (r *Replication) Close() error {
	r.poll.Close()
	r.stopSteering()
	return nil
}

// stopSteering takes this replica out of its pacer: it runs on Close and
// when Open's context ends.
func (r *Replication) stopSteering() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unpace == nil {
		return
	}
	r.unpace()
	r.unpace = nil
	r.pace.remove(r.ctl)
}

// setSteering takes this replica out of its pacer (false), or puts it back
// (true), while it is open: Discovery's members left out for a configured
// delay do not pace the callers.
func (r *Replication) setSteering(on bool) {
	if r.ctl == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unpace == nil {
		return // not steering: not open, or stopped
	}
	if on {
		r.pace.add(r.ctl)
	} else {
		r.pace.remove(r.ctl)
	}
}

// BlockWait is the package doc's; with WithPacing it then also waits for this
// call's turn at the paced rate.
func (r *Replication) BlockWait(ctx context.Context) {
	if r.poll.Throttled() {
		_ = r.poll.Wait(ctx)
	}
	if r.paces {
		_ = r.pace.wait(ctx, r.maxWait)
	}
}

// paced reports whether Wait paces its callers (WithPacing, and not one
// replica of a set whose owner paces).
func (r *Replication) paced() bool { return r != nil && r.paces }

// paceWait waits for this call's paced turn.
func (r *Replication) paceWait(ctx context.Context) error {
	if !r.paces {
		return nil
	}
	// Its own pacer stops only when this replica stops steering it: on
	// Close, or when Open's context ends, a moment before the gate says so.
	return paceError(r.pace.wait(ctx, r.maxWait), true)
}

// Wait is BlockWait that says why it returned (see Waiter); with WithPacing,
// ErrMaxWait also when the cap elapsed before this call's paced turn.
func (r *Replication) Wait(ctx context.Context) error {
	if err := r.polling.Wait(ctx); err != nil {
		return err
	}
	return r.paceWait(ctx)
}

// paceError maps a paced wait's error: pacing that stopped because the
// throttler stopped (closed says whether that is why) is ErrClosed.
func paceError(err error, closed bool) error {
	if errors.Is(err, pace.ErrStopped) {
		if closed {
			return ErrClosed
		}
		return nil
	}
	return err
}

// Lag is the last successfully measured lag (the worst flowing channel's); 0
// before the first measurement. While replication is not flowing the lag is
// unknown and Lag may read low: LastMeasurement says which, and when.
func (r *Replication) Lag() time.Duration { return time.Duration(r.lag.Load()) }

// LastMeasurement is the last successful measurement and when it was taken
// (by the client's clock); ok is false before the first one. A measurement
// with NotFlowing set has no meaningful Lag, and an old one means the polls
// since have failed (ThrottleReason says why).
func (r *Replication) LastMeasurement() (m Measurement, at time.Time, ok bool) {
	if p := r.last.Load(); p != nil {
		return p.m, p.at, true
	}
	return Measurement{}, time.Time{}, false
}

// PacedRate is the rate, in calls per second, at which WithPacing admits
// BlockWait and Wait calls now (for a replica of a set, the set's); 0
// without WithPacing.
func (r *Replication) PacedRate() float64 {
	if r.pace == nil {
		return 0
	}
	return r.pace.rate()
}

// Source is the lag source in use: the one given with WithLagSource, or the
// one Open chose; nil before Open chose one.
func (r *Replication) Source() LagSource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.source
}

// Tolerance is the lag tolerance now: the constructor's, or the last
// SetTolerance's.
func (r *Replication) Tolerance() time.Duration { return time.Duration(r.tolerance.Load()) }

// SetTolerance changes the lag tolerance, as ToleranceSetter says. With
// WithPacing(0) the pacing target follows it (half of it).
func (r *Replication) SetTolerance(d time.Duration) error {
	if err := r.checkTolerance(d); err != nil {
		return toleranceError(err)
	}
	r.setTolerance(d)
	return nil
}

// checkTolerance says why d cannot be the tolerance, or nil.
func (r *Replication) checkTolerance(d time.Duration) error {
	switch {
	case d <= 0:
		return fmt.Errorf("the lag tolerance %v must be positive", d)
	case r.ctl != nil && r.paceTarget >= d:
		return fmt.Errorf("the lag tolerance %v must stay above the WithPacing target %v", d, r.paceTarget)
	}
	return nil
}

// setTolerance sets a tolerance checkTolerance accepted, and judges the last
// measurement against it at once.
func (r *Replication) setTolerance(d time.Duration) {
	r.setMu.Lock()
	defer r.setMu.Unlock()
	old := time.Duration(r.tolerance.Swap(int64(d)))
	if r.ctl != nil && r.paceTarget == 0 {
		r.pace.retarget(r.ctl, d/2)
	}
	r.poll.Rejudge(r.judgeLast)
	if old != d {
		r.log.Info("throttler: lag tolerance changed", "tolerance", d, "was", old)
	}
}

// Utilization is the last measured lag over the tolerance (the backlog's
// predicted lag, where the source sees it and it is larger, since that
// throttles too), or the Group Replication applier queue over its limit
// when that is larger; see Utilizer.
func (r *Replication) Utilization() float64 {
	u := 0.0
	if p := r.last.Load(); p != nil {
		lag := p.m.Lag
		if predictionKnown(p.m) {
			lag = max(lag, p.m.Predicted)
		}
		u = float64(lag) / float64(r.Tolerance())
		if g := p.m.GroupReplication; r.queueMax > 0 && g != nil {
			u = max(u, float64(g.ApplierQueue)/float64(r.queueMax))
		}
	}
	return r.utilization(u)
}

// String is the name given with WithName, or "replication".
func (r *Replication) String() string { return cmp.Or(r.name, "replication") }
