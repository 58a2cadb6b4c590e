package throttler

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
)

// Multi combines throttlers: it is throttled while any of them is (skipped
// ones aside, see Skip; more than WithTolerateMembers, for a replica set).
// Use it to watch several replicas, or several signals (lag, load, a
// schedule), with one BlockWait per chunk; Only gives a view that waits on
// some of them.
//
// Multi adds no goroutine of its own while clear: IsThrottled asks each child
// in turn (each an atomic load), and an unthrottled BlockWait does the same.
// A throttled BlockWait waits on all throttled children at once, so the wait
// is as long as the slowest child's, not the sum; it returns at once when
// its context ends or the Multi is closed. Each child keeps its own monitor,
// so one slow replica never delays the verdict on the others.
//
// Open opens the children concurrently (see Open for a failed Open). Close
// closes them all and joins their errors. The Multi is released when Close
// is called or Open's context ends whatever its children do (a Mock ignores
// Open's context).
// ThrottleReason names every throttling child by its String method (see
// WithName), with " #<position>" added when several children share a name
// (unnamed replicas are all "replication"), or by its position.
type Multi struct {
	children []Throttler
	names    []string
	// invalid is why the Multi cannot be used (a nil child), or nil. A
	// Multi holding a nil child never opens, is never throttled, and asks
	// no child anything but Close.
	invalid error

	// life is the Multi's lifecycle: its gate reads as released once the
	// Multi is (Close, or the end of the context of the Open that
	// succeeded), and its end cancels kidsCtx.
	life lifecycle.Runner
	// gate holds the combined state for Stats and OnChange, recomputed
	// (refresh) whenever a child of this package changes; IsThrottled
	// still asks the children, which may be of any kind.
	gate      gate.Gate
	refreshMu sync.Mutex
	name      string

	mu   sync.Mutex // guards kids
	kids []multiKid
	// opens counts the child Opens in flight, which may outlive the Open
	// that started them; Close waits for them.
	opens sync.WaitGroup

	// kidsCtx is the context the children are opened with. It ends when
	// the Multi's life does, or on Close before any Open succeeded; it also
	// ends throttled waits even on a child that does not release on Close.
	kidsCtx    context.Context
	kidsCancel context.CancelFunc

	// pace, from NewReplicasThrottler with WithPacing, paces callers once
	// no child is throttled; the children steer it. pacedKids are the
	// children that pace their own callers (a Replication or Discovery
	// with WithPacing, a Multi holding one): a call waits for its turn with
	// each of them too.
	pace        *pacer
	paceMaxWait time.Duration // the replicas' WithMaxWait, for pace
	pacedKids   []pacedThrottler

	// rule is how the children count: the ones skipped (Skip) and, for a
	// replica set, how many throttling ones are tolerated. A view (Only)
	// shares its parent's.
	rule *memberRule
	// parent is the Multi a view (Only) looks at, nil for a Multi;
	// unparent stops the view's following its parent's release.
	parent   *Multi
	unparent func() bool
	viewOpen atomic.Bool // a view's Open succeeded
}

// multiKid is one child's Open state.
type multiKid struct {
	open    bool
	opening *multiOpening // non-nil while its Open is in flight
}

// multiOpening is one child Open in flight; err is set before done closes.
type multiOpening struct {
	done chan struct{}
	err  error
}

// Pacer is implemented by a throttler whose waits also pace its callers to
// a rate it is given, such as a Doorman grant (the nested module
// github.com/throttlekit/throttler/doorman): a Multi holding one makes
// each call wait for its turn with it, once no child is throttled, as it
// does for a replica with WithPacing.
type Pacer interface {
	// PaceWait waits for one call's turn at the rate, and only for that:
	// nil, ErrClosed once the throttler stopped, ErrMaxWait when its
	// per-call cap elapsed first, or ctx's error. Wait waits for a
	// throttle to clear first.
	PaceWait(ctx context.Context) error
}

