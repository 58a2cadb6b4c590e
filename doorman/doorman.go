// Package doorman is a throttler that paces a job to its share of a
// fleet-wide capacity, leased from a Doorman server
// (https://github.com/youtube/doorman): when many copiers on many hosts work
// against one cluster, each asks the server for part of a resource ("rows
// per second against cluster main"), and the server splits the resource's
// capacity among them by its algorithm (static, proportional share, fair
// share).
//
// It is a nested module so that the root package keeps its short list of
// runtime dependencies: gRPC and protobuf live here. A Throttler keeps the
// contract of every throttler of github.com/throttlekit/throttler (see that
// package's documentation); this documentation says where it differs.
//
// # The lease
//
// Open asks the server for capacity once (GetCapacity: client id, resource
// id, priority, wants) and returns that request's error. The server answers
// with a lease: a capacity, an expiry and a refresh interval. One monitor
// goroutine then asks again every refresh interval (more often when the
// lease would otherwise run out first), sending the lease it holds so that a
// newly elected master can learn it. A server that is not the master answers
// with the master's address; the throttler follows it, and goes back to the
// configured address when the master stops answering.
//
// # Pacing
//
// BlockWait and Wait admit callers at the granted rate: capacity ÷
// Config.UnitsPerCall calls per second (one call is one unit by default),
// through one token bucket with a burst of 1, as the root package's
// WithPacing does. A capacity of 0 throttles, with the reason; an infinite
// one does not pace. In a Multi (throttler.NewMulti(replicas, doorman)) the
// callers stop while a replica lags and are paced to the fleet's share
// otherwise: Throttler implements throttler.Pacer.
//
// # When the server is gone
//
// Every request has a deadline (Config.RPCTimeout). A failed refresh changes
// nothing while the lease lasts. When the lease expires without a refresh,
// the throttler falls back to the safe capacity the server sent with its
// last lease: -1 (any negative number) is unlimited, 0 throttles, a positive
// number is paced to. Without one (or with Config.IgnoreSafeCapacity) it
// throttles: it fails closed, with the expiry and the last error in its
// reason. Either way it logs the fallback, keeps asking every refresh
// interval, and recovers by itself when the server answers again. (Doorman's
// own Go client keeps its last rate for ever once the server is gone.)
//
// Lease expiries are the server's Unix seconds: the client's and the
// server's clocks must agree to well within a lease.
//
// Close, and the end of Open's context, release the capacity
// (ReleaseCapacity), so that the other clients get it at their next refresh;
// a client that crashes is forgotten by the server when its lease expires.
//
// The wire protocol (proto/doorman.proto, generated into doormanpb) was
// written for this module from the protocol's public description.
package doorman

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
	"github.com/throttlekit/throttler/internal/pace"
)

// Config says which server to ask, for what, and how.
type Config struct {
	// Addr is the gRPC target of a Doorman server, "host:port" (any
	// server of the cluster: one that is not the master redirects).
	// Required.
	Addr string
	// ClientID identifies this client to the server, which keys its
	// leases by it: it must be unique among the clients of a resource
	// (for example "host:pid:job"). Required.
	ClientID string
	// ResourceID is the resource to ask for, as the server's configuration
	// names it. Required.
	ResourceID string
	// Priority is sent with each request; Doorman's algorithms ignore it.
	Priority int64
	// Wants is the capacity to ask for, in the resource's unit: positive
	// and finite. SetWants changes it.
	Wants float64
	// UnitsPerCall is what one BlockWait or Wait call costs of the
	// capacity (default 1): 500 rows per chunk against a grant of 1000
	// rows per second paces to 2 calls per second.
	UnitsPerCall float64
	// RPCTimeout bounds each request (default 5s, at most a minute).
	RPCTimeout time.Duration
	// IgnoreSafeCapacity throttles when the lease expires without a
	// refresh, whatever safe capacity the server sent.
	IgnoreSafeCapacity bool
	// DialOptions are given to grpc.NewClient; the default is plaintext
	// (insecure credentials). Options given here replace that default:
	// include transport credentials.
	DialOptions []grpc.DialOption
}

