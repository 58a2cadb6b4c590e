package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
)

// Discovery throttles while any replica of a primary lags, or cannot be
// watched (more of them than WithTolerateMembers tolerates; Skip sets one
// aside for a while). It asks the primary which replicas it has (SHOW REPLICAS, or SHOW
// SLAVE HOSTS on MariaDB and MySQL before 8.0.22), watches each with its own
// Replication throttler, and asks again every DiscoveryConfig.Every, so that
// replicas added while a long job runs are watched too.
//
// The model is fail closed, member by member:
//
//   - A listed replica that cannot be watched (its DSN does not connect, the
//     password is wrong, it is not a replica, it was listed without a host)
//     is not skipped: it is a failed member that throttles, with a reason
//     naming it, and is retried every poll interval until it can be watched.
//   - A watched replica throttles as a Replication does: lag at or above the
//     tolerance, replication not flowing, no measurement for WithStaleAfter.
//   - A replica the primary stops listing is dropped only once it is seen
//     healthy at least WithStaleAfter after it vanished (it was repointed, or
//     rebuilt elsewhere). A crashed replica or one whose receiver thread
//     stopped also vanishes from the list; it stays, throttling, until it
//     returns (or DiscoveryConfig.ForgetAfter, when set, passes).
//   - When the primary cannot be asked for three periods (3 × Every), the
//     membership may be out of date: Discovery throttles until it can ask
//     again. Shorter failures keep the last membership.
//
// A replica with a configured delay (MASTER_DELAY, SOURCE_DELAY) on a
// channel that counts is behind by design: it is left out by default (see
// DiscoveryConfig.IncludeDelayed), logged once, and still listed by
// Replicas (Excluded says why). The delay is what the member's lag source
// reads (Measurement.Channels): ReplicaStatusSource and
// PerformanceSchemaSource, the defaults, read it; with another source, list
// a delayed replica in DiscoveryConfig.Exclude. It is read again at every
// listing, so a delay set or removed while the job runs takes effect within
// DiscoveryConfig.Every. Every member measures its lag beyond its
// configured delay where its source can (WithLagBeyondDelay), so an
// included delayed replica throttles only on lag beyond its delay; on MySQL
// its monitoring user then needs SELECT on
// performance_schema.replication_applier_configuration as well.
//
// The Discovery opens (and owns) one *sql.DB per replica, from
// DiscoveryConfig.DSNTemplate; the primary's *sql.DB stays the caller's.
//
// IsThrottled and an unthrottled BlockWait read the current members from one
// immutable snapshot (one atomic load, then one atomic load per member): no
// lock, no allocation, no I/O. A throttled BlockWait waits on every
// throttling member at once, and on a failed member being watched at last.
//
// Most callers need only Open, BlockWait before each chunk, and Close.
type Discovery struct {
	primary   *sql.DB
	cfg       DiscoveryConfig
	tmpl      *template.Template
	tolerance atomic.Int64 // nanoseconds, for new members; SetTolerance changes it
	tolMu     sync.Mutex   // serialises giving the members a new tolerance
	opts      []Option     // for every member, before its WithName
	o         options
	name      string
	log       *slog.Logger // the Discovery's own lines
	baseLog   *slog.Logger // the caller's logger, for members (nil: none)

	stmts spellings // discoveryStatements

	cur atomic.Pointer[discoverySet] // nil before Open: not throttled

	pubMu   sync.Mutex // serialises swaps of cur with release; never held during I/O
	stopped bool       // released for good; guarded by pubMu

	life lifecycle.Runner
	// gate is throttled while the snapshot is failed (a member cannot be
	// watched, or the listing is stale), so that waiters wake when that
	// ends; a watched member's own gate wakes them when it clears. It
	// reads as released the moment the life ends (Close, or the end of
	// Open's context), before release has swapped in releasedSet:
	// IsThrottled looks at it, lock-free.
	gate gate.Gate

	opMu        sync.Mutex // serialises membership changes; held during I/O
	members     map[replicaKey]*discoveryMember
	lastListed  time.Time // last successful listing
	listErr     error     // the last listing's error; nil after a success
	listStale   bool      // listErr has lasted long enough to throttle
	warnedEmpty bool
	// listings counts the listings that ran to an answer (or an error from
	// the primary); written under opMu, read before taking it, so that a
	// caller who waited for a listing in flight shares it.
	listings atomic.Uint64

	// pace, with WithPacing, paces callers once no member throttles; every
	// watched member steers it, so the rate is the slowest replica's.
	pace *pacer

	// rule is how the members count: WithTolerateMembers, and Skip.
	rule *memberRule
}

