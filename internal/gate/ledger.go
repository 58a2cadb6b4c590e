package gate

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/throttlekit/throttler/internal/sentinel"
)

// Change is one transition of a gate's verdict: clear to throttled,
// throttled to clear, a change of kind, or the release.
type Change struct {
	Throttled, Released bool
	Kind, Reason        string
	At                  time.Time
	// PrevKind is the kind of the state that ended ("" when clear), and
	// Prev how long it lasted (0 when it began before the accounting did).
	PrevKind string
	Prev     time.Duration
}

// Ledger is what a gate has seen since its accounting began (Account):
// its state, its throttled periods and the waits on it.
type Ledger struct {
	Throttled, Released bool
	Kind, Reason        string
	Since               time.Time // when the current state began
	Episodes            int64
	ThrottledTotal      time.Duration
	ByKind              map[string]time.Duration
	Waits, MaxWaits     int64
	WaitedTotal         time.Duration
}

// observers are the gate's outlets, written under the gate's lock; a
// Gate's zero value has none.
type observers struct {
	log      *slog.Logger
	notify   *Notifier
	watchers []func()
}

// account is the gate's ledger, guarded by Gate.mu.
type account struct {
	started  bool
	frozen   bool
	kind     string // the verdict's kind; "" when clear
	since    time.Time
	episodes int64
	total    time.Duration
	byKind   map[string]time.Duration
	waits    int64
	maxWaits int64
	waited   time.Duration
}

// Observe sets where the gate's changes go: the log line of each change of
// kind (nil: none) and a Notifier (nil: none). Call it before first use.
func (g *Gate) Observe(log *slog.Logger, n *Notifier) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.obs.log, g.obs.notify = log, n
}

// Watch adds f, run after every change of state (a reason's included),
// outside the gate's lock, on the goroutine that made the change: a
// composite throttler recomputes its own verdict from its parts with it.
func (g *Gate) Watch(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.obs.watchers = append(g.obs.watchers, f)
}

// Account starts the accounting, at Open: the state the gate holds now is
// the first period, and a throttled one the first episode. Later calls do
// nothing.
func (g *Gate) Account() {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := &g.acct
	if a.started {
		return
	}
	a.started, a.since = true, time.Now()
	if s := g.cur.Load(); s != nil && s.throttled {
		a.episodes = 1
	}
}

// transition books a change of kind at now, logs it and queues its Change.
// Caller holds g.mu.
func (g *Gate) transition(kind, reason string, released bool, now time.Time) {
	a := &g.acct
	prevKind := a.kind
	var prev time.Duration
	if a.started && !a.frozen {
		prev = now.Sub(a.since)
		if prevKind != "" {
			a.total += prev
			if a.byKind == nil {
				a.byKind = make(map[string]time.Duration)
			}
			a.byKind[prevKind] += prev
		}
		if kind != "" && prevKind == "" && !released {
			a.episodes++
		}
		a.frozen = released
	}
	a.kind, a.since = kind, now
	if released {
		a.kind = ""
	}
	if !released && g.obs.log != nil {
		logChange(g.obs.log, prevKind, kind, reason)
	}
	if g.obs.notify != nil && a.started { // a state before Open changes nothing for anyone
		g.obs.notify.push(Change{Throttled: kind != "", Released: released, Kind: kind, Reason: reason, At: now, PrevKind: prevKind, Prev: prev})
	}
}

// CountWait books one wait that blocked from start until now and ended
// with err. A wait the release ended is booked up to the release: it
// belongs to the throttler's life, however late its goroutine runs.
func (g *Gate) CountWait(start time.Time, err error) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	a := &g.acct
	if !a.started || a.frozen && !start.Before(a.since) {
		return
	}
	if a.frozen {
		now = a.since // the release
	}
	d := now.Sub(start)
	a.waits++
	a.waited += d
	if errors.Is(err, sentinel.ErrMaxWait) {
		a.maxWaits++
	}
}

// Ledger returns a consistent snapshot; the current period counts up to
// now unless the gate is released.
func (g *Gate) Ledger() Ledger {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := &g.acct
	l := Ledger{
		Throttled: g.Throttled(), Released: g.Released(), Reason: g.Reason(), Kind: a.kind,
		Since: a.since, Episodes: a.episodes, ThrottledTotal: a.total,
		Waits: a.waits, MaxWaits: a.maxWaits, WaitedTotal: a.waited,
	}
	if !l.Throttled {
		l.Kind = ""
	}
	if len(a.byKind) > 0 || a.kind != "" {
		l.ByKind = make(map[string]time.Duration, len(a.byKind)+1)
		for k, d := range a.byKind {
			l.ByKind[k] = d
		}
	}
	if a.started && !a.frozen && a.kind != "" {
		cur := time.Since(a.since)
		l.ThrottledTotal += cur
		l.ByKind[a.kind] += cur
	}
	return l
}

// Kind is the kind of the current throttled state, "" when clear.
func (g *Gate) Kind() string {
	_, kind, _ := g.State()
	return kind
}

// State is the current state, read at once: whether throttled, its kind and
// its reason ("" and "" when clear).
func (g *Gate) State() (throttled bool, kind, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.Throttled() {
		return false, "", ""
	}
	return true, g.acct.kind, g.Reason()
}

// logChange writes the line of a change of verdict: from throttled for kind
// prev (or clear, "") to throttled for kind (or clear).
func logChange(l *slog.Logger, prev, kind, reason string) {
	switch {
	case kind == prev:
	case kind == "":
		l.Info("throttler: resumed")
	case prev == "":
		l.Warn("throttler: throttled", "reason", reason)
	default:
		l.Warn("throttler: still throttled, for another reason", "reason", reason)
	}
}

// Notifier hands Changes to a callback in order, never concurrently, none
// lost, on a goroutine of its own that exists only while Changes wait: a
// callback that blocks delays the Changes after it, and nothing else.
type Notifier struct {
	f func(Change)

	mu      sync.Mutex
	queue   []Change
	running bool
	idle    chan struct{} // closed when no delivery runs; replaced on start
}

// NewNotifier returns a Notifier that calls f; nil for a nil f.
func NewNotifier(f func(Change)) *Notifier {
	if f == nil {
		return nil
	}
	idle := make(chan struct{})
	close(idle)
	return &Notifier{f: f, idle: idle}
}

func (n *Notifier) push(c Change) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.queue = append(n.queue, c)
	if !n.running {
		n.running = true
		n.idle = make(chan struct{})
		go n.deliver(n.idle)
	}
}

func (n *Notifier) deliver(idle chan struct{}) {
	for {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.running = false
			n.queue = nil
			n.mu.Unlock()
			close(idle)
			return
		}
		c := n.queue[0]
		n.queue = n.queue[1:]
		n.mu.Unlock()
		n.f(c)
	}
}

// Idle returns a channel closed once every Change pushed so far has been
// delivered (tests wait on it).
func (n *Notifier) Idle() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.idle
}
