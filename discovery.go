package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Discovery throttles while any replica of a primary lags, or cannot be
// watched. It asks the primary which replicas it has (SHOW REPLICAS, or SHOW
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
// The Discovery opens (and owns) one *sql.DB per replica, from
// DiscoveryConfig.DSNTemplate; the primary's *sql.DB stays the caller's.
//
// IsThrottled and an unthrottled BlockWait read the current members from one
// immutable snapshot (one atomic load, then one atomic load per member): no
// lock, no allocation, no I/O. A throttled BlockWait waits on every
// throttling member at once, and on membership changes.
//
// Most callers need only Open, BlockWait before each chunk, and Close.
type Discovery struct {
	primary   *sql.DB
	cfg       DiscoveryConfig
	tmpl      *template.Template
	tolerance time.Duration
	opts      []Option // for every member, before its WithName
	o         options
	name      string
	log       *slog.Logger // the Discovery's own lines
	baseLog   *slog.Logger // the caller's logger, for members (nil: none)

	// list asks the primary for its replicas; tests replace it, and now.
	list func(ctx context.Context) ([]ReplicaHost, error)
	now  func() time.Time
	stmt atomic.Int32 // index into discoveryStatements of the first that parsed

	cur atomic.Pointer[discoverySet] // nil before Open: not throttled

	pubMu   sync.Mutex // serialises swaps of cur with release; never held during I/O
	stopped bool       // released for good; guarded by pubMu

	mu      sync.Mutex // guards the lifecycle fields below
	phase   phase
	cancel  context.CancelFunc
	mctx    context.Context // bounds the members' lives (Open's ctx, until Close)
	opening chan struct{}   // closed when a running Open returns
	done    chan struct{}   // closed when the monitor has exited
	unwatch func() bool     // stops the AfterFunc that releases on Open's ctx end
	// openDone is the Done channel of the monitor's context (Open's ctx,
	// cancelled by Close too). The AfterFunc releases a moment after it
	// closes; IsThrottled also looks here, lock-free, so that it reports
	// false as soon as cancel returns.
	openDone atomic.Pointer[doneChan]

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
	// Exclude lists server ids never to watch (for example a delayed
	// replica kept for backups, or an analytics replica nobody waits for).
	Exclude []uint32
	// ForgetAfter drops a replica the primary stopped listing once it has
	// been unlisted this long, even if it still cannot be seen healthy (a
	// replica decommissioned while the job runs). 0, the default, never
	// does: a vanished replica that is not seen healthy throttles until it
	// returns, because a crashed replica vanishes from the list too. At
	// most a week.
	ForgetAfter time.Duration
}

// ReplicaHost is one replica as the primary lists it; DSNTemplate renders
// from it.
type ReplicaHost struct {
	ServerID uint32
	Host     string // report_host; "" when the replica does not report one (MySQL)
	Port     int    // report_port, which defaults to the replica's port
}