// DiscoveryConfig configures NewDiscovery.
type DiscoveryConfig struct {
	// DSNTemplate is a text/template that renders one replica's DSN from a
	// ReplicaHost: {{.Host}}, {{.Port}}, {{.ServerID}}, or {{.Addr}} (host
	// and port, with brackets around IPv6 hosts), for example
	// "monitor:secret@tcp({{.Host}}:{{.Port}})/?timeout=2s&readTimeout=5s".
	// Required. Its DSN must change with the host and with the port (a
	// template that varies only with {{.ServerID}} would watch one host for
	// every replica), and with the default OpenDB be one go-sql-driver/mysql
	// accepts.
	DSNTemplate string
	// Every is how often the primary is asked again for its replicas
	// (default 30s): at least 10ms and at most 24h, as WithInterval.
	Every time.Duration
	// OpenDB opens a replica's *sql.DB from its rendered DSN (default
	// sql.Open("mysql", dsn)). The Discovery closes the DBs it opened.
	OpenDB func(dsn string) (*sql.DB, error)
	// Exclude lists server ids never to watch (for example an analytics
	// replica nobody waits for).
	Exclude []uint32
	// IncludeDelayed watches replicas with a configured delay too, on their
	// lag beyond the delay (WithLagBeyondDelay). By default they are left
	// out: a replica kept an hour behind for backups is nothing a job
	// waits for.
	IncludeDelayed bool
	// ForgetAfter drops a replica the primary stopped listing once it has
	// been unlisted this long, even if it still cannot be seen healthy (a
	// replica decommissioned while the job runs). 0, the default, never
	// does: a vanished replica that is not seen healthy throttles until it
	// returns, because a crashed replica vanishes from the list too. At
	// most a week.
	ForgetAfter time.Duration
}

const defaultDiscoveryEvery = 30 * time.Second

// discoveryStaleListings is how many periods the listing may fail before
// the membership is too old to trust.
const discoveryStaleListings = 3

// NewDiscovery returns a throttler that watches every replica the primary
// lists, each with a Replication throttler of tolerance lagTolerance built
// with opts (and WithName set to the replica's host:port). It does no I/O;
// Open does. A nil logger logs nothing.
//
// Bad input is an error wrapping ErrInvalidConfig: a nil primary, a
// non-positive tolerance, a DSNTemplate that does not parse, does not render
// for a sample replica, does not change with the host or with the port, or
// (with the default OpenDB) renders a DSN the driver rejects, an Every or
// ForgetAfter out of range, or a bad option. The errors name the field but never echo the
// template, which usually holds a password.
func NewDiscovery(primary *sql.DB, lagTolerance time.Duration, cfg DiscoveryConfig, logger *slog.Logger, opts ...Option) (*Discovery, error) {
	var errs []error
	if primary == nil {
		errs = append(errs, errors.New("primary *sql.DB is nil"))
	}
	if lagTolerance <= 0 {
		errs = append(errs, fmt.Errorf("lag tolerance %v must be positive", lagTolerance))
	}
	if err := checkPeriod(fmt.Sprintf("DiscoveryConfig.Every %v", cfg.Every), cfg.Every, defaultDiscoveryEvery.String()); err != nil {
		errs = append(errs, err)
	}
	if cfg.Every == 0 {
		cfg.Every = defaultDiscoveryEvery
	}
	if err := checkSpan(fmt.Sprintf("DiscoveryConfig.ForgetAfter %v", cfg.ForgetAfter), cfg.ForgetAfter, "never"); err != nil {
		errs = append(errs, err)
	}
	tmpl, err := discoveryTemplate(cfg.DSNTemplate, cfg.OpenDB == nil)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.OpenDB == nil {
		cfg.OpenDB = func(dsn string) (*sql.DB, error) { return sql.Open("mysql", dsn) }
	}
	cfg.Exclude = slices.Clone(cfg.Exclude)
	o, problems := buildOptions(opts, "a replica discovery", replicationOptions|optTolerate) // the options apply to every replica's throttler, but the set's
	errs = append(errs, problems...)
	if _, err := o.paceTarget(lagTolerance); o.pacing && err != nil {
		errs = append(errs, err) // the members would fail at Open with it
	}
	if err := configError(errs); err != nil {
		return nil, err
	}
	d := &Discovery{
		primary: primary,
		cfg:     cfg,
		tmpl:    tmpl,
		opts:    slices.Clip(append(slices.Clone(opts), withoutSetOptions())),
		o:       o,
		name:    o.name,
		baseLog: logger,
		members: make(map[replicaKey]*discoveryMember),
		stmts:   spellings{stmts: discoveryStatements},
		rule:    newMemberRule(o.tolerate),
	}
	d.tolerance.Store(int64(lagTolerance))
	d.rule.watch(d.refresh)
	if d.name == "" {
		d.name = "replica discovery"
	}
	d.opts = append(d.opts, withBeyondDelayWhereRead())
	if o.pacing {
		d.pace = newPacer()
		d.opts = append(d.opts, withSharedPacer(d.pace))
	}
	d.opts = slices.Clip(d.opts) // members append to it concurrently
	d.log = o.logger(logger)
	if o.name == "" {
		d.log = d.log.With("throttler", d.name)
	}
	d.life = lifecycle.Runner{Gate: &d.gate, Log: d.log, OnEnd: d.release}
	// The members log their own changes; the Discovery's are notified.
	d.gate.Observe(nil, o.notifier(d.name))
	return d, nil
}