// pacerKid is a Pacer as a Multi's pacing child.
type pacerKid struct{ Pacer }

func (k pacerKid) paced() bool                        { return true }
func (k pacerKid) paceWait(ctx context.Context) error { return k.PaceWait(ctx) }

// pacedThrottler is a throttler whose waits may also pace (WithPacing).
type pacedThrottler interface {
	// paced reports whether its waits pace; paceWait waits for one call's
	// turn, returning ErrClosed once it stopped, ErrMaxWait past its cap,
	// or ctx's error.
	paced() bool
	paceWait(ctx context.Context) error
}

// NewMulti returns a throttler that is throttled while any of ts is. It
// takes ownership of ts: open and close them through the Multi. A nil
// throttler among ts, including a nil pointer of a throttler type such as
// (*Replication)(nil), makes Open and UpdateLag return an error wrapping
// ErrInvalidConfig; such a Multi is never throttled, and Close closes the
// others.
func NewMulti(ts ...Throttler) *Multi {
	m := &Multi{children: ts, names: make([]string, len(ts)), kids: make([]multiKid, len(ts)), rule: newMemberRule(0)}
	m.kidsCtx, m.kidsCancel = context.WithCancel(context.Background())
	m.life.Gate = &m.gate
	m.life.OnEnd = func() {
		m.kidsCancel()
		m.rule.stop()
	}
	seen := make(map[string]int, len(ts))
	for i, t := range ts {
		if isNil(t) {
			if m.invalid == nil {
				m.invalid = fmt.Errorf("%w: NewMulti: throttler %d is nil", ErrInvalidConfig, i+1)
			}
			continue
		}
		if p := childPacer(t); p != nil {
			m.pacedKids = append(m.pacedKids, p)
		}
		m.names[i] = fmt.Sprintf("throttler %d", i+1)
		if s, ok := t.(fmt.Stringer); ok {
			m.names[i] = s.String()
		}
		seen[m.names[i]]++
	}
	for i, name := range m.names {
		if seen[name] > 1 { // "replication" twice: say which one
			m.names[i] = fmt.Sprintf("%s #%d", name, i+1)
		}
	}
	if m.invalid == nil {
		for _, t := range ts {
			watchChild(t, m.refresh)
		}
		m.rule.watch(m.refresh)
	}
	m.name = "multi"
	return m
}

// observable is a throttler of this package: a Multi watches its gate to
// keep its own state (Stats, OnChange) without polling.
type observable interface{ stateGate() *gate.Gate }

// watchChild makes f run after every change of child t's state, where t can
// say (see observable, StateWatcher).
func watchChild(t Throttler, f func()) {
	switch o := t.(type) {
	case observable:
		o.stateGate().Watch(f)
	case StateWatcher:
		o.WatchState(f)
	}
}

// childPacer is child t as a pacing child of a Multi (a call waits for its
// turn with it too), or nil when its waits do not pace.
func childPacer(t Throttler) pacedThrottler {
	if p, ok := t.(pacedThrottler); ok && p.paced() {
		return p
	}
	if p, ok := t.(Pacer); ok {
		return pacerKid{p}
	}
	return nil
}

// StateWatcher is implemented by a throttler of another module (Doorman's)
// that can say when its state changes, so that a Multi holding it keeps its
// own Stats and Changes current without polling.
type StateWatcher interface {
	// WatchState adds f, called after every change of the throttler's
	// state, on the goroutine that made it; f must not block.
	WatchState(f func())
}

// SetOnChange calls f once per change of the Multi's combined state, as
// WithOnChange does for the other throttlers (name is the Multi's name in
// each Change; "" keeps "multi"). The Multi follows its children of this
// package, and those that are a StateWatcher, as they change; another child
// is looked at when a change, a wait or Stats comes. Call it before Open.
func (m *Multi) SetOnChange(name string, f func(Change)) {
	if name != "" {
		m.name = name
	}
	m.gate.Observe(nil, options{onChange: f}.notifier(m.name))
}

