package throttler

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/throttlekit/throttler/internal/poller"
)

// ErrInvalidConfig is wrapped by every error a constructor returns for bad
// input: the message names the argument and the value.
var ErrInvalidConfig = errors.New("throttler: invalid configuration")

// Option configures a throttler. Each constructor says which options apply
// to it, and rejects any other by name: the timing options (WithInterval,
// WithStaleAfter, WithQueryTimeout) apply to the throttlers that poll
// (NewReplicationThrottler, NewReplicasThrottler, NewDiscovery, NewLoad,
// NewPurgeLag, NewQuery, NewHTTP, and NewPause with a flag file), WithLagSource,
// WithPacing, WithChannels, WithLagBeyondDelay and WithGroupApplierQueueLimit
// to the replication throttlers only, and WithMaxWait and WithName to every
// throttler; WithTolerateMembers to the replica sets (NewReplicasThrottler,
// NewDiscovery).
type Option func(*options)

// optionSet is a set of options, by what they set: which a caller gave, and
// which a constructor accepts.
type optionSet uint32

const (
	optInterval optionSet = 1 << iota
	optStaleAfter
	optQueryTimeout
	optMaxWait
	optName
	optLagSource
	optPacing
	optChannels
	optBeyondDelay
	optGroupQueue
	optOnChange
	optTolerate

	// Every throttler has a wait and a name; the polling ones a timing;
	// the replication ones a lag source and pacing as well.
	commonOptions      = optMaxWait | optName | optOnChange
	pollingOptions     = commonOptions | optInterval | optStaleAfter | optQueryTimeout
	replicationOptions = pollingOptions | optLagSource | optPacing | optChannels | optBeyondDelay | optGroupQueue
)

var optionNames = []struct {
	o    optionSet
	name string
}{
	{optInterval, "WithInterval"}, {optStaleAfter, "WithStaleAfter"}, {optQueryTimeout, "WithQueryTimeout"},
	{optMaxWait, "WithMaxWait"}, {optName, "WithName"}, {optLagSource, "WithLagSource"}, {optPacing, "WithPacing"},
	{optChannels, "WithChannels"}, {optBeyondDelay, "WithLagBeyondDelay"}, {optGroupQueue, "WithGroupApplierQueueLimit"},
	{optOnChange, "WithOnChange"},
	{optTolerate, "WithTolerateMembers"},
}

type options struct {
	interval     time.Duration
	maxWait      time.Duration
	staleAfter   time.Duration // 0: 3 × interval
	queryTimeout time.Duration // 0: min(interval, 5s)
	source       LagSource
	name         string
	pacing       bool
	pacingTarget time.Duration // 0: half the tolerance
	sharedPacer  *pacer        // set by NewReplicasThrottler and NewDiscovery for their members
	channels     channelConfig // WithChannels, WithLagBeyondDelay
	// beyondDelayWhereRead measures beyond the delay with the sources
	// that read it, and leaves the others as they are (NewDiscovery's
	// members).
	beyondDelayWhereRead bool
	groupQueue           int64 // WithGroupApplierQueueLimit; 0: none
	onChange             func(Change)
	tolerate             int // WithTolerateMembers
	given                optionSet
	errs                 []error
}

const (
	defaultInterval        = time.Second
	defaultMaxWait         = 60 * time.Second
	defaultStaleIntervals  = 3
	maxDefaultQueryTimeout = 5 * time.Second
)

// WithInterval sets how often the monitor measures (default 1s): at least
// 10ms, because each measurement is a round trip to a server and polling
// faster adds load rather than freshness, and at most 24h, beyond which the
// throttler watches nothing a bulk job needs protecting from.
func WithInterval(d time.Duration) Option {
	return func(o *options) {
		o.addErr(checkPeriod(fmt.Sprintf("WithInterval(%v): the poll interval", d), d, ""))
		o.interval, o.given = d, o.given|optInterval
	}
}

// WithMaxWait caps how long one BlockWait call blocks while throttled
// (default 60s), at most a week. 0 means no cap: BlockWait then returns
// only when the throttle clears, its context is done, or the throttler stops.
func WithMaxWait(d time.Duration) Option {
	return func(o *options) {
		o.addErr(checkSpan(fmt.Sprintf("WithMaxWait(%v): the maximum wait", d), d, "no cap"))
		o.maxWait, o.given = d, o.given|optMaxWait
	}
}

// WithStaleAfter sets how long the throttler trusts its last successful
// measurement when polls fail (default 3 poll intervals). Past it, the
// throttler throttles until a poll succeeds again. It must not be shorter
// than the poll interval, nor longer than a week.
func WithStaleAfter(d time.Duration) Option {
	return func(o *options) {
		o.addErr(checkSpan(fmt.Sprintf("WithStaleAfter(%v): the stale window", d), d, ""))
		o.staleAfter, o.given = d, o.given|optStaleAfter
	}
}