// discoverySet is one immutable snapshot of the members, swapped whole on
// every change.
type discoverySet struct {
	watched  []*Replication // open members, whose gates the hot path reads
	failed   bool           // a member cannot be watched (or the list is stale): throttled
	entries  []discoveryEntry
	names    []string
	excluded []excludedMember // open members left out (a configured delay), by name
	released bool
}

type excludedMember struct {
	name, why string
	r         *Replication
}

type discoveryEntry struct {
	label   string
	name    string       // host:port, as Replicas and Skip name it
	r       *Replication // nil for a failed member
	failure string       // why it cannot be watched
	always  bool         // not a member but the stale list: never tolerated nor skipped
}

// releasedSet is what a stopped Discovery reads: nothing throttles.
var releasedSet = &discoverySet{released: true}

// Open asks the primary for its replicas and returns that error (a primary
// that cannot be asked, a missing grant: ErrAccessDenied names it). It then
// opens a Replication per replica, concurrently; a replica that cannot be
// opened does not fail Open but becomes a failed member that throttles (see
// Discovery). Its monitor asks the primary again every DiscoveryConfig.Every
// and retries failed members every WithInterval.
func (d *Discovery) Open(ctx context.Context) error {
	mctx, err := d.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	d.pubMu.Lock()
	d.stopped = false // a failed Open released; this one starts afresh
	d.cur.Store(nil)
	d.pubMu.Unlock()

	err = d.openMembers(mctx)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		d.shutdown()
		d.pubMu.Lock()
		d.cur.Store(nil) // not throttled, as after any failed Open
		d.pubMu.Unlock()
		if d.life.Abort() != nil { // Close ran while we opened (and cancelled it)
			err = ErrClosed
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	err = d.life.Start(func() {
		d.opMu.Lock()
		d.publish()
		d.opMu.Unlock()
	}, d.monitor)
	if err != nil {
		return fmt.Errorf("throttler: open: %w", err) // Close shuts the members down
	}
	d.log.Info("throttler: open", "replicas", d.Replicas(), "tolerance", d.Tolerance(), "every", d.cfg.Every)
	return nil
}

// monitor asks the primary again every Every and retries failed members
// every poll interval, until ctx ends; then it releases everything.
func (d *Discovery) monitor(ctx context.Context) {
	defer d.shutdown()
	every := time.NewTicker(d.cfg.Every)
	defer every.Stop()
	retry := time.NewTicker(d.o.interval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-every.C:
			_ = d.rediscover(ctx, ctx)
		case <-retry.C:
			if s := d.cur.Load(); s != nil && s.failed {
				d.retryFailed(ctx)
			}
		}
	}
}

// release clears the Discovery for good: IsThrottled false, every waiter
// woken. The members release themselves (their monitors share the context).
func (d *Discovery) release() {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	d.stopped = true
	d.cur.Store(releasedSet) // the Runner released the gate, which woke the waiters
}

