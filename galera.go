package throttler

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/poller"
)

// Galera throttles while a MariaDB Galera (or Percona XtraDB Cluster) node
// is not fit to take bulk writes at full speed. A Galera node has no
// replication channel to measure a lag on; it reads, with SHOW GLOBAL
// STATUS, the node's own wsrep status variables. The node reads as
// throttled, with a reason from ThrottleReason that names the cause, while
//
//   - it is not Synced (wsrep_local_state is not 4: Joining, Joined,
//     Donor/Desynced, Initialized): "galera: node not synced (Donor/Desynced)";
//   - it is not ready for queries (wsrep_ready OFF): "not ready";
//   - it is not in the Primary component (wsrep_cluster_status):
//     "cluster status non-Primary";
//   - its receive queue (wsrep_local_recv_queue, the write sets it has
//     received and not applied yet) is at or above GaleraConfig.RecvQueue:
//     "receive queue 40 >= 16";
//   - flow control paused replication for at least
//     GaleraConfig.FlowControl of the time since the previous reading
//     (the growth of the cumulative wsrep_flow_control_paused_ns between
//     two readings): "flow control paused 45% of the last 1s >= 20%";
//   - its answer cannot be used (a variable missing or not a number).
//
// Flow control pauses the whole cluster, so every node's throttler sees
// it; the receive queue and the state are the node's own. Watch every node
// the job writes to (NewMulti), or every node of the cluster to hold back
// before one falls behind far enough to pause the others.
//
// The share of flow control needs two readings: the first after Open, and
// the first after the counter went down (the node restarted, or FLUSH
// STATUS), judge the other signals only. A node that has just been thawed
// after a freeze may report itself Synced for a few seconds before it
// notices it was evicted; the cluster's other nodes know better, which is
// one more reason to watch them all.
type Galera struct {
	db   *sql.DB
	name string
	cfg  GaleraConfig // with defaults applied
	log  *slog.Logger
	polling
	last atomic.Pointer[GaleraStatus]

	// The previous reading of the flow-control counter, the share's
	// baseline. Only probes use it, one at a time; mu makes that plain to
	// the race detector whatever goroutine the poller probes on.
	mu       sync.Mutex
	prev     uint64
	prevAt   time.Time
	havePrev bool
	// The share last computed and its interval, for a reading with no
	// time since the baseline.
	lastShare    float64
	lastInterval time.Duration
	haveShare    bool
}

// GaleraConfig says when a Galera node throttles. The zero value is the
// defaults.
type GaleraConfig struct {
	// RecvQueue throttles while the node's receive queue is at or above
	// it. 0 means 16: gcs.fc_limit's default, which a node of a
	// three-node cluster scales to about 28 before it pauses the cluster,
	// so the job backs off first. A healthy node's queue peaks around 15
	// under a bulk copy (measured on a 3-node loopback cluster).
	RecvQueue int64
	// FlowControl throttles while flow control paused replication for at
	// least this share of the time between two readings, in (0, 1]. 0
	// means 0.2.
	FlowControl float64
}

// Defaults of GaleraConfig.
const (
	DefaultGaleraRecvQueue   = 16
	DefaultGaleraFlowControl = 0.2
)

// GaleraStatus is one reading of a Galera node.
type GaleraStatus struct {
	// State is wsrep_local_state (4 is Synced) and StateComment its name
	// (wsrep_local_state_comment).
	State        int64
	StateComment string
	Ready        bool   // wsrep_ready
	Cluster      string // wsrep_cluster_status: Primary, non-Primary, Disconnected
	RecvQueue    int64  // wsrep_local_recv_queue
	// FlowControl is the share of the time since the previous reading that
	// flow control paused replication, in [0, 1], over Interval; Known is
	// false on a reading with no usable previous one.
	FlowControl      float64
	FlowControlKnown bool
	Interval         time.Duration
}

// ErrNotGalera means the server is not a Galera node: it has no wsrep
// status variables, or no wsrep provider is loaded. NewGalera's Open
// returns it wrapped, together with ErrInvalidConfig.
var ErrNotGalera = errors.New("server is not a Galera node")

// galeraStatement reads every variable a verdict needs in one round trip
// (see loadStatement for why SHOW GLOBAL STATUS, WHERE ... IN and no
// placeholder). wsrep_provider_name tells a server without a provider from
// one without wsrep at all.
const galeraStatement = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_provider_name', 'wsrep_local_state', " +
	"'wsrep_local_state_comment', 'wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_recv_queue', 'wsrep_flow_control_paused_ns')"