// Addr is Host and Port joined for a DSN ("[::1]:3306" for IPv6).
func (h ReplicaHost) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// name is how logs and Replicas name the replica.
func (h ReplicaHost) name() string {
	if h.Host == "" {
		return fmt.Sprintf("server_id %d", h.ServerID)
	}
	return h.Addr()
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
func NewDiscovery(primary *sql.DB, cfg DiscoveryConfig, lagTolerance time.Duration, logger *slog.Logger, opts ...Option) (*Discovery, error) {
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
	o, problems := buildOptions(opts, "a replica discovery", replicationOptions) // the options apply to every replica's throttler
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	d := &Discovery{
		primary:   primary,
		cfg:       cfg,
		tmpl:      tmpl,
		tolerance: lagTolerance,
		opts:      slices.Clip(slices.Clone(opts)),
		o:         o,
		name:      o.name,
		baseLog:   logger,
		members:   make(map[replicaKey]*discoveryMember),
	}
	if d.name == "" {
		d.name = "replica discovery"
	}
	if o.pacing {
		d.pace = newPacer()
		d.opts = slices.Clip(append(d.opts, withSharedPacer(d.pace))) // members append to it concurrently
	}
	d.log = o.logger(logger)
	if o.name == "" {
		d.log = d.log.With("throttler", d.name)
	}
	d.list, d.now = d.showReplicas, time.Now
	return d, nil
}

// discoveryTemplate parses the DSN template and renders it for sample
// replicas, so that a typo fails at construction rather than as a failed
// member of every replica at Open. The samples differ from the first only in
// the host, or only in the port: a DSN that does not change with both would
// connect every member to one server (a template that varies with
// {{.ServerID}} alone is different per replica, yet watches one host).
func discoveryTemplate(text string, mysqlDSN bool) (*template.Template, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New(`DiscoveryConfig.DSNTemplate is empty: give one such as "user:password@tcp({{.Host}}:{{.Port}})/?timeout=2s"`)
	}
	tmpl, err := template.New("DSNTemplate").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate does not parse: %w", err)
	}
	samples := []ReplicaHost{
		{ServerID: 101, Host: "replica-a.example", Port: 3306},
		{ServerID: 101, Host: "replica-b.example", Port: 3306}, // another host only
		{ServerID: 101, Host: "replica-a.example", Port: 3307}, // another port only
	}
	var dsns []string
	for _, h := range samples {
		dsn, err := renderDSN(tmpl, h)
		if err != nil {
			return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate does not render for a sample replica %s (server_id %d): %w", h.Addr(), h.ServerID, err)
		}
		if mysqlDSN {
			if _, err := mysql.ParseDSN(dsn); err != nil {
				return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate renders a DSN the mysql driver rejects for a sample replica %s: %w", h.Addr(), err)
			}
		}
		dsns = append(dsns, dsn)
	}
	switch {
	case dsns[0] == dsns[1] && dsns[0] == dsns[2]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate renders the same host and port for every replica: use {{.Host}} and {{.Port}} (or {{.Addr}})")
	case dsns[0] == dsns[1]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate does not change with the replica's host: every member would watch one server: use {{.Host}} (or {{.Addr}})")
	case dsns[0] == dsns[2]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate does not change with the replica's port: replicas on one host would be watched as one: use {{.Port}} (or {{.Addr}})")
	}
	return tmpl, nil
}

func renderDSN(tmpl *template.Template, h ReplicaHost) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, h); err != nil {
		return "", err
	}
	if strings.TrimSpace(b.String()) == "" {
		return "", errors.New("the DSN is empty")
	}
	return b.String(), nil
}

// discoveryStatements are tried in order until one parses: MySQL 8.0.22's
// spelling, then the one MariaDB and older MySQL know. (MariaDB 10.5.1+ also
// parses SHOW REPLICA HOSTS, a synonym of SHOW SLAVE HOSTS.)
var discoveryStatements = []string{"SHOW REPLICAS", "SHOW SLAVE HOSTS"}

// showReplicas asks the primary for its replicas, within the query timeout.
//
// What the primary lists, measured on MariaDB 10.11: one row per replica
// whose receiver (IO) thread is connected, with columns Server_id, Host,
// Port, Master_id. Host is the replica's report_host or, when it has none,
// the address its connection comes from (MariaDB 10.5.1+; MySQL and older
// MariaDB leave Host empty). Port is report_port, which defaults to the
// replica's own port. A replica whose IO thread stops, or that crashes, is
// unlisted when the primary next sends it something (at once while the
// primary writes); a frozen replica or one whose applier (SQL) thread
// stopped stays listed.
func (d *Discovery) showReplicas(ctx context.Context) ([]ReplicaHost, error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.queryTimeout)
	defer cancel()
	return onSession(ctx, d.primary, d.listOn)
}

func (d *Discovery) listOn(ctx context.Context, primary querier) ([]ReplicaHost, error) {
	for i := int(d.stmt.Load()); i < len(discoveryStatements); i++ {
		rows, err := queryRowMaps(ctx, primary, discoveryStatements[i])
		if mysqlErrorNumber(err) == erParseError && i+1 < len(discoveryStatements) {
			d.stmt.CompareAndSwap(int32(i), int32(i+1))
			continue
		}
		if err != nil {
			return nil, discoveryListError(discoveryStatements[i], err)
		}
		hosts, err := parseReplicaHosts(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", discoveryStatements[i], err)
		}
		return hosts, nil
	}
	panic("unreachable: the last statement's parse error is returned above")
}

