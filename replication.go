package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
)

// Replication throttles while a replica lags, or while its lag cannot be
// known.
//
// Open measures once and starts one monitor goroutine that measures every
// WithInterval. Each measurement is published to a gate that IsThrottled and
// BlockWait read with one atomic load; a measurement that clears the throttle
// wakes every blocked BlockWait at once. The replica reads as throttled, with
// a reason from ThrottleReason, while
//
//   - its lag is at or above the tolerance;
//   - replication is not flowing (a receiver or applier thread stopped or
//     disconnected, an unknown lag, or the replica lost its source);
//   - no measurement has succeeded for WithStaleAfter (a dead, hung or
//     unreachable replica, a revoked grant): the last good verdict stands
//     only that long.
//
// Close, or the end of Open's context, stops the monitor and releases the
// throttler for good: IsThrottled then reports false and BlockWait returns at
// once, so no caller can spin or hang on a throttler nobody updates.
//
// Most callers need only Open, BlockWait before each chunk, and Close.
type Replication struct {
	db        *sql.DB
	tolerance time.Duration
	log       *slog.Logger
	opt       options

	gate gate.Gate
	lag  atomic.Int64 // nanoseconds; written by apply

	// poll is a one-slot semaphore: at most one measurement in flight, so
	// a hung replica costs one connection and one goroutine, not a pile.
	poll chan struct{}

	mu      sync.Mutex // guards the lifecycle fields below
	phase   phase
	source  LagSource
	cancel  context.CancelFunc
	done    chan struct{} // closed when the monitor has exited
	unwatch func() bool   // stops the context.AfterFunc that releases on cancel

	stateMu    sync.Mutex // guards the verdict fields below; held briefly, never during I/O
	lastOK     time.Time
	lastErr    error
	kind       verdictKind
	staleTimer *time.Timer
}

type phase int

const (
	phaseNew phase = iota
	phaseOpening
	phaseOpen
	phaseClosed
)

// verdictKind is what the published state is about; a log line is written
// when it changes, never once per poll.
type verdictKind int

const (
	kindClear verdictKind = iota
	kindLag
	kindNotFlowing
	kindNotReplica
	kindStale
)

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
	o, err := buildOptions(opts)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		if err == nil || len(errs) > 1 {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
		}
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Replication{
		db:        replica,
		tolerance: lagTolerance,
		log:       logger,
		opt:       o,
		poll:      make(chan struct{}, 1),
		source:    o.source,
	}, nil
}

// Open chooses the lag source (unless WithLagSource gave one), measures once
// and returns that measurement's error: a replica that cannot be measured, or
// a server that is not a replica (ErrNotReplica), is a configuration error to
// see at start. It then starts the monitor, which runs until Close or until
// ctx is done: ctx bounds the monitor's whole life, so pass the job's
// context, not a timeout meant for the first measurement (WithQueryTimeout
// bounds that). A failed Open may be retried; a second Open returns
// ErrAlreadyOpen, and Open after Close ErrClosed.
func (r *Replication) Open(ctx context.Context) error {
	r.mu.Lock()
	switch r.phase {
	case phaseOpening, phaseOpen:
		r.mu.Unlock()
		return ErrAlreadyOpen
	case phaseClosed:
		r.mu.Unlock()
		return ErrClosed
	}
	r.phase = phaseOpening
	r.mu.Unlock()

	m, err := r.openMeasure(ctx)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseClosed { // Close ran while we measured
		return ErrClosed
	}
	if err != nil {
		r.phase = phaseNew
		return fmt.Errorf("throttler: open: %w", err)
	}
	if err := ctx.Err(); err != nil {
		r.phase = phaseNew
		return fmt.Errorf("throttler: open: %w", err)
	}
	r.phase = phaseOpen
	now := time.Now()
	r.stateMu.Lock()
	r.staleTimer = time.AfterFunc(r.opt.staleAfter, r.checkStale)
	r.stateMu.Unlock()
	r.apply(m, nil, now)

	mctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	r.done = make(chan struct{})
	// Release the moment the context ends, not when the monitor next looks:
	// waiters must not wait out a poll in flight.
	r.unwatch = context.AfterFunc(mctx, func() { r.gate.Release() })
	go r.monitor(mctx, r.done)
	r.log.Info("throttler: open", "source", r.source.String(), "lag", m.Lag, "tolerance", r.tolerance, "interval", r.opt.interval)
	return nil
}

