// Package throttler keeps bulk database work (online schema-change copiers,
// backfills, archivers) from hurting production MySQL.
//
// A copier calls BlockWait before each chunk:
//
//	for chunk := range chunks {
//		t.BlockWait(ctx) // returns at once unless the replicas need a rest
//		copyChunk(ctx, chunk)
//	}
//
// and the throttler decides, from a live signal such as replica lag, whether
// the chunk may go now or must wait. Every implementation keeps one contract,
// stated here once; a type's documentation says only where it differs or
// adds to it.
//
//   - Open does the first piece of work synchronously (one measurement, one
//     reading, one request) and returns its error, so a server that cannot be
//     watched is a configuration error seen at start. It then starts one
//     monitor goroutine that repeats that work every WithInterval until Close
//     or until Open's context ends: that context bounds the whole watch, so
//     pass the job's context, not a timeout meant for the first measurement
//     (WithQueryTimeout bounds each measurement). A failed Open may be
//     retried; a second Open returns ErrAlreadyOpen, and Open after Close
//     ErrClosed.
//   - Each result is published to a gate. IsThrottled and an unthrottled
//     BlockWait are a single atomic load: no lock, no allocation, no clock
//     read, no I/O. (With WithPacing, BlockWait also waits for the call's
//     turn at the rate the replica applies: see WithPacing.)
//   - BlockWait is woken by the state change itself (a broadcast), never by a
//     sleep loop, and returns when the throttle clears, its context is done,
//     the throttler is closed or its Open context ends, or the per-call cap
//     (WithMaxWait) elapses. Callers that must know which use Wait.
//   - While open, a signal that cannot be observed throttles, with a reason:
//     an answer that cannot be used (a value that is not a number, an unknown
//     lag) throttles at once, and when no measurement has succeeded for
//     WithStaleAfter (a dead, hung or unreachable server, a revoked grant)
//     the last good verdict stands no longer. A lag that cannot be measured
//     is never read as zero.
//   - Once the monitor stops for any reason (Close, Open's context ended)
//     the throttler is released for good: IsThrottled reports false, every
//     waiter returns, and nothing measures, blocks or spins again. A loop
//     such as `for t.IsThrottled() {}` always terminates. IsThrottled is
//     also false before Open and after a failed Open.
//   - Close stops the monitor, waits for it to exit and releases every
//     waiter. It is idempotent and returns nil unless the type says
//     otherwise.
//   - UpdateLag measures once, synchronously, and publishes the result;
//     callers that arrive while a measurement is in flight share it. It
//     returns ErrNotOpen before Open and ErrClosed once the throttler
//     stopped, at once and without I/O.
//
// Most callers want NewReplicationThrottler and BlockWait; a copier that can
// run faster than its replicas apply wants WithPacing too. Tests of code that
// takes a Throttler want Mock; code paths that must not throttle want Noop.
package throttler

import (
	"context"
	"errors"
	"time"

	"github.com/throttlekit/throttler/internal/sentinel"
)

// Throttler is the interface every throttler implements. Its method set is
// fixed; further capabilities are optional interfaces (Reasoner, LagReporter,
// Waiter, Utilizer, ToleranceSetter, ...) that callers discover with a type
// assertion.
type Throttler interface {
	// Open measures once, returns that measurement's error, and then starts
	// watching in the background until Close is called or ctx is done.
	Open(ctx context.Context) error
	// Close stops the background work, waits for it to exit, and releases
	// every blocked BlockWait. It is idempotent.
	Close() error
	// IsThrottled reports whether work should pause now. It does no I/O.
	IsThrottled() bool
	// BlockWait returns at once when not throttled; otherwise it blocks
	// until the throttle clears, ctx is done, the throttler is closed, or
	// the per-call cap elapses.
	BlockWait(ctx context.Context)
	// UpdateLag takes one measurement synchronously and publishes it.
	UpdateLag(ctx context.Context) error
}

// Reasoner is implemented by throttlers that can say why they throttle.
type Reasoner interface {
	// ThrottleReason is "" when not throttled, and otherwise names the
	// signal and the comparison, for example "replica lag 12.4s >= 10s".
	ThrottleReason() string
}

// LagReporter is implemented by throttlers that measure a lag.
type LagReporter interface {
	// Lag is the last lag measured; 0 before the first measurement.
	Lag() time.Duration
}