// NewGalera returns a throttler that watches db, one Galera node; see
// Galera and GaleraConfig. It does no I/O; Open does. A nil logger logs
// nothing. Bad input (a nil DB, a negative receive queue, a flow-control
// share outside (0, 1], an option out of range) is an error wrapping
// ErrInvalidConfig.
func NewGalera(db *sql.DB, cfg GaleraConfig, logger *slog.Logger, opts ...Option) (*Galera, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("db *sql.DB is nil"))
	}
	switch {
	case cfg.RecvQueue < 0:
		errs = append(errs, fmt.Errorf("GaleraConfig.RecvQueue %d must not be negative (0 means %d)", cfg.RecvQueue, DefaultGaleraRecvQueue))
	case cfg.RecvQueue == 0:
		cfg.RecvQueue = DefaultGaleraRecvQueue
	}
	switch {
	case math.IsNaN(cfg.FlowControl) || cfg.FlowControl < 0 || cfg.FlowControl > 1:
		errs = append(errs, fmt.Errorf("GaleraConfig.FlowControl %v must be a share in (0, 1] (0 means %v)", cfg.FlowControl, DefaultGaleraFlowControl))
	case cfg.FlowControl == 0:
		cfg.FlowControl = DefaultGaleraFlowControl
	}
	o, problems := buildOptions(opts, "a Galera throttler", pollingOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	g := &Galera{db: db, name: o.name, cfg: cfg, log: logger}
	g.polling = polling{poll: poller.New(o.pollerConfig(logger, "wsrep status reading", "galera"), g.probe), updating: "update galera status"}
	return g, nil
}