func discoveryListError(stmt string, err error) error {
	if mysqlErrorNumber(err) == erSpecificAccessDenied {
		return fmt.Errorf("%s: %w: grant REPLICATION MASTER ADMIN (MariaDB 10.5.2+) or REPLICATION SLAVE (MySQL) to the user the Discovery asks the primary as: %w", stmt, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s: %w", stmt, err)
}

// parseReplicaHosts reads SHOW REPLICAS / SHOW SLAVE HOSTS rows. It does no
// I/O, so recorded outputs test it.
func parseReplicaHosts(rows []statusRow) ([]ReplicaHost, error) {
	out := make([]ReplicaHost, 0, len(rows))
	for _, r := range rows {
		id, ok1 := r.first("Server_Id", "Server_id")
		host, ok2 := r.first("Host")
		port, ok3 := r.first("Port")
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("unrecognised replica list: no Server_Id, Host or Port column among %d columns", len(r))
		}
		sid, err := strconv.ParseUint(id.String, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("Server_Id %q is not a server id", id.String)
		}
		h := ReplicaHost{ServerID: uint32(sid), Host: host.String}
		if port.Valid && port.String != "" {
			p, err := strconv.Atoi(port.String)
			if err != nil || p < 0 || p > 65535 {
				return nil, fmt.Errorf("server_id %d: Port %q is not a port", sid, port.String)
			}
			h.Port = p
		}
		out = append(out, h)
	}
	return out, nil
}

// replicaKey identifies a member: a replica that comes back at another
// address is another member (and the old one is dropped as replaced).
type replicaKey struct {
	serverID uint32
	host     string
	port     int
}

// discoveryMember is one replica the Discovery watches or tries to. Its
// fields are guarded by Discovery.opMu; the hot path reads snapshots.
type discoveryMember struct {
	host     ReplicaHost
	db       *sql.DB      // nil until opened
	r        *Replication // nil until built
	open     bool         // r is open
	err      error        // why it cannot be watched; nil when open
	warned   bool         // the current failure has been logged
	vanished time.Time    // when the primary stopped listing it; zero while listed
}

func (m *discoveryMember) label() string {
	s := m.host.name() + " (server_id " + strconv.FormatUint(uint64(m.host.ServerID), 10)
	if m.host.Host == "" {
		s = "server_id " + strconv.FormatUint(uint64(m.host.ServerID), 10) + " (no host"
	}
	if !m.vanished.IsZero() {
		s += ", no longer listed by the primary"
	}
	return s + ")"
}

// errNoHost is a member listed without a host: nothing to connect to.
var errNoHost = errors.New("listed by the primary without a host: set report_host (and report_port) on that replica so that it can be watched")

// discoverySet is one immutable snapshot of the members, swapped whole on
// every change.
type discoverySet struct {
	watched  []*Replication // open members, whose gates the hot path reads
	failed   bool           // a member cannot be watched (or the list is stale): throttled
	entries  []discoveryEntry
	names    []string
	multi    *Multi          // over watched, for Wait (never opened or closed)
	changed  context.Context // done when this snapshot is replaced
	cancel   context.CancelFunc
	released bool
}

type discoveryEntry struct {
	label   string
	r       *Replication // nil for a failed member
	failure string       // why it cannot be watched
}

// releasedSet is what a stopped Discovery reads: nothing throttles.
var releasedSet = func() *discoverySet {
	ctx, cancel := context.WithCancel(context.Background())
	return &discoverySet{released: true, changed: ctx, cancel: cancel}
}()

// Open asks the primary for its replicas and returns that error (a primary
// that cannot be asked, a missing grant: ErrAccessDenied names it). It then
// opens a Replication per replica, concurrently; a replica that cannot be
// opened does not fail Open but becomes a failed member that throttles (see
// Discovery). It finally starts one goroutine that asks the primary again
// every DiscoveryConfig.Every and retries failed members every WithInterval,
// until Close or until ctx is done: ctx bounds the whole watch, so pass the
// job's context. A failed Open may be retried; a second Open returns
// ErrAlreadyOpen, and Open after Close ErrClosed.
func (d *Discovery) Open(ctx context.Context) error {
	d.mu.Lock()
	switch d.phase {
	case phaseOpening, phaseOpen:
		d.mu.Unlock()
		return fmt.Errorf("throttler: open: %w", ErrAlreadyOpen)
	case phaseClosed:
		d.mu.Unlock()
		return fmt.Errorf("throttler: open: %w", ErrClosed)
	}
	d.phase = phaseOpening
	mctx, cancel := context.WithCancel(ctx)
	d.cancel, d.mctx = cancel, mctx
	d.openDone.Store(&doneChan{mctx.Done()})
	opening := make(chan struct{})
	d.opening = opening
	d.mu.Unlock()
	defer close(opening)

	d.pubMu.Lock()
	d.stopped = false // a failed Open released; this one starts afresh
	d.cur.Store(nil)
	d.pubMu.Unlock()

	err := d.openMembers(mctx)
	if err == nil {
		err = ctx.Err()
	}
	d.mu.Lock()
	if d.phase == phaseClosed { // Close ran while we opened (and cancelled it)
		err = ErrClosed
	}
	if err != nil {
		if d.phase != phaseClosed {
			d.phase = phaseNew
		}
		d.mu.Unlock()
		cancel()
		d.shutdown()
		d.pubMu.Lock()
		d.cur.Store(nil) // not throttled, as after any failed Open
		d.pubMu.Unlock()
		return fmt.Errorf("throttler: open: %w", err)
	}
	d.phase = phaseOpen
	d.done = make(chan struct{})
	// Release the moment the context ends, not when the monitor next looks.
	d.unwatch = context.AfterFunc(mctx, d.release)
	done := d.done
	d.mu.Unlock()

	d.opMu.Lock()
	d.publish()
	d.opMu.Unlock()
	go d.monitor(mctx, done)
	d.log.Info("throttler: open", "replicas", d.Replicas(), "tolerance", d.tolerance, "every", d.cfg.Every)
	return nil
}

// openMembers lists the replicas and opens a member for each.
func (d *Discovery) openMembers(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	hosts, err := d.list(ctx)
	if err != nil {
		return fmt.Errorf("discover replicas: %w", err)
	}
	now := d.now()
	d.lastListed, d.listErr, d.listStale = now, nil, false
	d.reconcile(ctx, hosts, now)
	return nil
}

// monitor asks the primary again every Every and retries failed members
// every poll interval, until ctx ends; then it releases everything.
func (d *Discovery) monitor(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	defer d.shutdown()
	every := time.NewTicker(d.cfg.Every)
	defer every.Stop()
	retry := time.NewTicker(d.o.interval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			closing := d.phase == phaseClosed
			d.mu.Unlock()
			if !closing {
				d.log.Info("throttler: stopped: Open's context ended; the throttler is released", "cause", context.Cause(ctx))
			}
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

// rediscover lists the replicas again and reconciles the members: new ones
// opened, vanished ones dropped (see Discovery), failed ones retried. lctx
// bounds the listing, mctx the members' lives. A caller that waited for a
// listing in flight shares it (its error, if any) rather than asking the
// primary again; once mctx ends it lists no more and returns ErrClosed.
func (d *Discovery) rediscover(lctx, mctx context.Context) error {
	seen := d.listings.Load()
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if mctx.Err() != nil {
		return ErrClosed
	}
	if d.listings.Load() != seen {
		return d.listErr
	}
	hosts, err := d.list(lctx)
	if lctx.Err() != nil || mctx.Err() != nil {
		return err // stopping, or the caller gave up: not the primary's fault
	}
	d.listings.Add(1)
	now := d.now()
	if err != nil {
		if d.listErr == nil {
			d.log.Warn("throttler: cannot ask the primary for its replicas; keeping the last membership", "error", err)
		}
		d.listErr = err
		if !d.listStale && now.Sub(d.lastListed) >= satMul(d.cfg.Every, discoveryStaleListings) {
			d.listStale = true
			d.log.Warn("throttler: replica list stale: throttling until the primary can be asked again", "error", err)
		}
		d.retryLocked(mctx)
	} else {
		if d.listErr != nil {
			d.log.Info("throttler: the primary lists its replicas again")
		}
		d.lastListed, d.listErr, d.listStale = now, nil, false
		d.reconcile(mctx, hosts, now)
	}
	d.publish()
	return err
}

// retryFailed tries again to open every failed member.
func (d *Discovery) retryFailed(mctx context.Context) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if mctx.Err() != nil {
		return
	}
	if d.retryLocked(mctx) > 0 {
		d.publish()
	}
}

// retryLocked retries the failed members and says how many it tried.
func (d *Discovery) retryLocked(mctx context.Context) int {
	var failed []*discoveryMember
	for _, m := range d.members {
		if !m.open {
			failed = append(failed, m)
		}
	}
	d.openAll(mctx, failed)
	return len(failed)
}

// reconcile brings the members in line with a successful listing. The
// caller holds opMu.
func (d *Discovery) reconcile(mctx context.Context, hosts []ReplicaHost, now time.Time) {
	listed := make(map[replicaKey]bool, len(hosts))
	listedIDs := make(map[uint32]bool, len(hosts))
	var toOpen, toClose []*discoveryMember
	for _, h := range hosts {
		if slices.Contains(d.cfg.Exclude, h.ServerID) {
			continue
		}
		k := replicaKey{h.ServerID, h.Host, h.Port}
		if listed[k] {
			continue
		}
		listed[k], listedIDs[h.ServerID] = true, true
		m, ok := d.members[k]
		switch {
		case !ok:
			m = &discoveryMember{host: h}
			d.members[k] = m
			toOpen = append(toOpen, m)
		case !m.vanished.IsZero():
			m.vanished = time.Time{}
			d.log.Info("throttler: replica listed again", "replica", m.label())
		}
		if ok && !m.open {
			toOpen = append(toOpen, m)
		}
	}
	for k, m := range d.members {
		if listed[k] {
			continue
		}
		justVanished := m.vanished.IsZero()
		if justVanished {
			m.vanished = now
		}
		gone := now.Sub(m.vanished)
		healthy := m.open && !m.r.IsThrottled()
		switch {
		case listedIDs[m.host.ServerID]:
			d.log.Info("throttler: replica gone: listed at another address now", "replica", m.label())
		case healthy && gone >= d.o.staleAfter:
			// Seen healthy well after it vanished: it replicates from
			// elsewhere now, or it was rebuilt. Not ours to wait for.
			d.log.Info("throttler: replica gone: no longer listed by the primary", "replica", m.label())
		case d.cfg.ForgetAfter > 0 && gone >= d.cfg.ForgetAfter:
			d.log.Warn("throttler: replica forgotten: unlisted and not seen healthy for DiscoveryConfig.ForgetAfter", "replica", m.label(), "unlisted_for", gone.Round(time.Second))
		default:
			if justVanished {
				d.log.Warn("throttler: replica no longer listed by the primary; watching it until it is seen healthy (a crashed replica is unlisted too)", "replica", m.label())
			}
			if !m.open {
				toOpen = append(toOpen, m)
			}
			continue
		}
		delete(d.members, k)
		toClose = append(toClose, m)
	}
	var wg sync.WaitGroup
	wg.Go(func() { d.openAll(mctx, toOpen) })
	for _, m := range toClose {
		wg.Go(m.close)
	}
	wg.Wait()
	if len(d.members) == 0 && !d.warnedEmpty {
		d.log.Warn("throttler: the primary lists no replicas: nothing to wait for, not throttled")
	}
	d.warnedEmpty = len(d.members) == 0
}

// openAll opens members concurrently and logs each one's change.
func (d *Discovery) openAll(mctx context.Context, ms []*discoveryMember) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { d.openMember(mctx, m) })
	}
	wg.Wait()
	for _, m := range ms {
		switch {
		case m.open && m.warned:
			m.warned = false
			d.log.Info("throttler: replica watched now", "replica", m.label())
		case m.open:
			d.log.Info("throttler: replica discovered", "replica", m.label())
		case !m.warned:
			m.warned = true
			d.log.Warn("throttler: replica cannot be watched: throttling until it can", "replica", m.label(), "error", m.err)
		}
	}
}