const (
	defaultRPCTimeout = 5 * time.Second
	maxRPCTimeout     = time.Minute
	defaultMaxWait    = 60 * time.Second
	maxWaitCap        = 7 * 24 * time.Hour
	// minRefresh and maxRefresh bound the server's refresh interval: it is
	// whole seconds on the wire (0 or less is not one), and a longer one is
	// only advice that the lease outlives.
	minRefresh = time.Second
	maxRefresh = time.Hour
	// maxRedirects bounds the redirects one request follows: two servers
	// that each name the other are a misconfiguration, not a loop.
	maxRedirects = 3
)

// Option configures a Throttler.
type Option func(*options)

type options struct {
	maxWait  time.Duration
	name     string
	onChange func(throttler.Change)
	errs     []error
}

// WithMaxWait caps how long one BlockWait or Wait call waits, throttled or
// for its paced turn (default 60s), at most a week; 0 means no cap.
func WithMaxWait(d time.Duration) Option {
	return func(o *options) {
		if d < 0 || d > maxWaitCap {
			o.errs = append(o.errs, fmt.Errorf("WithMaxWait(%v): the maximum wait must be between 0 (no cap) and %v", d, maxWaitCap))
		}
		o.maxWait = d
	}
}

// WithName names the throttler in its log lines and in the reasons of a
// Multi that holds it (default "doorman").
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithOnChange calls f once per change of state, as the root package's
// WithOnChange does.
func WithOnChange(f func(throttler.Change)) Option { return func(o *options) { o.onChange = f } }

// Throttler paces its callers to a capacity leased from a Doorman server.
type Throttler struct {
	cfg     Config
	name    string
	log     *slog.Logger
	maxWait time.Duration
	dialOpt []grpc.DialOption

	gate gate.Gate
	life lifecycle.Runner
	pace *pace.Pacer // the granted rate; on from the first grant

	// conn is the connection to the server asked last (the master, once
	// a redirect named it); nil until the first request and after a
	// failed one, which drops it: the next request dials anew, so that a
	// server that comes back is reached at once, not after gRPC's
	// reconnect backoff.
	connMu   sync.Mutex
	conn     *grpc.ClientConn
	connAddr string
	connDone bool // closed for good: released

	flightMu sync.Mutex
	flight   *flight // the request in flight, shared by whoever wants one

	mu       sync.Mutex // guards the fields below; never held during I/O
	wants    float64
	lease    grant       // the last lease; valid when lease.ok
	expired  bool        // the lease expired without a refresh
	expiry   *time.Timer // fires at lease.expiry
	lastErr  error       // the last request's error; nil after a success
	failing  bool        // a refresh failed since the last success (logged once)
	okCount  int64
	errCount int64
	lastOK   time.Time
	rate     atomic.Uint64 // math.Float64bits of the paced rate, for Grant
}