// Close also stops every member and closes the DBs the Discovery opened.
func (d *Discovery) Close() error {
	if d.life.Close() {
		d.shutdown() // after a failed Open, or one Close overtook
	}
	d.rule.stop() // not at every release: a failed Open may be retried
	return nil
}

// IsThrottled reports whether any member throttles or cannot be watched: one
// atomic load for the snapshot, then one per watched member.
func (d *Discovery) IsThrottled() bool {
	return d.cur.Load().throttled(d.rule) && !d.gate.Released()
}

// throttled counts the members that throttle or cannot be watched, but for
// the skipped ones, up to one more than r tolerates; a stale listing
// throttles whatever the count.
func (s *discoverySet) throttled(r *memberRule) bool {
	if s == nil {
		return false
	}
	sk := r.skips.Load()
	n := 0
	for i := range s.entries {
		e := &s.entries[i]
		switch {
		case e.always:
			return true
		case sk.has(e.name):
		case e.r == nil || e.r.IsThrottled():
			if n++; n > r.tolerate {
				return true
			}
		}
	}
	return false
}

// BlockWait waits on every throttling member at once, until none throttles,
// as the package doc says.
func (d *Discovery) BlockWait(ctx context.Context) {
	if d.paced() || d.IsThrottled() {
		_ = d.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned (see Waiter).
func (d *Discovery) Wait(ctx context.Context) error {
	if err := d.waitClear(ctx); err != nil {
		return err
	}
	return d.paceWait(ctx)
}

func (d *Discovery) paced() bool { return d != nil && d.pace != nil }

func (d *Discovery) paceWait(ctx context.Context) error {
	if d.pace == nil {
		return nil
	}
	s := d.cur.Load()
	return paceError(d.pace.wait(ctx, d.o.maxWait), s != nil && s.released || d.gate.Released())
}

func (d *Discovery) waitClear(ctx context.Context) (err error) {
	if s := d.cur.Load(); s == nil || !s.released && !s.throttled(d.rule) {
		return nil
	}
	start := time.Now()
	defer func() { d.gate.CountWait(start, err) }()
	var deadline time.Time // one cap for the whole wait, whatever it waits on
	if d.o.maxWait > 0 {
		deadline = time.Now().Add(d.o.maxWait)
	}
	var gates []*gate.Gate
	for {
		s := d.cur.Load()
		switch {
		case s == nil:
			return nil
		case s.released || d.gate.Released():
			return ErrClosed
		}
		// Wait on every throttling member at once, on the failed
		// snapshot's end, and on a change of the skips; members' own caps
		// play no part.
		sk := d.rule.skips.Load()
		if !s.throttled(d.rule) {
			return nil
		}
		gates = gates[:0]
		if s.failed {
			gates = append(gates, &d.gate)
		}
		for _, e := range s.entries {
			if e.r != nil && !sk.has(e.name) && e.r.IsThrottled() {
				gates = append(gates, e.r.poll.Gate())
			}
		}
		if len(gates) == 0 {
			return nil
		}
		wctx, cancel := context.WithCancel(ctx)
		unskip := context.AfterFunc(sk.changed, cancel)
		err := gate.WaitAny(wctx, deadline, gates...)
		unskip()
		cancel()
		switch {
		case errors.Is(err, ErrMaxWait):
			return fmt.Errorf("%w: %s", ErrMaxWait, d.ThrottleReason())
		case ctx.Err() != nil:
			return ctx.Err()
		}
		// One cleared, or was released (a member dropped), or the skips
		// changed: look again.
	}
}

// UpdateLag asks the primary for its replicas, reconciles the members
// (opening new ones and retrying failed ones), then measures every member
// once, concurrently. It returns every error, each naming its replica; a
// failed member's error counts, because its lag is unknown.
func (d *Discovery) UpdateLag(ctx context.Context) error {
	mctx, err := d.life.Context()
	switch {
	case err != nil:
		return fmt.Errorf("throttler: update lag: %w", err)
	case mctx.Err() != nil:
		return fmt.Errorf("throttler: update lag: %w", ErrClosed)
	}
	// Stop the listing and the members' measurements the moment the
	// Discovery stops, not when the caller gives up.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(mctx, cancel)()
	var errs []error
	if err := d.rediscover(ctx, mctx); err != nil {
		errs = append(errs, fmt.Errorf("discover replicas: %w", err))
	}
	if mctx.Err() != nil {
		return fmt.Errorf("throttler: update lag: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("throttler: update lag: %w", err)
	}
	s := d.cur.Load()
	if s == nil || s.released {
		return fmt.Errorf("throttler: update lag: %w", ErrClosed)
	}
	merrs := make([]error, len(s.entries))
	var wg sync.WaitGroup
	for i, e := range s.entries {
		if e.r == nil {
			merrs[i] = fmt.Errorf("%s: %s", e.label, e.failure)
			continue
		}
		wg.Go(func() {
			if err := e.r.UpdateLag(ctx); err != nil {
				merrs[i] = fmt.Errorf("%s: %w", e.label, err)
			}
		})
	}
	for _, e := range s.excluded {
		// Not counted, but measured, so that a delay removed shows below.
		wg.Go(func() { _ = e.r.UpdateLag(ctx) })
	}
	wg.Wait()
	errs = append(errs, merrs...)
	d.opMu.Lock()
	if mctx.Err() == nil {
		d.publish() // a delay set or removed, as just measured
	}
	d.opMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("throttler: update lag: %w", err)
	}
	return nil
}

// ThrottleReason is "" when not throttled; otherwise it names every
// throttling member and its reason, separated by "; ", for example
// "10.0.0.7:3306 (server_id 3): replica lag 4.1s >= 1s".
func (d *Discovery) ThrottleReason() string {
	s := d.cur.Load()
	if s == nil || s.released || d.gate.Released() {
		return ""
	}
	_, reason, _ := s.verdict(d.rule)
	return reason
}

// verdict is r's verdict on s (see memberRule.judge): every throttling
// member that is not skipped and its reason, each member's state read at
// once; kind is the first one's ("cannot be watched" for a failed member).
func (s *discoverySet) verdict(r *memberRule) (kind, reason string, tolerated []string) {
	sk := r.skips.Load()
	var vs []memberVerdict
	for _, e := range s.entries {
		if !e.always && sk.has(e.name) {
			continue
		}
		k, why := "cannot be watched", e.failure
		if e.r != nil {
			var throttled bool
			if throttled, k, why = e.r.poll.Gate().State(); !throttled {
				continue
			}
		}
		vs = append(vs, memberVerdict{kind: k, text: e.label + ": " + why, always: e.always})
	}
	return r.judge(vs)
}

// Lag is the largest lag last measured on a watched member; 0 when none.
func (d *Discovery) Lag() time.Duration {
	var worst time.Duration
	if s := d.cur.Load(); s != nil {
		for _, r := range s.watched {
			worst = max(worst, r.Lag())
		}
	}
	return worst
}

// Replicas names the current members, watched, failed or left out for a
// configured delay (Excluded), as host:port ("server_id N" for one listed
// without a host), sorted. It is empty before Open and after the Discovery
// stopped.
func (d *Discovery) Replicas() []string {
	s := d.cur.Load()
	if s == nil {
		return nil
	}
	return slices.Clone(s.names)
}

// Excluded maps each member of Replicas that is left out, and so never
// throttles, to why (a configured delay, without
// DiscoveryConfig.IncludeDelayed); nil when none is.
func (d *Discovery) Excluded() map[string]string {
	s := d.cur.Load()
	if s == nil || len(s.excluded) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.excluded))
	for _, e := range s.excluded {
		out[e.name] = e.why
	}
	return out
}

// String is the name given with WithName, or "replica discovery".
func (d *Discovery) String() string { return d.name }

// Stats is what the Discovery has done since Open (see Stats): its own
// state and waits, and the measurements of every member it watches now.
func (d *Discovery) Stats() Stats {
	var ok, failed int64
	var last time.Time
	if s := d.cur.Load(); s != nil {
		for _, r := range s.watched {
			o, f, l := r.poll.Counts()
			ok, failed = ok+o, failed+f
			if l.After(last) {
				last = l
			}
		}
	}
	st := statsOf(d.gate.Ledger(), ok, failed, last)
	if s := d.cur.Load(); s != nil && !s.released && !st.Released {
		_, _, st.Tolerated = s.verdict(d.rule)
		st.Skipped = d.rule.skipped()
	}
	return st
}

func (d *Discovery) stateGate() *gate.Gate { return &d.gate }

var (
	_ Throttler   = (*Discovery)(nil)
	_ Reasoner    = (*Discovery)(nil)
	_ LagReporter = (*Discovery)(nil)
	_ Waiter      = (*Discovery)(nil)
)