// openMember builds what the member lacks and opens its Replication, whose
// monitor then lives as long as mctx.
func (d *Discovery) openMember(mctx context.Context, m *discoveryMember) {
	if m.open {
		return
	}
	if m.host.Host == "" {
		m.err = errNoHost
		return
	}
	if m.host.Port == 0 {
		m.err = errors.New("listed by the primary without a port: set report_port on that replica")
		return
	}
	if m.db == nil {
		dsn, err := renderDSN(d.tmpl, m.host)
		if err != nil {
			m.err = fmt.Errorf("DiscoveryConfig.DSNTemplate: %w", err)
			return
		}
		db, err := d.cfg.OpenDB(dsn)
		if err == nil && db == nil {
			err = errors.New("DiscoveryConfig.OpenDB returned a nil *sql.DB")
		}
		if err != nil {
			m.err = fmt.Errorf("open its *sql.DB: %w", err)
			return
		}
		m.db = db
	}
	if m.r == nil {
		opts := append(d.opts, WithName(m.host.name()))
		r, err := NewReplicationThrottler(m.db, d.tolerance, d.baseLog, opts...)
		if err != nil {
			m.err = err
			return
		}
		m.r = r
	}
	if err := m.r.Open(mctx); err != nil {
		m.err = err
		return
	}
	m.open, m.err = true, nil
}

