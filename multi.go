package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
)

// Multi combines throttlers: it is throttled while any of them is. Use it to
// watch several replicas, or several signals (lag, load, a schedule), with
// one BlockWait per chunk.
//
// Multi adds no goroutine of its own while clear: IsThrottled asks each child
// in turn (each an atomic load), and an unthrottled BlockWait does the same.
// A throttled BlockWait waits on all throttled children at once, so the wait
// is as long as the slowest child's, not the sum; it returns at once when
// its context ends or the Multi is closed. Each child keeps its own monitor,
// so one slow replica never delays the verdict on the others.
//
// Open opens the children concurrently; if any fails, it closes those it
// opened and returns every error. Close closes them all and joins their
// errors. ThrottleReason names every throttling child, by its String method
// (see WithName) or its position.
type Multi struct {
	children []Throttler
	names    []string

	mu    sync.Mutex // guards phase
	phase phase
	// closed ends when Close is called; it ends throttled waits even on a
	// child that does not release on Close.
	closed      context.Context
	closeCancel context.CancelFunc

	// pace, from NewReplicasThrottler with WithPacing, paces callers once
	// no child is throttled; the children steer it. pacedKids are the
	// children that pace their own callers (a Replication or Discovery
	// with WithPacing, a Multi holding one): a call waits for its turn with
	// each of them too.
	pace      *pacer
	pacedKids []pacedThrottler
}

// pacedThrottler is a throttler whose waits may also pace (WithPacing).
type pacedThrottler interface {
	// paced reports whether its waits pace; paceWait waits for one call's
	// turn, returning ErrClosed once it stopped, ErrMaxWait past its cap,
	// or ctx's error.
	paced() bool
	paceWait(ctx context.Context) error
}

type phase int

const (
	phaseNew phase = iota
	phaseOpening
	phaseOpen
	phaseClosed
)

// NewMulti returns a throttler that is throttled while any of ts is. It
// takes ownership of ts: open and close them through the Multi.
func NewMulti(ts ...Throttler) *Multi {
	m := &Multi{children: ts, names: make([]string, len(ts))}
	m.closed, m.closeCancel = context.WithCancel(context.Background())
	for i, t := range ts {
		if p, ok := t.(pacedThrottler); ok && t != nil && p.paced() {
			m.pacedKids = append(m.pacedKids, p)
		}
		m.names[i] = fmt.Sprintf("throttler %d", i+1)
		if s, ok := t.(fmt.Stringer); ok && t != nil {
			m.names[i] = s.String()
		}
	}
	return m
}

func (m *Multi) check() error {
	for i, t := range m.children {
		if t == nil {
			return fmt.Errorf("%w: NewMulti: throttler %d is nil", ErrInvalidConfig, i+1)
		}
	}
	return nil
}