// refresh publishes the combined state of the children.
func (m *Multi) refresh() {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	if m.idle() {
		return
	}
	kind, reason, _ := m.rule.judge(m.verdicts())
	m.gate.Set(reason != "", kind, reason)
}

// verdicts are the throttling children the rule counts (not skipped), each
// child's state read at once, so that a child clearing meanwhile is either
// throttled with its reason or clear.
func (m *Multi) verdicts() []memberVerdict {
	sk := m.rule.skips.Load()
	var vs []memberVerdict
	for i, t := range m.children {
		if sk.has(m.names[i]) {
			continue
		}
		throttled, k, reason := false, "throttled", ""
		if o, ok := t.(observable); ok {
			throttled, k, reason = o.stateGate().State()
		} else if throttled = t.IsThrottled(); throttled {
			reason = reasonOf(t)
		}
		if throttled {
			vs = append(vs, memberVerdict{kind: k, text: m.names[i] + ": " + cmp.Or(reason, "throttled")})
		}
	}
	return vs
}

// reasonOf is t's ThrottleReason, or "" when it has none.
func reasonOf(t Throttler) string {
	if r, ok := t.(Reasoner); ok {
		return r.ThrottleReason()
	}
	return ""
}

// Stats is what the Multi has done since Open (see Stats): its combined
// state and its own waits, and the measurements of its children, summed.
func (m *Multi) Stats() Stats {
	if m.invalid != nil {
		return Stats{}
	}
	m.refresh()
	st := statsOf(m.gate.Ledger(), 0, 0, time.Time{})
	if !m.idle() {
		_, _, st.Tolerated = m.rule.judge(m.verdicts())
		st.Skipped = m.rule.skipped()
	}
	for _, t := range m.children {
		if r, ok := t.(StatsReporter); ok {
			c := r.Stats()
			st.Measurements += c.Measurements
			st.Errors += c.Errors
			if c.LastMeasurement.After(st.LastMeasurement) {
				st.LastMeasurement = c.LastMeasurement
			}
		}
	}
	return st
}

func (m *Multi) stateGate() *gate.Gate { return &m.gate }

// isNil reports whether t is nil or holds a nil pointer (or func). A typed
// nil compares unequal to nil inside an interface, and its methods panic on
// the first field they read; only reflect can see through an interface of a
// type this package does not know. NewMulti calls it once per child, so the
// hot path pays nothing.
func isNil(t Throttler) bool {
	if t == nil {
		return true
	}
	switch v := reflect.ValueOf(t); v.Kind() {
	case reflect.Pointer, reflect.Func:
		return v.IsNil()
	}
	return false
}

func (m *Multi) check() error { return m.invalid }

// multiChildError names the child an error came from. It drops the child's
// own "throttler: open: " so that the Multi's prefix appears once, and
// unwraps to the child's error.
type multiChildError struct {
	name string
	err  error
}

func (e *multiChildError) Error() string {
	return e.name + ": " + strings.TrimPrefix(e.err.Error(), "throttler: open: ")
}

func (e *multiChildError) Unwrap() error { return e.err }