// WithQueryTimeout bounds each measurement (default the poll interval, at
// most 5s). A hung replica then costs one timed-out poll at a time, never a
// pile of goroutines or connections. It must not be longer than the stale
// window.
func WithQueryTimeout(d time.Duration) Option {
	return func(o *options) {
		o.addErr(checkSpan(fmt.Sprintf("WithQueryTimeout(%v): the query timeout", d), d, ""))
		o.queryTimeout, o.given = d, o.given|optQueryTimeout
	}
}

// WithLagSource sets how lag is measured. By default Open chooses from the
// server's flavor and version: PerformanceSchemaSource on MySQL 8.0 and later,
// ReplicaStatusSource everywhere else (MariaDB, MySQL 5.7).
func WithLagSource(s LagSource) Option {
	return func(o *options) {
		if s == nil {
			o.errs = append(o.errs, errors.New("WithLagSource(nil): the lag source must not be nil"))
		}
		o.source, o.given = s, o.given|optLagSource
	}
}

// WithPacing makes BlockWait and Wait pace their callers, besides stopping
// them while throttled: each call admits one chunk of work, at the rate the
// replica is measured to apply, a little faster while the replica's lag is
// under target and slower above it, so that a copier faster than the replica
// holds the lag near target instead of overrunning the tolerance before lag
// can show it. target 0 means half the lag tolerance (which follows
// SetTolerance); it must be below the tolerance. Any number of goroutines may call BlockWait: they share one
// rate. It applies to NewReplicationThrottler, NewReplicasThrottler (one rate
// for the set, the slowest replica's) and NewDiscovery. Without it an
// unthrottled BlockWait is one atomic load.
func WithPacing(target time.Duration) Option {
	return func(o *options) {
		o.addErr(checkSpan(fmt.Sprintf("WithPacing(%v): the target lag", target), target, "half the tolerance"))
		o.pacing, o.pacingTarget, o.given = true, target, o.given|optPacing
	}
}

// WithChannels says which channels of a multi-source replica count (see
// Channels); by default every channel does. It applies to the replication
// throttlers whose lag source reads channels: ReplicaStatusSource and
// PerformanceSchemaSource, given or chosen by Open (on Aurora, Open fails
// with it). Bad names (empty, listed twice, Only and Ignore both given) are
// an error wrapping ErrInvalidConfig; names the replica lacks fail Open.
func WithChannels(c Channels) Option {
	return func(o *options) {
		sel, errs := c.check()
		o.errs = append(o.errs, errs...)
		o.channels.sel, o.given = sel, o.given|optChannels
	}
}

// WithLagBeyondDelay measures lag beyond each channel's configured delay
// (MASTER_DELAY, SOURCE_DELAY): a replica kept an hour behind on purpose
// reads 0 while it applies each transaction an hour after its commit, and
// its lag beyond that hour otherwise (never below 0). Without it such a
// replica reads its delay as lag and throttles for ever. A delayed
// channel's backlog, which holds the delay's worth of transactions by
// design, is then left out of Measurement.Backlog, so the backlog does not
// predict the delay as lag either.
//
// It applies with ReplicaStatusSource (which subtracts SQL_Delay from
// Seconds_Behind_Source) and PerformanceSchemaSource (DESIRED_DELAY from the
// applier's and the queue's latency), given or chosen by Open. It does not
// apply to HeartbeatSource: a heartbeat measures what readers of the replica
// see, delay included, and through a chain the delay may be any upstream
// server's; watch a delayed replica with a channel source instead.
func WithLagBeyondDelay() Option {
	return func(o *options) { o.channels.beyondDelay, o.given = true, o.given|optBeyondDelay }
}

// withBeyondDelayWhereRead is WithLagBeyondDelay where the lag source reads
// the delay, and nothing otherwise (NewDiscovery's members).
func withBeyondDelayWhereRead() Option {
	return func(o *options) { o.beyondDelayWhereRead = true }
}

// lagSource applies WithChannels and WithLagBeyondDelay to src: a source
// that reads channels gets them, any other is an error when they were given.
func (o options) lagSource(src LagSource) (LagSource, error) {
	cfg := o.channels
	cs, ok := src.(channelSource)
	if ok && o.beyondDelayWhereRead {
		cfg.beyondDelay = true
	}
	switch {
	case ok && !cfg.isZero():
		return cs.configured(cfg), nil
	case !ok && o.given&(optChannels|optBeyondDelay) != 0:
		var names []string
		for _, on := range optionNames {
			if o.given&on.o&(optChannels|optBeyondDelay) != 0 {
				names = append(names, on.name)
			}
		}
		return nil, fmt.Errorf("%s applies to ReplicaStatusSource and PerformanceSchemaSource, not to the lag source %s", strings.Join(names, " and "), src)
	}
	return src, nil
}