// Open opens every child concurrently. If any fails, it closes the children
// it opened and returns all the errors, each naming its child.
func (m *Multi) Open(ctx context.Context) error {
	if err := m.check(); err != nil {
		return err
	}
	m.mu.Lock()
	switch m.phase {
	case phaseOpening, phaseOpen:
		m.mu.Unlock()
		return ErrAlreadyOpen
	case phaseClosed:
		m.mu.Unlock()
		return ErrClosed
	}
	m.phase = phaseOpening
	m.mu.Unlock()

	errs := make([]error, len(m.children))
	m.each(func(i int, t Throttler) {
		if err := t.Open(ctx); err != nil {
			errs[i] = fmt.Errorf("%s: %w", m.names[i], err)
		}
	})
	err := errors.Join(errs...)

	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil && m.phase == phaseClosed { // Close ran while we opened
		err = ErrClosed
	}
	if err != nil {
		m.each(func(i int, t Throttler) {
			if errs[i] == nil {
				_ = t.Close()
			}
		})
		if m.phase != phaseClosed {
			m.phase = phaseNew
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	m.phase = phaseOpen
	return nil
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

// Close closes every child and joins their errors. It is idempotent.
func (m *Multi) Close() error {
	m.mu.Lock()
	if m.phase == phaseClosed {
		m.mu.Unlock()
		return nil
	}
	m.phase = phaseClosed
	m.closeCancel()
	m.mu.Unlock()
	if m.check() != nil {
		return nil
	}
	errs := make([]error, len(m.children))
	m.each(func(i int, t Throttler) {
		if err := t.Close(); err != nil {
			errs[i] = fmt.Errorf("%s: %w", m.names[i], err)
		}
	})
	return errors.Join(errs...)
}

// IsThrottled reports whether any child is throttled. It asks each child's
// IsThrottled, so it does no I/O and no allocation when they do none.
func (m *Multi) IsThrottled() bool {
	for _, t := range m.children {
		if t != nil && t.IsThrottled() {
			return true
		}
	}
	return false
}

// BlockWait returns at once when no child is throttled. Otherwise it waits
// on every throttled child at once, and again on any child that became
// throttled meanwhile, until none is, ctx is done, the Multi is closed, or a
// child's wait ended while that child was still throttled (its own
// WithMaxWait cap).
func (m *Multi) BlockWait(ctx context.Context) {
	if m.paced() || m.IsThrottled() {
		_ = m.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned: nil when no child is
// throttled, ErrMaxWait when a child's cap elapsed while it was still
// throttled, ErrClosed when the Multi was closed, or ctx's error.
func (m *Multi) Wait(ctx context.Context) error {
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
	if m.pace != nil {
		if err := paceError(m.pace.wait(ctx, m.maxWait()), m.closed.Err() != nil); err != nil {
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

// maxWait is the paced wait's cap: the children's (NewReplicasThrottler
// gives them all the same options).
func (m *Multi) maxWait() time.Duration {
	if r, ok := m.children[0].(*Replication); ok {
		return r.maxWait
	}
	return defaultMaxWait
}

func (m *Multi) waitClear(ctx context.Context) error {
	for {
		throttled := m.throttledChildren()
		if len(throttled) == 0 {
			return nil
		}
		if m.closed.Err() != nil {
			return ErrClosed
		}
		wctx, cancel := context.WithCancel(ctx)
		// AfterFunc starts no goroutine unless Close is called.
		unwatch := context.AfterFunc(m.closed, cancel)
		var wg sync.WaitGroup
		for _, i := range throttled {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.children[i].BlockWait(wctx)
			}()
		}
		wg.Wait()
		unwatch()
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.closed.Err() != nil {
			return ErrClosed
		}
		for _, i := range throttled {
			if m.children[i].IsThrottled() {
				return fmt.Errorf("%w: %s", ErrMaxWait, m.ThrottleReason())
			}
		}
	}
}

func (m *Multi) throttledChildren() []int {
	var out []int
	for i, t := range m.children {
		if t != nil && t.IsThrottled() {
			out = append(out, i)
		}
	}
	return out
}

// UpdateLag updates every child concurrently and joins their errors.
func (m *Multi) UpdateLag(ctx context.Context) error {
	if err := m.check(); err != nil {
		return err
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
// "; ", or "" when none is throttled.
func (m *Multi) ThrottleReason() string {
	var b strings.Builder
	for i, t := range m.children {
		if t == nil || !t.IsThrottled() {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(m.names[i])
		if r, ok := t.(Reasoner); ok {
			if reason := r.ThrottleReason(); reason != "" {
				b.WriteString(": ")
				b.WriteString(reason)
			}
		} else {
			b.WriteString(": throttled")
		}
	}
	return b.String()
}

// Lag is the largest Lag of the children that report one.
func (m *Multi) Lag() time.Duration {
	var worst time.Duration
	for _, t := range m.children {
		if l, ok := t.(LagReporter); ok {
			worst = max(worst, l.Lag())
		}
	}
	return worst
}

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
// options apply to every replica.
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
	if o, _ := buildOptions(opts, ""); o.pacing {
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
	m.pace = pace
	return m, nil
}