func (r *Replication) openMeasure(ctx context.Context) (Measurement, error) {
	if r.Source() == nil {
		qctx, cancel := context.WithTimeout(ctx, r.opt.queryTimeout)
		f, err := DetectFlavor(qctx, r.db)
		cancel()
		if err != nil {
			return Measurement{}, err
		}
		r.mu.Lock()
		r.source = DefaultLagSource(f)
		r.mu.Unlock()
	}
	return r.measure(ctx)
}

// measure takes the poll slot (waiting for a poll in flight, or ctx) and
// measures once within the query timeout.
func (r *Replication) measure(ctx context.Context) (Measurement, error) {
	select {
	case r.poll <- struct{}{}:
	case <-ctx.Done():
		return Measurement{}, ctx.Err()
	}
	defer func() { <-r.poll }()
	qctx, cancel := context.WithTimeout(ctx, r.opt.queryTimeout)
	defer cancel()
	m, err := r.source.Measure(qctx, r.db)
	if err != nil {
		return m, fmt.Errorf("%s: %w", r.source, err)
	}
	return m, nil
}

func (r *Replication) monitor(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	// Whatever ends the monitor releases the throttler: nothing may stay
	// throttled with no one left to clear it.
	defer r.gate.Release()
	t := time.NewTicker(r.opt.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.stopped(ctx)
			return
		case <-t.C:
			m, err := r.measure(ctx)
			if ctx.Err() != nil {
				r.stopped(ctx)
				return
			}
			r.apply(m, err, time.Now())
		}
	}
}

// stopped logs why the monitor stopped, unless Close stopped it (Close logs).
func (r *Replication) stopped(ctx context.Context) {
	r.mu.Lock()
	closing := r.phase == phaseClosed
	r.mu.Unlock()
	if !closing {
		r.log.Info("throttler: stopped: Open's context ended; the throttler is released", "cause", context.Cause(ctx))
	}
}

// UpdateLag measures once, synchronously, and publishes the result; a clear
// result wakes every waiter. It waits for a poll already in flight rather
// than starting a second one. It returns ErrNotOpen before Open and ErrClosed
// after the throttler stopped.
func (r *Replication) UpdateLag(ctx context.Context) error {
	if err := r.openForUpdate(); err != nil {
		return err
	}
	m, err := r.measure(ctx)
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("throttler: update lag: %w", err) // the caller gave up: not the replica's fault
	}
	r.apply(m, err, time.Now())
	if err != nil {
		return fmt.Errorf("throttler: update lag: %w", err)
	}
	return nil
}

func (r *Replication) openForUpdate() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.phase == phaseClosed || r.gate.Released():
		return ErrClosed
	case r.phase != phaseOpen:
		return ErrNotOpen
	}
	return nil
}

// apply turns one poll's outcome into the published state.
func (r *Replication) apply(m Measurement, err error, now time.Time) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if err != nil {
		r.lastErr = err
		if errors.Is(err, ErrNotReplica) {
			// An observation, not a failure to observe: the replica lost
			// its source. Throttle now rather than after the stale window.
			r.publish(kindNotReplica, "replica lost its source: "+err.Error())
		}
		return // otherwise the last verdict stands until checkStale
	}
	r.lastOK, r.lastErr = now, nil
	if r.staleTimer != nil {
		r.staleTimer.Reset(r.opt.staleAfter)
	}
	r.lag.Store(int64(m.Lag))
	kind, reason := r.verdict(m)
	r.publish(kind, reason)
}

// verdict is the state a successful measurement calls for.
func (r *Replication) verdict(m Measurement) (verdictKind, string) {
	where := ""
	if m.Channel != "" {
		where = fmt.Sprintf(" (channel %q)", m.Channel)
	}
	switch {
	case m.NotFlowing != "":
		return kindNotFlowing, "replication not flowing" + where + ": " + m.NotFlowing
	case m.Lag >= r.tolerance:
		return kindLag, fmt.Sprintf("replica lag %v >= %v%s", roundLag(m.Lag), r.tolerance, where)
	}
	return kindClear, ""
}