// New returns a Throttler. It does no I/O; Open does. A nil logger logs
// nothing. Bad input (a missing address, client or resource id, wants that
// are not a positive finite number, an option out of range) is an error
// wrapping throttler.ErrInvalidConfig that names the problem: Doorman's
// server accepts negative and NaN wants and an empty client id, and hands
// out capacity for them.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Throttler, error) {
	o := options{maxWait: defaultMaxWait}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	errs := o.errs
	if cfg.Addr == "" {
		errs = append(errs, errors.New("doorman.Config.Addr is empty"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("doorman.Config.ClientID is empty: the server keys leases by it (use a unique id such as host:pid:job)"))
	}
	if cfg.ResourceID == "" {
		errs = append(errs, errors.New("doorman.Config.ResourceID is empty"))
	}
	if err := checkWants("doorman.Config.Wants", cfg.Wants); err != nil {
		errs = append(errs, err)
	}
	switch u := cfg.UnitsPerCall; {
	case u == 0:
		cfg.UnitsPerCall = 1
	case !(u > 0) || math.IsInf(u, 1):
		errs = append(errs, fmt.Errorf("doorman.Config.UnitsPerCall %v must be a positive finite number (0 means 1)", u))
	}
	switch d := cfg.RPCTimeout; {
	case d == 0:
		cfg.RPCTimeout = defaultRPCTimeout
	case d < 0 || d > maxRPCTimeout:
		errs = append(errs, fmt.Errorf("doorman.Config.RPCTimeout %v must be positive and at most %v (0 means %v)", d, maxRPCTimeout, defaultRPCTimeout))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", throttler.ErrInvalidConfig, errors.Join(errs...))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.name != "" {
		logger = logger.With("throttler", o.name)
	}
	t := &Throttler{cfg: cfg, name: o.name, maxWait: o.maxWait, wants: cfg.Wants,
		log: logger.With("doorman", cfg.Addr, "resource", cfg.ResourceID)}
	t.dialOpt = cfg.DialOptions
	if len(t.dialOpt) == 0 {
		t.dialOpt = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	t.pace = pace.New(math.Inf(1), 0, "paced to the granted rate")
	t.life.Gate, t.life.Log, t.life.Subject = &t.gate, t.log, "doorman"
	t.life.OnEnd = t.pace.Release // paced waiters return with the gate's waiters
	t.gate.Observe(t.log, notifier(t.String(), o.onChange))
	return t, nil
}

// checkWants rejects what a Doorman server would accept but should not: a
// negative, zero, NaN or infinite wants.
func checkWants(what string, w float64) error {
	if !(w > 0) || math.IsInf(w, 1) {
		return fmt.Errorf("%s %v must be a positive finite number", what, w)
	}
	return nil
}

// notifier turns the gate's changes into WithOnChange's; nil without f.
func notifier(name string, f func(throttler.Change)) *gate.Notifier {
	if f == nil {
		return nil
	}
	return gate.NewNotifier(func(c gate.Change) {
		f(throttler.Change{Throttler: name, Throttled: c.Throttled, Released: c.Released, Kind: c.Kind,
			Reason: c.Reason, At: c.At, PreviousKind: c.PrevKind, Previous: c.Prev})
	})
}

// Open asks for capacity once and returns that request's error: a server
// that cannot be reached, or that answers without a lease for the resource,
// is a configuration error seen at start. A capacity of 0 (a master still
// in learning mode grants 0 to a client it does not know) is an answer:
// Open returns nil with the throttler throttled.
func (t *Throttler) Open(ctx context.Context) error {
	life, err := t.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("doorman: open: %w", err)
	}
	g, err := t.fetch(life)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		t.failed(err, false)
		t.dropConn(nil) // a failed Open leaves nothing running
		if t.life.Abort() != nil {
			err = throttler.ErrClosed // Close ran while we asked
		}
		return fmt.Errorf("doorman: open: %w", err)
	}
	if err := t.life.Start(func() { t.apply(g) }, t.monitor); err != nil {
		return fmt.Errorf("doorman: open: %w", err)
	}
	t.log.Info("doorman: open", "capacity", g.capacity, "lease_until", g.expiry, "refresh", g.refresh,
		"server", g.server, "throttled", t.IsThrottled())
	return nil
}

// Close stops the monitor and releases the capacity (one ReleaseCapacity
// request, within Config.RPCTimeout; its failure is logged, not returned:
// the server forgets the lease when it expires anyway).
func (t *Throttler) Close() error {
	t.life.Close()
	t.stopExpiry()
	t.closeConn() // also after a failed Open, or Close before Open
	return nil
}

// IsThrottled reports whether the grant is 0 or the lease expired with
// nothing to fall back on. Pacing is not throttling: see BlockWait.
func (t *Throttler) IsThrottled() bool { return t.gate.Throttled() }