// Open fails on a server that is not a Galera node (ErrNotGalera, wrapped
// with ErrInvalidConfig).
func (g *Galera) Open(ctx context.Context) error {
	if err := g.poll.Open(ctx); err != nil {
		if errors.Is(err, ErrNotGalera) {
			err = fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	st := g.Status()
	g.log.Info("throttler: open", "galera", st.StateComment, "recv_queue", st.RecvQueue,
		"recv_queue_threshold", g.cfg.RecvQueue, "flow_control_threshold", g.cfg.FlowControl)
	return nil
}

// probe reads the node once and says what the reading calls for. The poller
// never runs two probes at once.
func (g *Galera) probe(ctx context.Context) (poller.Verdict, error) {
	vals, err := onSession(ctx, g.db, func(ctx context.Context, q querier) (map[string]string, error) {
		return showStatus(ctx, q, galeraStatement)
	})
	if err != nil {
		return poller.Verdict{}, fmt.Errorf("SHOW GLOBAL STATUS: %w", err)
	}
	r, err := parseGaleraStatus(vals)
	if err != nil {
		// The node answered, and its answer says it is no Galera node or
		// cannot be used: a reading of "unknown", not a missing one.
		return poller.Verdict{Throttled: true, Kind: "galera unreadable", Reason: "galera: " + err.Error()}, err
	}
	st := g.judgeFlowControl(r, time.Now())
	g.last.Store(&st)
	return g.verdict(st), nil
}

// galeraReading is what parseGaleraStatus makes of the status rows.
type galeraReading struct {
	state        int64
	comment      string
	ready        bool
	cluster      string
	recvQueue    int64
	paused       uint64 // wsrep_flow_control_paused_ns
	pausedTooBig bool   // the counter does not fit 64 bits: read as always paused
}

// parseGaleraStatus reads the status rows (by lower-case name). A server
// without wsrep is ErrNotGalera; a variable missing or not a number is a
// statusReadingError. Numbers too large for int64 saturate: a state that
// does not fit is not Synced, a queue that does not fit is above any
// threshold.
func parseGaleraStatus(vals map[string]string) (galeraReading, error) {
	var r galeraReading
	stateText, ok := vals["wsrep_local_state"]
	if !ok {
		if name, ok := vals["wsrep_provider_name"]; ok && strings.TrimSpace(name) == "" {
			return r, fmt.Errorf("%w: no wsrep provider is loaded (wsrep_provider_name is empty: wsrep_on is OFF or wsrep_provider is none)", ErrNotGalera)
		}
		return r, fmt.Errorf("%w: it has no wsrep_local_state status variable (not a MariaDB Galera or Percona XtraDB Cluster node)", ErrNotGalera)
	}
	var problems []string
	missing := func(name string) string {
		v, ok := vals[name]
		if !ok {
			problems = append(problems, "the server has no global status variable "+name)
		}
		return v
	}
	integer := func(name, text string) int64 {
		v, err := strconv.ParseInt(text, 10, 64)
		switch {
		case err == nil:
		case text != "" && allDigits(text): // too big to hold: saturates toward throttled
			v = math.MaxInt64
		default:
			problems = append(problems, fmt.Sprintf("status variable %s = %q: not an integer", name, loadTruncate(text)))
		}
		return v
	}
	r.state = integer("wsrep_local_state", stateText)
	r.comment = vals["wsrep_local_state_comment"] // only named in reasons
	r.ready = strings.EqualFold(missing("wsrep_ready"), "ON")
	r.cluster = missing("wsrep_cluster_status")
	if q, ok := vals["wsrep_local_recv_queue"]; ok {
		r.recvQueue = integer("wsrep_local_recv_queue", q)
		if r.recvQueue < 0 {
			problems = append(problems, fmt.Sprintf("status variable wsrep_local_recv_queue = %q: negative", q))
		}
	} else {
		missing("wsrep_local_recv_queue")
	}
	if p, ok := vals["wsrep_flow_control_paused_ns"]; ok {
		v, err := strconv.ParseUint(p, 10, 64)
		switch {
		case err == nil:
			r.paused = v
		case p != "" && allDigits(p):
			r.pausedTooBig = true
		default:
			problems = append(problems, fmt.Sprintf("status variable wsrep_flow_control_paused_ns = %q: not an integer", loadTruncate(p)))
		}
	} else {
		missing("wsrep_flow_control_paused_ns")
	}
	if len(problems) > 0 {
		cause := error(nil)
		if strings.HasPrefix(problems[0], "the server has no") {
			cause = ErrUnavailable
		}
		return r, &statusReadingError{msg: strings.Join(problems, "; "), cause: cause}
	}
	return r, nil
}

// judgeFlowControl turns reading r, taken at now, into a status with the
// share of the time since the previous reading that flow control paused
// replication, and makes r the next baseline.
func (g *Galera) judgeFlowControl(r galeraReading, now time.Time) GaleraStatus {
	st := GaleraStatus{State: r.state, StateComment: r.comment, Ready: r.ready, Cluster: r.cluster, RecvQueue: r.recvQueue}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case r.pausedTooBig:
		st.FlowControl, st.FlowControlKnown = 1, true // saturated: toward throttled
		g.havePrev, g.haveShare = false, false
		return st
	case !g.havePrev || r.paused < g.prev:
		// No baseline yet, or the counter went down (a restarted node,
		// FLUSH STATUS): no data for this interval, never a negative share.
		g.haveShare = false
	case !now.After(g.prevAt):
		// No time since the baseline (two readings in one clock tick):
		// the share last computed stands, and so does the baseline.
		st.FlowControl, st.FlowControlKnown, st.Interval = g.lastShare, g.haveShare, g.lastInterval
		return st
	default:
		dt := now.Sub(g.prevAt)
		share := float64(r.paused-g.prev) / float64(dt)
		st.FlowControl, st.FlowControlKnown, st.Interval = min(share, 1), true, dt
		g.lastShare, g.lastInterval, g.haveShare = st.FlowControl, dt, true
	}
	g.prev, g.prevAt, g.havePrev = r.paused, now, true
	return st
}

// verdict says what status st calls for.
func (g *Galera) verdict(st GaleraStatus) poller.Verdict {
	var reasons []string
	kind := ""
	add := func(k, reason string) {
		if kind == "" {
			kind = k
		}
		reasons = append(reasons, reason)
	}
	if st.State != 4 {
		name := st.StateComment
		if name == "" {
			name = "wsrep_local_state " + strconv.FormatInt(st.State, 10)
		}
		add("galera state", "node not synced ("+name+")")
	}
	if !st.Ready {
		add("galera state", "not ready")
	}
	if st.Cluster != "Primary" {
		add("galera state", "cluster status "+st.Cluster)
	}
	if st.RecvQueue >= g.cfg.RecvQueue {
		add("galera queue", fmt.Sprintf("receive queue %d >= %d", st.RecvQueue, g.cfg.RecvQueue))
	}
	if st.FlowControlKnown && st.FlowControl >= g.cfg.FlowControl {
		add("galera flow control", fmt.Sprintf("flow control paused %s of the last %s >= %s",
			percent(st.FlowControl), galeraSpan(st.Interval), percent(g.cfg.FlowControl)))
	}
	if len(reasons) == 0 {
		// Fast while near a threshold: the queue grows by the write set.
		return poller.Verdict{Fast: st.RecvQueue >= g.cfg.RecvQueue/2 || st.FlowControlKnown && st.FlowControl > 0}
	}
	return poller.Verdict{Throttled: true, Kind: kind, Reason: "galera: " + strings.Join(reasons, ", "), Fast: true}
}

// percent formats a share as a whole percentage, or with the digits it
// needs below 1%.
func percent(share float64) string {
	p := share * 100
	if p >= 1 || p == 0 {
		return strconv.FormatFloat(math.Round(p), 'f', -1, 64) + "%"
	}
	return strconv.FormatFloat(p, 'g', 2, 64) + "%"
}

// galeraSpan formats the interval a share was taken over: to the
// millisecond below a second, to the tenth above.
func galeraSpan(d time.Duration) string {
	switch {
	case d <= 0:
		return "instant"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func (g *Galera) Close() error {
	g.poll.Close()
	return nil
}

// Status is the last successful reading; the zero GaleraStatus before the
// first.
func (g *Galera) Status() GaleraStatus {
	if st := g.last.Load(); st != nil {
		return *st
	}
	return GaleraStatus{}
}

// String is the name given with WithName, or "galera".
func (g *Galera) String() string { return cmp.Or(g.name, "galera") }

var (
	_ Throttler    = (*Galera)(nil)
	_ Reasoner     = (*Galera)(nil)
	_ Waiter       = (*Galera)(nil)
	_ fmt.Stringer = (*Galera)(nil)
)
