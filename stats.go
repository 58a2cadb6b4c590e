package throttler

import (
	"time"

	"github.com/throttlekit/throttler/internal/gate"
)

// Stats is what a throttler has done since Open, for a job's status line,
// its summary, or a dashboard (see StatsReporter). Every throttler in this
// package has it; it costs the hot path nothing, because the state changes
// and blocked waits it counts are booked where they happen, off the hot path.
// Stats keep counting across a stale period, a change of reason and a
// SetTolerance, and are frozen, not reset, once the throttler is released.
type Stats struct {
	Throttled bool
	Reason    string
	// Kind is what the current throttle is about ("lag", "not flowing",
	// "stale", ...); "" when clear.
	Kind string
	// Since is when the current state (throttled or clear) began; once
	// released, when it was released.
	Since time.Time
	// Episodes is the number of throttled periods begun since Open.
	Episodes int64
	// ThrottledTotal is the time throttled since Open, the current period
	// included; ThrottledByKind splits it by kind.
	ThrottledTotal  time.Duration
	ThrottledByKind map[string]time.Duration
	// Waits counts the BlockWait and Wait calls that had to block while
	// throttled (not WithPacing's spacing of calls), and WaitedTotal the
	// time they spent blocked, summed; MaxWaits those ended by WithMaxWait
	// while still throttled.
	Waits       int64
	WaitedTotal time.Duration
	MaxWaits    int64
	// Measurements and Errors count the successful and failed measurements
	// (readings, requests, flag file checks); LastMeasurement is when the
	// last successful one was taken. A throttler that measures nothing
	// (Schedule, Pause without a flag file, Mock) leaves them zero.
	Measurements    int64
	Errors          int64
	LastMeasurement time.Time
	// Released is set once the throttler stopped (Close, or the end of
	// Open's context).
	Released bool
	// Tolerated and Skipped are a set's (Multi, Discovery): Tolerated
	// names each member that throttles while the set is clear, because it
	// tolerates that many (WithTolerateMembers), as "<name>: <reason>";
	// Skipped each member skipped for a while (Skip), as "<name> (until
	// <time>)". Both are nil otherwise, and once released.
	Tolerated []string
	Skipped   []string
}

// StatsReporter is implemented by every throttler of this package.
type StatsReporter interface {
	Stats() Stats
}

// Change is one transition of a throttler's state, as WithOnChange reports
// it: clear to throttled, throttled to clear, throttled for another kind of
// reason, or released.
type Change struct {
	// Throttler is the throttler's name (its String method).
	Throttler string
	Throttled bool
	// Released is set on the last Change, when the throttler stopped.
	Released bool
	// Kind and Reason are the new state's; "" when clear.
	Kind, Reason string
	At           time.Time
	// PreviousKind is the kind of the state that ended ("" when clear),
	// and Previous how long it lasted.
	PreviousKind string
	Previous     time.Duration
}

// WithOnChange calls f once per change of state (clear to throttled,
// throttled to clear, a change of kind, released), never once per
// measurement: in order, never concurrently, none lost, on a goroutine of
// the throttler's that exists only while changes wait to be delivered. A
// callback that blocks delays the changes after it and nothing else: not
// IsThrottled, not the measurements, not the waiters, not Close.
func WithOnChange(f func(Change)) Option {
	return func(o *options) { o.onChange, o.given = f, o.given|optOnChange }
}

// notifier is the gate's Notifier for WithOnChange's callback, naming the
// throttler name; nil without a callback.
func (o options) notifier(name string) *gate.Notifier {
	f := o.onChange
	if f == nil {
		return nil
	}
	return gate.NewNotifier(func(c gate.Change) {
		f(Change{Throttler: name, Throttled: c.Throttled, Released: c.Released, Kind: c.Kind, Reason: c.Reason,
			At: c.At, PreviousKind: c.PrevKind, Previous: c.Prev})
	})
}

// statsOf is the Stats of a gate's ledger and a poller's counts.
func statsOf(l gate.Ledger, ok, failed int64, last time.Time) Stats {
	return Stats{
		Throttled: l.Throttled, Reason: l.Reason, Kind: l.Kind, Since: l.Since,
		Episodes: l.Episodes, ThrottledTotal: l.ThrottledTotal, ThrottledByKind: l.ByKind,
		Waits: l.Waits, WaitedTotal: l.WaitedTotal, MaxWaits: l.MaxWaits,
		Measurements: ok, Errors: failed, LastMeasurement: last, Released: l.Released,
	}
}