// Waiter is implemented by throttlers whose wait can report why it ended,
// for callers that must not proceed silently while still throttled.
type Waiter interface {
	// Wait is BlockWait that says why it returned: nil when not throttled
	// (or the throttle cleared), ErrMaxWait when the per-call cap elapsed
	// while still throttled, ErrClosed when the throttler was closed or its
	// Open context ended, or ctx's error.
	Wait(ctx context.Context) error
}

// CriticalReporter is implemented by throttlers whose signal has a second,
// critical level past which waiting is not enough and the caller should
// decide to abort (gh-ost's --critical-load).
type CriticalReporter interface {
	// IsCritical reports whether the last reading was at or above the
	// critical level. Like IsThrottled it does no I/O.
	IsCritical() bool
	// CriticalReason is "" when not critical, and otherwise names the
	// signal and the comparison.
	CriticalReason() string
}

// Utilizer is implemented by throttlers that can say how close their signal
// is to throttling, so that a copier can slow down before it has to stop
// (Spirit's GradualThrottler): for example, sleep in proportion, or shrink
// its chunks, once Utilization passes 0.8.
type Utilizer interface {
	// Utilization is the last reading over its threshold: 0 idle, 1.0 at
	// the throttle point, above it when over. It is at least 1 while the
	// throttler is throttled, for whatever reason (a stale reading, a
	// stopped replication thread), and 0 before Open and once the
	// throttler stopped. Like IsThrottled it takes no lock and does no
	// I/O.
	Utilization() float64
}

// ToleranceSetter is implemented by throttlers whose lag tolerance can
// change while they run (an operator loosens it for the night, or tightens
// it at peak). Other throttlers have setters of their own for their
// thresholds: Load.SetLimits, Query.SetThreshold, and HTTP.SetURL.
//
// Every such setter keeps one contract, stated here once:
//
//   - A bad value is an error wrapping ErrInvalidConfig, naming the
//     problem, and changes nothing.
//   - A good value is judged at once against the last successful reading,
//     with no wait for the next poll: loosening it releases the waiters
//     that only it held, tightening it throttles at once. A measurement in
//     flight meanwhile is judged against the new value too, never published
//     under the old one. While the reading is stale the stale verdict
//     stands, and the next reading is judged against the new value.
//   - Before Open it sets what Open will judge against; after the throttler
//     stopped it changes the value and nothing else.
//   - Stats keep counting across a change: a change of verdict that it
//     causes is one more change, booked like any other.
type ToleranceSetter interface {
	// SetTolerance sets the lag at and above which the throttler
	// throttles, as the constructor's lagTolerance. It must be positive,
	// and above the WithPacing target when one was given (a target of 0
	// follows the tolerance: half of it).
	SetTolerance(d time.Duration) error
}

// Sentinel errors, for callers that branch on a condition. Errors returned by
// this package wrap them (and their cause) with %w: test with errors.Is.
var (
	// ErrNotReplica means the server is not replicating from anything: it
	// has no replication channel at all. Open returns it wrapped; while
	// open, a replica that loses its source throttles with that reason.
	ErrNotReplica = errors.New("server is not a replica")
	// ErrAccessDenied means the lag source lacks a privilege it needs; the
	// message names the privilege.
	ErrAccessDenied = errors.New("missing privilege")
	// ErrUnavailable means the server cannot provide the lag source's data
	// (for example performance_schema=OFF); the message names the setting.
	ErrUnavailable = errors.New("lag source unavailable")
	// ErrAlreadyOpen is returned by a second Open.
	ErrAlreadyOpen = sentinel.ErrAlreadyOpen
	// ErrClosed is returned by Open after Close, by UpdateLag after the
	// throttler stopped, and by Wait when the throttler stopped.
	ErrClosed = sentinel.ErrClosed
	// ErrNotOpen is returned by UpdateLag before Open.
	ErrNotOpen = sentinel.ErrNotOpen
	// ErrMaxWait is returned by Wait when the per-call cap elapsed while the
	// throttler was still throttled.
	ErrMaxWait = sentinel.ErrMaxWait
)

var (
	_ Throttler = Noop{}
	_ Throttler = (*Mock)(nil)
	_ Throttler = (*Replication)(nil)
	_ Waiter    = (*Replication)(nil)
	_ Utilizer  = (*Replication)(nil)

	_ ToleranceSetter = (*Replication)(nil)
	_ Waiter          = (*Mock)(nil)
)