// close stops the member's monitor and closes the DB the Discovery opened.
func (m *discoveryMember) close() {
	if m.r != nil {
		_ = m.r.Close()
	}
	if m.db != nil {
		_ = m.db.Close()
	}
}

// publish swaps in a snapshot of the members. The caller holds opMu.
func (d *Discovery) publish() {
	keys := make([]replicaKey, 0, len(d.members))
	for k := range d.members {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b replicaKey) int {
		if c := strings.Compare(a.host, b.host); c != 0 {
			return c
		}
		if a.port != b.port {
			return a.port - b.port
		}
		return int(a.serverID) - int(b.serverID)
	})
	s := &discoverySet{}
	var ts []Throttler
	for _, k := range keys {
		m := d.members[k]
		s.names = append(s.names, m.host.name())
		if m.open {
			s.watched = append(s.watched, m.r)
			ts = append(ts, m.r)
			s.entries = append(s.entries, discoveryEntry{label: m.label(), r: m.r})
			continue
		}
		s.failed = true
		// Replication.Open's errors start with "throttler: open: ".
		why := strings.TrimPrefix(m.err.Error(), "throttler: open: ")
		s.entries = append(s.entries, discoveryEntry{label: m.label(), failure: "cannot be watched: " + why})
	}
	if d.listStale {
		s.failed = true
		s.entries = append(s.entries, discoveryEntry{label: d.name, failure: fmt.Sprintf(
			"the primary could not be asked for its replicas for %v, so replicas may be unwatched: %v",
			d.now().Sub(d.lastListed).Round(time.Second), d.listErr)})
	}

	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	old := d.cur.Load()
	if d.stopped || old != nil && old.sameAs(s) {
		return // nothing to publish: no waiter needs waking
	}
	s.multi = NewMulti(ts...)
	s.changed, s.cancel = context.WithCancel(context.Background())
	d.cur.Store(s)
	if old != nil {
		old.cancel() // wakes waiters to look at the new members
	}
}