// Open opens every child not yet open, concurrently, and returns once all
// their Opens have returned or ctx is done, whichever comes first, with
// every error, each naming its child.
//
// A failed Open may be retried, because it closes nothing: a child cannot
// be opened again once closed. The children that opened stay open, and a
// retry opens only the others. For that, the children are opened with a
// context of the Multi's own (carrying none of ctx's values), which ends
// when Close is called or when ctx of the Open that succeeded ends: ctx
// bounds the watch, as for every throttler. If ctx ends before a child's
// Open returns, Open returns ctx's error naming that child, whose Open goes
// on in the background (bounded by its own timeouts, WithQueryTimeout); a
// retry waits for it, and Close ends it. Until an Open succeeds, the
// children that opened watch and may throttle; Close them through the Multi
// when giving up.
func (m *Multi) Open(ctx context.Context) error {
	if err := m.check(); err != nil {
		return err
	}
	if m.parent != nil {
		return m.openView(ctx)
	}
	life, err := m.life.Begin(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	waits := make([]*multiOpening, len(m.children))
	for i := range m.children {
		if !m.kids[i].open {
			if m.kids[i].opening == nil {
				m.kids[i].opening = m.startOpen(i)
			}
			waits[i] = m.kids[i].opening
		}
	}
	m.mu.Unlock()

	errs := make([]error, len(m.children))
	for i, o := range waits {
		if o == nil {
			continue
		}
		select {
		case <-o.done:
			if o.err != nil {
				errs[i] = &multiChildError{m.names[i], o.err}
			}
		case <-life.Done(): // ctx, or Close
			select {
			case <-o.done:
				if o.err != nil {
					errs[i] = &multiChildError{m.names[i], o.err}
				}
			default:
				errs[i] = fmt.Errorf("%s: still opening: %w", m.names[i], context.Cause(life))
			}
		}
	}
	err = errors.Join(errs...)
	if err == nil {
		err = ctx.Err() // the children stay open for a retry
	}
	if err != nil {
		if m.life.Abort() != nil {
			err = ErrClosed // Close ran while we opened
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	if err := m.life.Start(nil, nil); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	return nil
}

// startOpen opens child i in the background with kidsCtx. Caller holds
// m.mu, during an Open, which Close waits for before it waits for opens.
func (m *Multi) startOpen(i int) *multiOpening {
	o := &multiOpening{done: make(chan struct{})}
	m.opens.Add(1)
	go func() {
		defer m.opens.Done()
		err := m.children[i].Open(m.kidsCtx)
		m.mu.Lock()
		m.kids[i].opening = nil
		m.kids[i].open = err == nil
		m.mu.Unlock()
		o.err = err
		close(o.done)
	}()
	return o
}

// each runs f for every child concurrently and waits for all.
func (m *Multi) each(f func(i int, t Throttler)) {
	if len(m.children) == 1 {
		f(0, m.children[0])
		return
	}
	var wg sync.WaitGroup
	for i, t := range m.children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, t)
		}()
	}
	wg.Wait()
}

// Close ends every child Open in flight, closes every child and joins their
// errors. It is idempotent.
func (m *Multi) Close() error {
	if !m.life.Close() {
		return nil
	}
	m.kidsCancel()       // also when no Open succeeded
	if m.parent != nil { // a view: the children are its parent's
		m.unparent()
		return nil
	}
	m.rule.stop()
	m.opens.Wait()
	errs := make([]error, len(m.children))
	m.each(func(i int, t Throttler) {
		if isNil(t) {
			return
		}
		if err := t.Close(); err != nil {
			errs[i] = fmt.Errorf("%s: %w", m.names[i], err)
		}
	})
	return errors.Join(errs...)
}

// ended reports whether the Multi is released for good: Close was called or
// the context of the Open that succeeded is done. It takes no lock and
// allocates nothing.
func (m *Multi) ended() bool { return m.gate.Released() || m.parent != nil && m.parent.ended() }

// idle reports whether the Multi has nothing to say: released, or a view
// not yet open (its children may be throttled for its parent).
func (m *Multi) idle() bool { return m.ended() || m.parent != nil && !m.viewOpen.Load() }

// IsThrottled reports whether any child is throttled (more than a replica
// set tolerates; a skipped child does not count). It asks each child's
// IsThrottled, so it does no I/O and no allocation when they do none; it is
// false for a Multi holding a nil child.
func (m *Multi) IsThrottled() bool {
	if m.invalid != nil || m.idle() {
		return false
	}
	return m.count(m.rule.skips.Load(), m.rule.tolerate+1) > m.rule.tolerate
}

// count counts the throttled children that sk does not skip, up to limit.
func (m *Multi) count(sk *skipSet, limit int) int {
	n := 0
	for i, t := range m.children {
		if !sk.has(m.names[i]) && t.IsThrottled() {
			if n++; n >= limit {
				break
			}
		}
	}
	return n
}

