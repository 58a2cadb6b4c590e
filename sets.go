package throttler

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WithTolerateMembers makes a replica set (NewReplicasThrottler,
// NewDiscovery) throttle only while more than n of its members throttle
// (lag, replication not flowing, stale, cannot be watched), like freno's
// IgnoreHostsCount: a job that copies to a fleet need not stop for one
// replica that is down for maintenance. While n or fewer throttle, the set
// is clear (ThrottleReason is "") and Stats.Tolerated names them with their
// reasons; once more do, ThrottleReason names every one. 0, the default,
// tolerates none. A negative n is an error, and so is, for
// NewReplicasThrottler, an n that tolerates every replica: the set would
// never throttle. A Discovery's stale replica list is not a member and is
// never tolerated.
func WithTolerateMembers(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.errs = append(o.errs, fmt.Errorf("WithTolerateMembers(%d): the number of members tolerated must not be negative", n))
		}
		o.tolerate, o.given = n, o.given|optTolerate
	}
}

// withoutSetOptions drops the options of a set from the options its
// members are built with: the set applies them, a member has no use for
// them (and would reject them by name). WithOnChange is the set's too: its
// callback hears the set's changes, not each member's.
func withoutSetOptions() Option {
	return func(o *options) { o.tolerate, o.onChange, o.given = 0, nil, o.given&^optTolerate }
}

// memberRule is how a set of members (a Multi, a Discovery) judges them:
// how many throttling members it tolerates (WithTolerateMembers) and which
// it skips for a while (Skip). The skips are an immutable snapshot behind
// an atomic pointer, so that the hot path reads them with one load, and a
// timer per skip ends it: nothing polls.
type memberRule struct {
	tolerate int

	skips atomic.Pointer[skipSet] // never nil once newMemberRule returned

	mu       sync.Mutex // guards the fields below, and serialises swaps of skips
	timers   map[string]*time.Timer
	watchers []func() // recompute the owners' states; run after a change, without mu
	stopped  bool
}

// skipSet is the members skipped at one moment, by name, and when each
// skip ends. changed ends when the set is replaced, to wake the waits that
// counted with it.
type skipSet struct {
	until   map[string]time.Time
	changed context.Context
	cancel  context.CancelFunc
}

func newMemberRule(tolerate int) *memberRule {
	r := &memberRule{tolerate: tolerate, timers: map[string]*time.Timer{}}
	r.swapLocked(nil)
	return r
}

// has reports whether name is skipped: no allocation, no lock.
func (s *skipSet) has(name string) bool {
	if len(s.until) == 0 {
		return false
	}
	_, ok := s.until[name]
	return ok
}

// watch makes f run after every change of the skips.
func (r *memberRule) watch(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, f)
}

// swapLocked publishes a new skip set, changed by f, and wakes the waits
// that counted with the old one. Caller holds mu.
func (r *memberRule) swapLocked(f func(map[string]time.Time)) {
	old := r.skips.Load()
	s := &skipSet{}
	if old != nil {
		s.until = maps.Clone(old.until)
	}
	if s.until == nil {
		s.until = map[string]time.Time{}
	}
	if f != nil {
		f(s.until)
	}
	s.changed, s.cancel = context.WithCancel(context.Background())
	r.skips.Store(s)
	if old != nil {
		old.cancel()
	}
}

// changed runs the watchers.
func (r *memberRule) changed() {
	r.mu.Lock()
	ws := r.watchers
	r.mu.Unlock()
	for _, f := range ws {
		f()
	}
}

// skip skips name for d; the caller has checked the name.
func (r *memberRule) skip(name string, d time.Duration) error {
	if err := checkSpan(fmt.Sprintf("Skip(%q, %v): the skip", name, d), d, ""); err != nil {
		return configError([]error{err})
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return fmt.Errorf("throttler: skip: %w", ErrClosed)
	}
	if t := r.timers[name]; t != nil {
		t.Stop()
	}
	until := time.Now().Add(d)
	r.timers[name] = time.AfterFunc(d, func() { r.expire(name, until) })
	r.swapLocked(func(m map[string]time.Time) { m[name] = until })
	r.mu.Unlock()
	r.changed()
	return nil
}