// BlockWait waits while throttled, then for this call's turn at the granted
// rate.
func (t *Throttler) BlockWait(ctx context.Context) { _ = t.Wait(ctx) }

// Wait is BlockWait that says why it returned (see throttler.Waiter):
// ErrMaxWait also when the cap elapsed before this call's paced turn.
func (t *Throttler) Wait(ctx context.Context) error {
	var deadline time.Time
	for {
		if t.gate.Throttled() {
			if deadline.IsZero() && t.maxWait > 0 {
				deadline = time.Now().Add(t.maxWait)
			}
			if err := t.gate.WaitUntil(ctx, deadline); err != nil {
				return err
			}
		}
		err := t.pace.Wait(ctx, t.maxWait, &deadline)
		if !errors.Is(err, pace.ErrRequeue) {
			if errors.Is(err, pace.ErrStopped) || err == nil && t.gate.Released() {
				return throttler.ErrClosed
			}
			return err
		}
		// The grant changed while this call waited for its turn: look at
		// the gate again, and queue at the new rate.
	}
}

// PaceWait waits for this call's turn at the granted rate, and only for
// that (see throttler.Pacer): a Multi waits for its throttled children
// first, this one included.
func (t *Throttler) PaceWait(ctx context.Context) error {
	var deadline time.Time
	for {
		err := t.pace.Wait(ctx, t.maxWait, &deadline)
		switch {
		case errors.Is(err, pace.ErrRequeue):
			continue
		case errors.Is(err, pace.ErrStopped):
			return throttler.ErrClosed
		}
		return err
	}
}

// UpdateLag asks the server now (its name is the interface's) and publishes
// the answer; a request in flight is shared instead.
func (t *Throttler) UpdateLag(ctx context.Context) error {
	life, err := t.life.Context()
	if err != nil {
		return fmt.Errorf("doorman: update: %w", err)
	}
	if t.gate.Released() {
		return fmt.Errorf("doorman: update: %w", throttler.ErrClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(life, cancel)()
	if err := t.update(ctx); err != nil {
		if life.Err() != nil {
			err = throttler.ErrClosed
		}
		return fmt.Errorf("doorman: update: %w", err)
	}
	return nil
}

// ThrottleReason is "" when not throttled; otherwise it says whether the
// server granted 0, or the lease expired (when, the last error, and that
// there was no safe capacity to fall back on).
func (t *Throttler) ThrottleReason() string { return t.gate.Reason() }

// WatchState calls f after every change of state (throttler.StateWatcher):
// a Multi holding the throttler follows it with it.
func (t *Throttler) WatchState(f func()) { t.gate.Watch(f) }

// Stats is what the throttler has done since Open (see throttler.Stats):
// Measurements and Errors count its GetCapacity requests.
func (t *Throttler) Stats() throttler.Stats {
	l := t.gate.Ledger()
	t.mu.Lock()
	ok, failed, last := t.okCount, t.errCount, t.lastOK
	t.mu.Unlock()
	return throttler.Stats{
		Throttled: l.Throttled, Reason: l.Reason, Kind: l.Kind, Since: l.Since,
		Episodes: l.Episodes, ThrottledTotal: l.ThrottledTotal, ThrottledByKind: l.ByKind,
		Waits: l.Waits, WaitedTotal: l.WaitedTotal, MaxWaits: l.MaxWaits,
		Measurements: ok, Errors: failed, LastMeasurement: last, Released: l.Released,
	}
}

// String is the name given with WithName, or "doorman".
func (t *Throttler) String() string {
	if t.name != "" {
		return t.name
	}
	return "doorman"
}

var (
	_ throttler.Throttler     = (*Throttler)(nil)
	_ throttler.Waiter        = (*Throttler)(nil)
	_ throttler.Reasoner      = (*Throttler)(nil)
	_ throttler.Pacer         = (*Throttler)(nil)
	_ throttler.StatsReporter = (*Throttler)(nil)
	_ throttler.StateWatcher  = (*Throttler)(nil)
)