func roundLag(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// checkStale runs on the stale timer, staleAfter after the last success.
func (r *Replication) checkStale() {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if r.gate.Released() {
		return
	}
	age := time.Since(r.lastOK)
	if age < r.opt.staleAfter { // a success raced the timer
		return
	}
	reason := fmt.Sprintf("no lag measurement for %v (stale after %v)", age.Round(time.Millisecond), r.opt.staleAfter)
	if r.lastErr != nil {
		reason += ": " + r.lastErr.Error()
	} else {
		reason += ": a measurement is still in flight"
	}
	r.publish(kindStale, reason)
	// Keep the reason's age and error current while nothing succeeds.
	r.staleTimer.Reset(r.opt.interval)
}

// publish sets the gate and logs a change of kind. Caller holds stateMu.
func (r *Replication) publish(kind verdictKind, reason string) {
	r.gate.Set(kind != kindClear, reason)
	if kind == r.kind {
		return
	}
	prev := r.kind
	r.kind = kind
	switch {
	case kind == kindClear:
		r.log.Info("throttler: resumed", "lag", time.Duration(r.lag.Load()), "tolerance", r.tolerance)
	case prev == kindClear:
		r.log.Warn("throttler: throttled", "reason", reason)
	default:
		r.log.Warn("throttler: still throttled, for another reason", "reason", reason)
	}
}

// Close stops the monitor, waits for it to exit, and releases every blocked
// BlockWait. It is idempotent and always returns nil.
func (r *Replication) Close() error {
	r.mu.Lock()
	if r.phase == phaseClosed {
		r.mu.Unlock()
		return nil
	}
	r.phase = phaseClosed
	cancel, done, unwatch := r.cancel, r.done, r.unwatch
	r.mu.Unlock()

	r.gate.Release()
	if cancel != nil {
		cancel()
		<-done
		unwatch()
	}
	r.stateMu.Lock()
	if r.staleTimer != nil {
		r.staleTimer.Stop()
	}
	r.stateMu.Unlock()
	r.log.Info("throttler: closed")
	return nil
}

// IsThrottled reports whether work should wait: one atomic load. It is false
// before Open, after a failed Open, after Close, and after Open's context
// ends.
func (r *Replication) IsThrottled() bool { return r.gate.Throttled() }

// BlockWait returns at once when not throttled. Otherwise it blocks until the
// throttle clears, ctx is done, the throttler stops, or WithMaxWait elapses.
// Callers that must know why it returned use Wait.
func (r *Replication) BlockWait(ctx context.Context) {
	if r.gate.Throttled() { // inlined: the unthrottled call costs one atomic load
		_ = r.gate.Wait(ctx, r.opt.maxWait)
	}
}

// Wait is BlockWait that says why it returned: nil when clear, ErrMaxWait
// when WithMaxWait elapsed while still throttled, ErrClosed when the
// throttler stopped, or ctx's error.
func (r *Replication) Wait(ctx context.Context) error {
	err := gateError(r.gate.Wait(ctx, r.opt.maxWait))
	if errors.Is(err, ErrMaxWait) {
		return fmt.Errorf("%w (%v): %s", err, r.opt.maxWait, r.ThrottleReason())
	}
	return err
}

// gateError maps the gate's errors to the package's sentinels.
func gateError(err error) error {
	switch {
	case errors.Is(err, gate.ErrReleased):
		return ErrClosed
	case errors.Is(err, gate.ErrMaxWait):
		return ErrMaxWait
	}
	return err
}

// ThrottleReason is "" when not throttled; otherwise it names the signal and
// the comparison, for example "replica lag 12.4s >= 10s".
func (r *Replication) ThrottleReason() string { return r.gate.Reason() }

// Lag is the last successfully measured lag (the worst channel's); 0 before
// the first measurement.
func (r *Replication) Lag() time.Duration { return time.Duration(r.lag.Load()) }

// Source is the lag source in use: the one given with WithLagSource, or the
// one Open chose; nil before Open chose one.
func (r *Replication) Source() LagSource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.source
}