// expire ends name's skip if it is still the one that ends at until.
func (r *memberRule) expire(name string, until time.Time) {
	r.mu.Lock()
	if r.stopped || !r.skips.Load().until[name].Equal(until) {
		r.mu.Unlock()
		return
	}
	delete(r.timers, name)
	r.swapLocked(func(m map[string]time.Time) { delete(m, name) })
	r.mu.Unlock()
	r.changed()
}

// unskip ends name's skip now; it reports whether there was one.
func (r *memberRule) unskip(name string) bool {
	r.mu.Lock()
	if r.stopped || !r.skips.Load().has(name) {
		r.mu.Unlock()
		return false
	}
	r.timers[name].Stop()
	delete(r.timers, name)
	r.swapLocked(func(m map[string]time.Time) { delete(m, name) })
	r.mu.Unlock()
	r.changed()
	return true
}

// stop disarms every skip's timer once the owner is released for good;
// skips fail with ErrClosed after.
func (r *memberRule) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	for name, t := range r.timers {
		t.Stop()
		delete(r.timers, name)
	}
}

// skipped is Stats.Skipped: "name (until <time>)", sorted by name.
func (r *memberRule) skipped() []string {
	s := r.skips.Load()
	if len(s.until) == 0 {
		return nil
	}
	out := make([]string, 0, len(s.until))
	for _, name := range slices.Sorted(maps.Keys(s.until)) {
		out = append(out, name+" (until "+s.until[name].Format(time.RFC3339)+")")
	}
	return out
}

// memberVerdict is one throttling member as a set's reason names it.
type memberVerdict struct {
	kind, text string // text: "<name>: <reason>"
	always     bool   // not a member (a stale replica list): never tolerated
}

// judge is the set's verdict on its throttling, unskipped members: the
// first one's kind and every one's text when they are more than the rule
// tolerates (or one of them is never tolerated); otherwise "" and "", and
// the tolerated members' texts.
func (r *memberRule) judge(vs []memberVerdict) (kind, reason string, tolerated []string) {
	if len(vs) == 0 {
		return "", "", nil
	}
	texts := make([]string, len(vs))
	throttled := len(vs) > r.tolerate
	for i, v := range vs {
		texts[i] = v.text
		throttled = throttled || v.always
	}
	if !throttled {
		return "", "", texts
	}
	return vs[0].kind, strings.Join(texts, "; "), nil
}

// Skip makes the Multi ignore the child name for d, then count it again by
// itself (freno's skip-host with a TTL): a replica being rebuilt, say. name
// is the child's name as reasons give it (for NewReplicasThrottler, the
// replica's key). A skipped child is still watched, so that it is current
// when it counts again, but it neither throttles nor is tolerated;
// Stats.Skipped names it. Skipping a child skipped already sets its new
// end. d must be positive and at most a week; a bad d or an unknown name is
// an error wrapping ErrInvalidConfig. Skips may be given before Open (the
// time counts), are shared with the Multi's views (Only), and end when the
// Multi is released (ErrClosed after).
func (m *Multi) Skip(name string, d time.Duration) error {
	if err := m.known(name); err != nil {
		return err
	}
	return m.rule.skip(name, d)
}

// Unskip counts the child name again now. Unskipping a child that is not
// skipped does nothing; an unknown name is an error wrapping
// ErrInvalidConfig.
func (m *Multi) Unskip(name string) error {
	if err := m.known(name); err != nil {
		return err
	}
	m.rule.unskip(name)
	return nil
}

func (m *Multi) known(name string) error {
	if m.invalid != nil {
		return m.invalid
	}
	if !slices.Contains(m.names, name) {
		return fmt.Errorf("%w: no child named %q (the children are %s)", ErrInvalidConfig, name, strings.Join(m.names, ", "))
	}
	return nil
}