// sameAs reports whether t shows the same members in the same states.
func (s *discoverySet) sameAs(t *discoverySet) bool {
	return !s.released && s.failed == t.failed &&
		slices.Equal(s.entries, t.entries) && slices.Equal(s.names, t.names)
}

// release clears the Discovery for good: IsThrottled false, every waiter
// woken. The members release themselves (their monitors share the context).
func (d *Discovery) release() {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	d.stopped = true
	if old := d.cur.Swap(releasedSet); old != nil && old != releasedSet {
		old.cancel()
	}
}

// shutdown releases, then closes every member and DB.
func (d *Discovery) shutdown() {
	d.release()
	d.opMu.Lock()
	defer d.opMu.Unlock()
	var wg sync.WaitGroup
	for k, m := range d.members {
		wg.Go(m.close)
		delete(d.members, k)
	}
	wg.Wait()
}

// Close stops rediscovery and every member, waits for their goroutines to
// exit, closes the DBs the Discovery opened, and releases every blocked
// BlockWait. It is idempotent and always returns nil.
func (d *Discovery) Close() error {
	d.mu.Lock()
	if d.phase == phaseClosed {
		d.mu.Unlock()
		return nil
	}
	prev := d.phase
	d.phase = phaseClosed
	cancel, done, unwatch, opening := d.cancel, d.done, d.unwatch, d.opening
	d.mu.Unlock()

	d.release()
	if cancel != nil {
		cancel()
	}
	switch prev {
	case phaseOpen:
		<-done // the monitor's exit closes the members
		unwatch()
	case phaseOpening:
		<-opening // Open sees the close and cleans up
	}
	d.shutdown() // nothing left after the above; harmless
	d.log.Info("throttler: closed")
	return nil
}

// IsThrottled reports whether any member throttles or cannot be watched:
// one atomic load for the snapshot, then one per watched member. It is false
// before Open, after a failed Open, after Close, and after Open's context
// ends.
func (d *Discovery) IsThrottled() bool { return d.cur.Load().throttled() && !d.ended() }

// ended reports whether the monitor's context is done.
func (d *Discovery) ended() bool { return d.openDone.Load().closed() }

// doneChan holds a context's Done channel for an atomic.Pointer, so that a
// hot path can see a context end without a lock.
type doneChan struct{ c <-chan struct{} }

