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

	"github.com/throttlekit/throttler/internal/poller"
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
	name      string
	tolerance time.Duration
	log       *slog.Logger
	polling
	lag  atomic.Int64 // nanoseconds; written by the probe
	last atomic.Pointer[measured]

	mu     sync.Mutex // guards source
	source LagSource  // nil until Open chooses one, unless WithLagSource gave it
}

// measured is a measurement and when it was taken.
type measured struct {
	m  Measurement
	at time.Time
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
	o, problems := buildOptions(opts, "")
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	r := &Replication{db: replica, name: o.name, tolerance: lagTolerance, log: logger, source: o.source}
	r.polling = polling{poll: poller.New(o.pollerConfig(logger, "lag measurement"), r.probe), updating: "update lag"}
	return r, nil
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
	if err := r.poll.Open(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", lifecycleError(err))
	}
	r.log.Info("throttler: open", "source", r.Source().String(), "lag", r.Lag(), "tolerance", r.tolerance)
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
		src = DefaultLagSource(f)
		r.mu.Lock()
		r.source = src
		r.mu.Unlock()
	}
	m, err := src.Measure(ctx, r.db)
	if err != nil {
		err = fmt.Errorf("%s: %w", src, err)
		if errors.Is(err, ErrNotReplica) {
			// An observation, not a failure to observe: the replica lost
			// its source. Throttle now rather than after the stale window.
			return poller.Verdict{Throttled: true, Kind: "not a replica", Reason: "replica lost its source: " + err.Error()}, err
		}
		return poller.Verdict{}, err
	}
	r.lag.Store(int64(m.Lag))
	r.last.Store(&measured{m: m, at: time.Now()})
	return r.verdict(m), nil
}

// verdict is the state a successful measurement calls for.
func (r *Replication) verdict(m Measurement) poller.Verdict {
	where := ""
	if m.Channel != "" {
		where = fmt.Sprintf(" (channel %q)", m.Channel)
	}
	switch {
	case m.NotFlowing != "":
		return poller.Verdict{Throttled: true, Kind: "not flowing", Reason: "replication not flowing" + where + ": " + m.NotFlowing}
	case m.Lag >= r.tolerance:
		return poller.Verdict{Throttled: true, Kind: "lag", Reason: fmt.Sprintf("replica lag %v >= %v%s", roundLag(m.Lag), r.tolerance, where)}
	}
	return poller.Verdict{}
}

func roundLag(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// Close stops the monitor, waits for it to exit, and releases every blocked
// BlockWait. It is idempotent and always returns nil.
func (r *Replication) Close() error {
	r.poll.Close()
	return nil
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

// Source is the lag source in use: the one given with WithLagSource, or the
// one Open chose; nil before Open chose one.
func (r *Replication) Source() LagSource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.source
}

// String is the name given with WithName, or "replication".
func (r *Replication) String() string {
	if r.name != "" {
		return r.name
	}
	return "replication"
}