// Only returns a view of the Multi that waits on the named children only,
// as a Multi holding just them would (Spirit's GradualOnly: a checksum
// waits on the load, not on the lag, while the copy waits on both). The
// names are the children's names as reasons give them.
//
// The view shares the children: its Open and Close neither open nor close
// them (the Multi does), and its UpdateLag measures its children only. It
// keeps the package contract on its own terms: IsThrottled is false before
// its Open and once it is released, which happens at its Close, at the end
// of its Open's context, and when the Multi is released. Open it once the
// Multi is open (before, its children are not open and nothing throttles).
// It shares the Multi's rule: the skips (Skip on either skips for both)
// and the members a replica set tolerates. Its Stats and SetOnChange are
// its own. A view follows its children's changes until the Multi is
// released: make one per use, not one per chunk.
//
// An unknown name, a name given twice, or no name is an error wrapping
// ErrInvalidConfig.
func (m *Multi) Only(names ...string) (*Multi, error) {
	if m.invalid != nil {
		return nil, m.invalid
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: Only: no child named", ErrInvalidConfig)
	}
	var idx []int
	for _, name := range names {
		i := slices.Index(m.names, name)
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: Only: no child named %q (the children are %s)", ErrInvalidConfig, name, strings.Join(m.names, ", "))
		case slices.Contains(idx, i):
			return nil, fmt.Errorf("%w: Only: %q named twice", ErrInvalidConfig, name)
		}
		idx = append(idx, i)
	}
	slices.Sort(idx) // the Multi's order, for reasons
	v := &Multi{parent: m, rule: m.rule, kids: make([]multiKid, len(idx))}
	for _, i := range idx {
		v.children = append(v.children, m.children[i])
		v.names = append(v.names, m.names[i])
		if p := childPacer(m.children[i]); p != nil {
			v.pacedKids = append(v.pacedKids, p)
		}
	}
	v.name = m.name + " (only " + strings.Join(v.names, ", ") + ")"
	v.kidsCtx, v.kidsCancel = context.WithCancel(context.Background())
	v.life.Gate, v.life.OnEnd = &v.gate, v.kidsCancel
	// The Multi's release is the view's: waits end with it, and the view's
	// gate reads released (Stats, OnChange).
	v.unparent = context.AfterFunc(m.kidsCtx, func() { v.life.Close() })
	for _, t := range v.children {
		watchChild(t, v.refresh)
	}
	m.rule.watch(v.refresh)
	return v, nil
}

// openView opens a view: no child is opened, the view only starts its life.
func (m *Multi) openView(ctx context.Context) error {
	if _, err := m.life.Begin(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	err := ctx.Err()
	if err == nil && m.parent.ended() {
		err = ErrClosed
	}
	if err != nil {
		if m.life.Abort() != nil {
			err = ErrClosed
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	if err := m.life.Start(nil, nil); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	m.viewOpen.Store(true)
	m.refresh()
	return nil
}

// checkView is UpdateLag's check for a view: ErrNotOpen before its Open,
// ErrClosed once released.
func (m *Multi) checkView() error {
	life, err := m.life.Context()
	if err == nil && (life.Err() != nil || m.ended()) {
		err = ErrClosed
	}
	if err != nil {
		return fmt.Errorf("throttler: update lag: %w", err)
	}
	return nil
}

// Skip makes the Discovery ignore the member name for d, then count it
// again by itself (freno's skip-host with a TTL). name is the member's
// host:port as Replicas gives it. A skipped member is still watched, so
// that it is current when it counts again, but it neither throttles nor is
// tolerated; Stats.Skipped names it. Skipping a member skipped already sets
// its new end; a skip outlives the member's leaving the set and applies if
// it comes back. d must be positive and at most a week; a bad d or a name
// that is not a current member is an error wrapping ErrInvalidConfig.
// Before Open (there are no members yet) it is ErrNotOpen, once released
// ErrClosed.
func (d *Discovery) Skip(name string, dur time.Duration) error {
	if err := d.knownMember(name); err != nil {
		return err
	}
	return d.rule.skip(name, dur)
}

// Unskip counts the member name again now. Unskipping a member that is not
// skipped does nothing.
func (d *Discovery) Unskip(name string) error {
	if d.rule.unskip(name) {
		return nil
	}
	return d.knownMember(name)
}

func (d *Discovery) knownMember(name string) error {
	s := d.cur.Load()
	switch {
	case s == nil:
		return fmt.Errorf("throttler: skip: %w", ErrNotOpen)
	case s.released || d.gate.Released():
		return fmt.Errorf("throttler: skip: %w", ErrClosed)
	case !slices.Contains(s.names, name):
		return fmt.Errorf("%w: no member named %q (the members are %s)", ErrInvalidConfig, name, strings.Join(s.names, ", "))
	}
	return nil
}