// closed reports whether the channel is closed (false for a nil doneChan):
// a non-blocking receive, which takes no lock and allocates nothing.
func (p *doneChan) closed() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.c:
		return true
	default:
		return false
	}
}

func (s *discoverySet) throttled() bool {
	if s == nil {
		return false
	}
	if s.failed {
		return true
	}
	for _, r := range s.watched {
		if r.IsThrottled() {
			return true
		}
	}
	return false
}

// BlockWait returns at once when not throttled. Otherwise it waits on every
// throttling member at once until none throttles, ctx is done, the
// Discovery stops, or WithMaxWait elapses. Callers that must know why it
// returned use Wait.
func (d *Discovery) BlockWait(ctx context.Context) {
	if d.paced() || d.IsThrottled() {
		_ = d.Wait(ctx)
	}
}

// errDiscoveryMaxWait is the cause of a Wait's cap.
var errDiscoveryMaxWait = errors.New("discovery: maximum wait")

// Wait is BlockWait that says why it returned: nil when clear (or once it
// clears), ErrMaxWait when WithMaxWait elapsed while still throttled,
// ErrClosed when the Discovery stopped, or ctx's error.
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
	return paceError(d.pace.wait(ctx, d.o.maxWait), s != nil && s.released || d.ended())
}

func (d *Discovery) waitClear(ctx context.Context) error {
	if s := d.cur.Load(); s == nil || !s.released && !s.throttled() {
		return nil
	}
	capped := ctx
	if d.o.maxWait > 0 {
		var cancel context.CancelFunc
		capped, cancel = context.WithTimeoutCause(ctx, d.o.maxWait, errDiscoveryMaxWait)
		defer cancel()
	}
	for {
		s := d.cur.Load()
		switch {
		case s == nil:
			return nil
		case s.released:
			return ErrClosed
		case !s.throttled():
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case capped.Err() != nil:
			return fmt.Errorf("%w: %s", ErrMaxWait, d.ThrottleReason())
		}
		wctx, cancel := context.WithCancel(capped)
		stop := context.AfterFunc(s.changed, cancel) // a new snapshot: look again
		// The Multi waits on every throttling member at once; a member's
		// own cap (ErrMaxWait) never ends ours, which started earlier.
		_ = s.multi.Wait(wctx)
		if s.failed {
			<-wctx.Done() // a failed member clears only with a new snapshot
		}
		stop()
		cancel()
	}
}

// UpdateLag asks the primary for its replicas, reconciles the members
// (opening new ones and retrying failed ones), then measures every member
// once, concurrently. It returns every error, each naming its replica; a
// failed member's error counts, because its lag is unknown. Concurrent
// callers share the listing and the measurements in flight rather than
// each running their own. It returns ErrNotOpen before Open and ErrClosed
// after the Discovery stopped: at once, also for callers that waited.
func (d *Discovery) UpdateLag(ctx context.Context) error {
	d.mu.Lock()
	ph, mctx := d.phase, d.mctx
	d.mu.Unlock()
	switch {
	case ph == phaseClosed || ph == phaseOpen && mctx.Err() != nil:
		return fmt.Errorf("throttler: update lag: %w", ErrClosed)
	case ph != phaseOpen:
		return fmt.Errorf("throttler: update lag: %w", ErrNotOpen)
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
	wg.Wait()
	errs = append(errs, merrs...)
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
	if s == nil || s.released {
		return ""
	}
	var b strings.Builder
	for _, e := range s.entries {
		reason := e.failure
		if e.r != nil {
			if !e.r.IsThrottled() {
				continue
			}
			if reason = e.r.ThrottleReason(); reason == "" {
				continue // cleared since IsThrottled looked
			}
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.label)
		b.WriteString(": ")
		b.WriteString(reason)
	}
	return b.String()
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

// Replicas names the current members, watched or failed, as host:port
// ("server_id N" for one listed without a host), sorted. It is empty before
// Open and after the Discovery stopped.
func (d *Discovery) Replicas() []string {
	s := d.cur.Load()
	if s == nil {
		return nil
	}
	return slices.Clone(s.names)
}

// String is the name given with WithName, or "replica discovery".
func (d *Discovery) String() string { return d.name }

var (
	_ Throttler   = (*Discovery)(nil)
	_ Reasoner    = (*Discovery)(nil)
	_ LagReporter = (*Discovery)(nil)
	_ Waiter      = (*Discovery)(nil)
)