// WithGroupApplierQueueLimit makes a replication throttler also throttle a
// Group Replication (InnoDB Cluster) member while its applier queue
// (Measurement.GroupReplication.ApplierQueue: transactions certified but not
// yet applied) holds at least transactions. 0 (the default) sets no limit:
// the member throttles on its lag and its backlog's predicted lag, as any
// replica does. A queue that grows shows before the lag does, and a bound
// below the group's flow control applier threshold (25,000 by default)
// keeps the bulk job, not the group's flow control, the one that slows
// down. Replicas that are not Group Replication members have no such queue
// and are not affected, nor is a member whose group_replication_applier
// channel WithChannels leaves out. A negative limit is an error.
func WithGroupApplierQueueLimit(transactions int64) Option {
	return func(o *options) {
		if transactions < 0 {
			o.errs = append(o.errs, fmt.Errorf("WithGroupApplierQueueLimit(%d): the applier queue limit must not be negative (0 sets no limit)", transactions))
		}
		o.groupQueue, o.given = transactions, o.given|optGroupQueue
	}
}

// paceTarget is the lag WithPacing steers to under tolerance: the target
// given, or half the tolerance for 0. A target at or above the tolerance is
// a problem (the gate would stop the copier before pacing reached it).
func (o options) paceTarget(tolerance time.Duration) (time.Duration, error) {
	switch {
	case o.pacingTarget == 0:
		return tolerance / 2, nil
	case tolerance > 0 && o.pacingTarget >= tolerance:
		return 0, fmt.Errorf("WithPacing(%v): the target lag must be below the lag tolerance %v", o.pacingTarget, tolerance)
	}
	return o.pacingTarget, nil
}

// addErr records a problem, if err is one.
func (o *options) addErr(err error) {
	if err != nil {
		o.errs = append(o.errs, err)
	}
}

// withSharedPacer makes a replica one of a set that is paced together: it
// steers the set's pacer, whose owner (the set) paces the callers.
func withSharedPacer(p *pacer) Option {
	return func(o *options) { o.sharedPacer = p }
}

// WithName names the throttler in its log lines and in the reasons of a
// Multi that holds it (for example the replica's host name).
func WithName(name string) Option {
	return func(o *options) { o.name, o.given = name, o.given|optName }
}

// buildOptions applies opts over the defaults and returns every problem
// found, unwrapped: the constructor adds its own and wraps them all once with
// configError. forWhat names the throttler in messages ("a Schedule
// throttler"), and accepts says which options apply to it: any other given
// is a problem that names it.
func buildOptions(opts []Option, forWhat string, accepts optionSet) (options, []error) {
	o := options{interval: defaultInterval, maxWait: defaultMaxWait}
	for i, opt := range opts {
		if opt == nil {
			o.errs = append(o.errs, fmt.Errorf("option %d is nil", i))
			continue
		}
		opt(&o)
	}
	for _, on := range optionNames {
		if o.given&on.o != 0 && accepts&on.o == 0 {
			o.errs = append(o.errs, fmt.Errorf("%s does not apply to %s", on.name, forWhat))
		}
	}
	if len(o.errs) == 0 {
		if o.staleAfter == 0 {
			o.staleAfter = satMul(o.interval, defaultStaleIntervals) // at most 72h: interval is bounded
		} else if o.staleAfter < o.interval {
			o.errs = append(o.errs, fmt.Errorf("WithStaleAfter(%v) is shorter than the poll interval %v: every measurement would be stale before the next one", o.staleAfter, o.interval))
		}
		if o.queryTimeout == 0 {
			o.queryTimeout = min(o.interval, maxDefaultQueryTimeout)
		} else if o.queryTimeout > o.staleAfter {
			o.errs = append(o.errs, fmt.Errorf("WithQueryTimeout(%v) is longer than the stale window %v: a hung poll would outlive it", o.queryTimeout, o.staleAfter))
		}
	}
	return o, o.errs
}

// configError is nil when there is no problem, and otherwise one error that
// wraps ErrInvalidConfig and names every problem.
func configError(problems []error) error {
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(problems...))
}

// logger is l (a discard logger when nil) with the throttler's name attached.
func (o options) logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	if o.name != "" {
		l = l.With("throttler", o.name)
	}
	return l
}

// fastInterval is the poll period while a verdict matters now (throttled, or
// near the threshold, or pacing): a tenth of the interval, so that waiters
// resume within about a twentieth of it on average, but not under 50ms, nor
// over the interval itself.
func (o options) fastInterval() time.Duration {
	return min(o.interval, max(o.interval/10, 50*time.Millisecond))
}

// pollerConfig is the poller's configuration; defaultName is the throttler's
// name when WithName gave none, for its Changes.
func (o options) pollerConfig(logger *slog.Logger, what, defaultName string) poller.Config {
	return poller.Config{
		Notify:       o.notifier(cmp.Or(o.name, defaultName)),
		Interval:     o.interval,
		FastInterval: o.fastInterval(),
		StaleAfter:   o.staleAfter,
		QueryTimeout: o.queryTimeout,
		MaxWait:      o.maxWait,
		Logger:       logger,
		What:         what,
	}
}