// BlockWait waits on every throttled child at once, and again on any child
// that became throttled meanwhile, until none is; a child's wait that ended
// while that child was still throttled (its own WithMaxWait) ends it too.
func (m *Multi) BlockWait(ctx context.Context) {
	if m.paced() || m.IsThrottled() {
		_ = m.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned (see Waiter; ErrMaxWait when a
// child's cap elapsed while it was still throttled).
func (m *Multi) Wait(ctx context.Context) error {
	if m.invalid != nil {
		return nil // never throttled: see NewMulti
	}
	if err := m.waitClear(ctx); err != nil {
		return err
	}
	return m.paceWait(ctx)
}

func (m *Multi) paced() bool { return m != nil && (m.pace != nil || len(m.pacedKids) > 0) }

// paceWait waits for the call's turn with the Multi's own pacer and with
// each pacing child, one after the other: each admits the call at its own
// rate, so together they admit it at the slowest's.
func (m *Multi) paceWait(ctx context.Context) error {
	if m.ended() {
		return ErrClosed
	}
	if m.pace != nil {
		// The replicas leave the set's pacer only when they stop, and they
		// stop only with the Multi.
		if err := paceError(m.pace.wait(ctx, m.paceMaxWait), true); err != nil {
			return err
		}
	}
	for _, p := range m.pacedKids {
		if err := p.paceWait(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (m *Multi) waitClear(ctx context.Context) (err error) {
	var blocked bool
	var start time.Time
	defer func() {
		if blocked {
			m.refresh() // a child of another kind may have changed
			m.gate.CountWait(start, err)
		}
	}()
	switch {
	case m.ended():
		return ErrClosed
	case m.parent != nil && !m.viewOpen.Load():
		return nil
	}
	tolerate := m.rule.tolerate
	for {
		sk := m.rule.skips.Load()
		throttled := m.throttledChildren(sk)
		if len(throttled) <= tolerate {
			return nil
		}
		if !blocked {
			blocked, start = true, time.Now()
		}
		if m.ended() { // whatever a child says, the Multi is released
			return ErrClosed
		}
		wctx, cancel := context.WithCancel(ctx)
		// AfterFunc starts no goroutine unless Close is called, or a skip
		// changes what counts.
		var woke atomic.Bool // the count may be low enough: look again
		wake := func() {
			woke.Store(true)
			cancel()
		}
		unwatch := context.AfterFunc(m.kidsCtx, cancel)
		unskip := context.AfterFunc(sk.changed, wake)
		var wg sync.WaitGroup
		for _, i := range throttled {
			wg.Go(func() {
				m.children[i].BlockWait(wctx)
				// Tolerating some, the set may clear while others
				// still throttle.
				if tolerate > 0 && wctx.Err() == nil && m.count(sk, tolerate+1) <= tolerate {
					wake()
				}
			})
		}
		wg.Wait()
		unwatch()
		unskip()
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.ended() {
			return ErrClosed
		}
		if woke.Load() {
			continue
		}
		// Every wait ended on its own: a child's cap, if it still throttles.
		if sk = m.rule.skips.Load(); m.count(sk, tolerate+1) > tolerate {
			for _, i := range throttled {
				if !sk.has(m.names[i]) && m.children[i].IsThrottled() {
					return fmt.Errorf("%w: %s", ErrMaxWait, m.ThrottleReason())
				}
			}
		}
	}
}

// throttledChildren are the throttled children sk does not skip.
func (m *Multi) throttledChildren(sk *skipSet) []int {
	var out []int
	for i, t := range m.children {
		if !sk.has(m.names[i]) && t.IsThrottled() {
			out = append(out, i)
		}
	}
	return out
}

// UpdateLag updates every child concurrently and joins their errors, each
// naming its child.
func (m *Multi) UpdateLag(ctx context.Context) error {
	if err := m.check(); err != nil {
		return err
	}
	if m.parent != nil {
		if err := m.checkView(); err != nil {
			return err
		}
	}
	errs := make([]error, len(m.children))
	m.each(func(i int, t Throttler) {
		if err := t.UpdateLag(ctx); err != nil {
			errs[i] = fmt.Errorf("%s: %w", m.names[i], err)
		}
	})
	return errors.Join(errs...)
}

// ThrottleReason names every throttling child and its reason, separated by
// "; ", or "" when the Multi is not throttled (none is, or no more than a
// replica set tolerates: Stats.Tolerated names those).
func (m *Multi) ThrottleReason() string {
	if m.invalid != nil || m.idle() {
		return ""
	}
	_, reason, _ := m.rule.judge(m.verdicts())
	return reason
}

// Lag is the largest Lag of the children that report one.
func (m *Multi) Lag() time.Duration {
	if m.invalid != nil {
		return 0
	}
	var worst time.Duration
	for _, t := range m.children {
		if l, ok := t.(LagReporter); ok {
			worst = max(worst, l.Lag())
		}
	}
	return worst
}

// String is the Multi's name in Changes and metrics: "multi", "replicas"
// for NewReplicasThrottler's, or the name given to SetOnChange.
func (m *Multi) String() string { return m.name }

// Throttlers returns the children, in the order given.
func (m *Multi) Throttlers() []Throttler { return append([]Throttler(nil), m.children...) }

var (
	_ Throttler   = (*Multi)(nil)
	_ Reasoner    = (*Multi)(nil)
	_ LagReporter = (*Multi)(nil)
	_ Waiter      = (*Multi)(nil)
)

// NewReplicasThrottler watches several replicas with one throttler: one
// Replication per replica, named by its key (WithName), under one Multi. Each
// replica is polled by its own monitor, so a slow or hung replica never
// delays the verdict on the others, and it fails closed on its own. The
// options apply to every replica, but for WithTolerateMembers, which is the
// set's; Skip skips a replica by its key.
func NewReplicasThrottler(replicas map[string]*sql.DB, lagTolerance time.Duration, logger *slog.Logger, opts ...Option) (*Multi, error) {
	if len(replicas) == 0 {
		return nil, fmt.Errorf("%w: NewReplicasThrottler: no replicas", ErrInvalidConfig)
	}
	names := make([]string, 0, len(replicas))
	for name := range replicas {
		names = append(names, name)
	}
	sort.Strings(names) // a stable order for reasons and logs
	ts := make([]Throttler, 0, len(names))
	var errs []error
	var pace *pacer
	o, problems := buildOptions(opts, "a replica set", replicationOptions|optTolerate)
	if o.given&optTolerate != 0 && o.tolerate >= len(replicas) {
		problems = append(problems, fmt.Errorf("WithTolerateMembers(%d) tolerates every one of the %d replicas: the set would never throttle", o.tolerate, len(replicas)))
	}
	if err := configError(problems); err != nil {
		return nil, err
	}
	opts = append(opts[:len(opts):len(opts)], withoutSetOptions())
	if o.pacing {
		// One rate for the set, the slowest replica's: every replica
		// steers the same pacer, and the Multi paces the callers.
		pace = newPacer()
		opts = append(opts[:len(opts):len(opts)], withSharedPacer(pace))
	}
	for _, name := range names {
		r, err := NewReplicationThrottler(replicas[name], lagTolerance, logger, append(opts[:len(opts):len(opts)], WithName(name))...)
		if err != nil {
			errs = append(errs, fmt.Errorf("replica %q: %w", name, err))
			continue
		}
		ts = append(ts, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	m := NewMulti(ts...)
	m.pace, m.paceMaxWait = pace, o.maxWait
	m.rule.tolerate = o.tolerate
	if o.onChange != nil {
		m.SetOnChange("replicas", o.onChange)
	}
	return m, nil
}
