package throttler

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/poller"
)

// Load throttles while the primary is busy: while a global status variable
// (Threads_running by default) is at or above a threshold, like gh-ost's
// --max-load. It watches the server the copier writes to, not a replica.
//
// It reads the variables with SHOW GLOBAL STATUS, and throttles while one is
// at or above its threshold, with a reason such as "Threads_running 31 >=
// 25" (a value that is not a finite decimal number is an unknown reading,
// which throttles at once).
//
// A second, critical level (LoadConfig.Critical, gh-ost's --critical-load)
// does not throttle any harder: waiting is not enough past it, and the caller
// decides what to do, usually abort. IsCritical reports it with one atomic
// load, and CriticalReason says which variable crossed which level. It
// follows the successful readings: a failed read neither raises nor clears
// it, so a network blip cannot abort a copy (the stale window throttles it
// instead). By default one reading is enough; LoadConfig.CriticalFor asks for
// the level to hold, so that a burst of a fraction of a second does not.
//
// Once released, IsCritical reports false too.
//
// Values are compared as float64, so fractional values (Galera's
// wsrep_flow_control_paused) and levels work. An integer above 2^53 is
// rounded to the nearest float64 first; rounding keeps order, so a value at
// or above a threshold always reads as at or above it, and only a value
// within one part in 2^53 below a threshold can read as at it: throttled a
// hair early, never late.
//
// With LoadLimit.Rate a variable is watched by its increase per second
// between two successful readings (Innodb_rows_inserted, Innodb_data_written,
// wsrep_flow_control_paused_ns), not by its value; see LoadLimit.Rate.
//
// Most callers need Open, BlockWait before each chunk, IsCritical to decide
// whether to abort, and Close.
type Load struct {
	db     *sql.DB
	name   string
	limits []LoadLimit // the variables and whether each is a Rate, fixed; levels has the levels now
	levels atomic.Pointer[loadLevels]
	last   atomic.Pointer[loadReading] // the last successful reading
	stmt   string                      // SHOW GLOBAL STATUS for exactly the limits' variables
	log    *slog.Logger
	polling
	values []atomic.Uint64 // math.Float64bits of the last value (or rate) per limit, in limits' order

	// rates is the rate state of each limit (used by Rate limits only),
	// touched by probe alone: the poller never runs two probes at once.
	rates []loadRate
	// rateWindow is the shortest time a rate is measured over: half the
	// poll interval.
	rateWindow time.Duration

	// critical is the published critical reason; nil when not critical.
	// It is masked once the poller is released, so that a closed
	// throttler, or one whose Open context ended, is never critical.
	critical atomic.Pointer[string]
	critMu   sync.Mutex // serialises critical changes and their log lines
	// critSince is the first reading of the current run of critical
	// readings (zero when the last successful reading was not critical),
	// guarded by critMu.
	critSince time.Time
}

// loadLevels are the levels a Load judges its readings against: NewLoad's
// LoadConfig's, or the last SetLimits's, in the order of Load.limits.
type loadLevels struct {
	limits      []LoadLimit
	criticalFor time.Duration // LoadConfig.CriticalFor
}

// loadReading is one successful reading: per limit, the value (or rate),
// as shown in reasons (with its unit), and whether it is known (a Rate
// limit has none until a second reading).
type loadReading struct {
	at    time.Time
	vals  []float64
	shown []string
	known []bool
}

// LoadConfig says which status variables Load watches and at which levels.
//
// The common case is one variable: set Threshold (and optionally Critical)
// and leave Variable empty for Threads_running. To watch several variables
// at once, like gh-ost's --max-load=Threads_running=25,Threads_connected=500,
// set Limits instead and leave the single-variable fields zero: the
// server is then throttled while any variable is at or above its threshold,
// and critical while any is at or above its critical level.
type LoadConfig struct {
	// Variable is the global status variable to watch, for example
	// Threads_running (the default) or Threads_connected. It must be a
	// plain name (letters, digits and underscores), not a pattern.
	Variable string
	// Threshold throttles while the variable is at or above it. Required,
	// positive and finite; it may be fractional (0.5). Threads_running
	// counts the reading's own thread (and, on a primary, one per
	// connected replica's binlog dump thread), so an idle primary reads 1
	// or more.
	Threshold float64
	// Critical, if positive, is the level at or above which IsCritical
	// reports true. It must be above Threshold and finite; 0 means no
	// critical level.
	Critical float64
	// Rate watches the variable's increase per second instead of its
	// value; see LoadLimit.Rate.
	Rate bool
	// CriticalFor, if positive, confirms a critical level before
	// IsCritical reports it (gh-ost's --critical-load-interval-millis):
	// every successful reading from the first at or above a critical level
	// to one at least CriticalFor later must be at or above one, so it
	// takes two readings at least (readings come every WithInterval, or
	// faster while throttled). 0, the default, reports the first such
	// reading. It needs a Critical level, and applies to Limits too.
	CriticalFor time.Duration

	// Limits watches several variables at once, in place of the
	// single-variable fields above.
	Limits []LoadLimit
}

// LoadLimit is one watched status variable: its name and its levels, with the
// meanings of LoadConfig's fields of the same names (Variable is required).
type LoadLimit struct {
	Variable  string
	Threshold float64
	Critical  float64
	// Rate, for a cumulative counter, compares the counter's increase per
	// second to Threshold and Critical instead of its value: the increase
	// between two successful readings divided by the time between them on
	// the monotonic clock, measured over half a poll interval at least (a
	// reading sooner than that after the last rate's start, such as an
	// UpdateLag just after a poll, keeps the last rate: a rate over a few
	// milliseconds is noise).
	//
	// There is no rate until a second reading, so the variable does not
	// throttle after Open's first reading, nor for the interval in which
	// the counter went down (a server restart, FLUSH STATUS): a rate of
	// "unknown" that throttled would pause every job for an interval at
	// every start, and the variable is only one sign of load; the stale
	// window still throttles a server that stops answering. Value and
	// ValueOf report the rate, 0 while there is none.
	Rate bool
}

const defaultLoadVariable = "Threads_running"

// loadMaxNameLen is the longest status variable name the servers use; a
// longer name cannot exist.
const loadMaxNameLen = 64

// NewLoad returns a throttler that watches db (the primary) and throttles
// while a status variable is at or above its threshold; see LoadConfig. It
// does no I/O; Open does. A nil logger logs nothing. Bad input (a nil DB, a
// variable name that is not a plain identifier, a threshold or option out of
// range) is an error wrapping ErrInvalidConfig.
func NewLoad(db *sql.DB, cfg LoadConfig, logger *slog.Logger, opts ...Option) (*Load, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("db *sql.DB is nil"))
	}
	limits, err := loadLimits(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	o, problems := buildOptions(opts, "a Load throttler", pollingOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	l := &Load{
		db:         db,
		name:       o.name,
		limits:     limits,
		stmt:       loadStatement(limits),
		log:        logger,
		values:     make([]atomic.Uint64, len(limits)),
		rates:      make([]loadRate, len(limits)),
		rateWindow: o.interval / 2,
	}
	l.levels.Store(&loadLevels{limits: limits, criticalFor: cfg.CriticalFor})
	l.polling = polling{poll: poller.New(o.pollerConfig(logger, "status reading", "load"), l.probe), updating: "update load"}
	return l, nil
}

// loadLimits validates cfg and returns the limits it describes.
func loadLimits(cfg LoadConfig) ([]LoadLimit, error) {
	var errs []error
	var limits []LoadLimit
	if len(cfg.Limits) == 0 {
		v := cfg.Variable
		if v == "" {
			v = defaultLoadVariable
		}
		limits = []LoadLimit{{Variable: v, Threshold: cfg.Threshold, Critical: cfg.Critical, Rate: cfg.Rate}}
		errs = loadCheckLimit(errs, "LoadConfig.", limits[0])
	} else {
		if cfg.Variable != "" || cfg.Threshold != 0 || cfg.Critical != 0 || cfg.Rate {
			errs = append(errs, fmt.Errorf("LoadConfig: Limits is set together with Variable %q, Threshold %v, Critical %v or Rate %v: use one or the other", cfg.Variable, cfg.Threshold, cfg.Critical, cfg.Rate))
		}
		seen := make(map[string]int, len(cfg.Limits))
		for i, lim := range cfg.Limits {
			field := fmt.Sprintf("LoadConfig.Limits[%d].", i)
			if lim.Variable == "" {
				errs = append(errs, fmt.Errorf("%sVariable is empty: name the status variable", field))
			} else {
				errs = loadCheckLimit(errs, field, lim)
			}
			key := strings.ToLower(lim.Variable)
			if j, dup := seen[key]; dup && key != "" {
				errs = append(errs, fmt.Errorf("%sVariable %q repeats Limits[%d]", field, lim.Variable, j))
			}
			seen[key] = i
		}
		limits = append([]LoadLimit(nil), cfg.Limits...)
	}
	if cfg.CriticalFor < 0 {
		errs = append(errs, fmt.Errorf("LoadConfig.CriticalFor %v must not be negative (0 reports the first critical reading)", cfg.CriticalFor))
	} else if cfg.CriticalFor > 0 && !slices.ContainsFunc(limits, func(lim LoadLimit) bool { return lim.Critical > 0 }) {
		errs = append(errs, fmt.Errorf("LoadConfig.CriticalFor %v is set but no Critical level is", cfg.CriticalFor))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...) // NewLoad wraps ErrInvalidConfig once
	}
	return limits, nil
}

func loadCheckLimit(errs []error, field string, lim LoadLimit) []error {
	if !loadValidName(lim.Variable) {
		errs = append(errs, fmt.Errorf("%sVariable %q is not a status variable name: want letters, digits and underscores only, at most %d of them", field, lim.Variable, loadMaxNameLen))
	}
	if !(lim.Threshold > 0) || math.IsInf(lim.Threshold, 1) { // NaN fails the first test
		errs = append(errs, fmt.Errorf("%sThreshold %v must be a positive finite number", field, lim.Threshold))
	}
	if lim.Critical != 0 && !(lim.Critical > lim.Threshold && !math.IsInf(lim.Critical, 1)) {
		errs = append(errs, fmt.Errorf("%sCritical %v must be a finite number above Threshold %v (or 0 for no critical level)", field, lim.Critical, lim.Threshold))
	}
	return errs
}

// loadValidName reports whether s is a plain identifier. The statement is
// built from names that pass it: such a name cannot close the string literal
// it sits in, whatever the server's sql_mode or character set.
func loadValidName(s string) bool {
	if s == "" || len(s) > loadMaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// loadStatement is the one statement every reading runs.
//
// SHOW GLOBAL STATUS is the only source of status variables that MariaDB
// 10.11 and MySQL 8 both have and that needs no privilege: MySQL 8 removed
// information_schema.GLOBAL_STATUS, and performance_schema.global_status is
// empty on MariaDB unless performance_schema is ON (it is OFF by default),
// which would read as "no such variable". It cannot take a placeholder: on
// MariaDB 10.11 `SHOW GLOBAL STATUS LIKE ?` is a syntax error (1064), and
// MySQL does not document SHOW STATUS as preparable. So the names, which
// passed loadValidName, are written into the text as quoted literals and the
// statement goes over the text protocol (no arguments, no prepare). The
// filter is WHERE ... IN, not LIKE: "_" is a LIKE wildcard.
func loadStatement(limits []LoadLimit) string {
	var b strings.Builder
	b.WriteString("SHOW GLOBAL STATUS WHERE Variable_name IN (")
	for i, lim := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + lim.Variable + "'")
	}
	b.WriteString(")")
	return b.String()
}

// Open fails on a variable the server does not have (errors.Is
// ErrUnavailable) or whose value is not a number.
func (l *Load) Open(ctx context.Context) error {
	if err := l.poll.Open(ctx); err != nil {
		if !errors.Is(err, ErrAlreadyOpen) {
			// A reading may have raised the critical level before the
			// context ended: a throttler that is not open reports nothing.
			l.setCritical("", true)
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	l.log.Info("throttler: open", "load", l.describe(), "value", l.Value())
	return nil
}

// probe reads the variables once and says what the reading calls for. The
// poller never runs two probes at once.
func (l *Load) probe(ctx context.Context) (poller.Verdict, error) {
	vals, err := l.read(ctx)
	if err != nil {
		return unreadable("load", err)
	}
	now := time.Now() // the monotonic reading rates are measured on
	n := len(l.limits)
	rd := &loadReading{at: now, vals: make([]float64, n), shown: make([]string, n), known: make([]bool, n)}
	for i, lim := range l.limits {
		v, shown, ok := vals[i].f, vals[i].raw, true
		if lim.Rate {
			v, ok = l.rates[i].next(vals[i], now, l.rateWindow) // no rate yet: see LoadLimit.Rate
			shown = loadFormatRate(v) + "/s"
		}
		l.values[i].Store(math.Float64bits(v))
		rd.vals[i], rd.shown[i], rd.known[i] = v, shown, ok
	}
	l.last.Store(rd) // before judging: see poller.Rejudge
	v, critical := l.judge(rd, l.levels.Load())
	l.readCritical(critical, now)
	return v, nil
}

// judge is what reading rd calls for against levels lv, and its critical
// reason ("" for none): the probe's verdict, and SetLimits's.
func (l *Load) judge(rd *loadReading, lv *loadLevels) (poller.Verdict, string) {
	var reason, critical []string
	for i, lim := range lv.limits {
		if !rd.known[i] {
			continue
		}
		unit := ""
		if lim.Rate {
			unit = "/s"
		}
		if rd.vals[i] >= lim.Threshold {
			reason = append(reason, lim.Variable+" "+rd.shown[i]+" >= "+loadFormat(lim.Threshold)+unit)
		}
		if lim.Critical > 0 && rd.vals[i] >= lim.Critical {
			critical = append(critical, lim.Variable+" "+rd.shown[i]+" >= "+loadFormat(lim.Critical)+unit)
		}
	}
	if len(reason) == 0 {
		return poller.Verdict{}, strings.Join(critical, ", ")
	}
	return poller.Verdict{Throttled: true, Kind: "load", Reason: strings.Join(reason, ", ")}, strings.Join(critical, ", ")
}

// judgeLast judges the last reading against the levels now, critical level
// included (see poller.Rejudge).
func (l *Load) judgeLast() poller.Verdict {
	rd := l.last.Load()
	if rd == nil {
		return poller.Verdict{}
	}
	v, critical := l.judge(rd, l.levels.Load())
	l.readCritical(critical, rd.at)
	return v
}

// SetLimits changes the levels: each watched variable's Threshold and
// Critical, and CriticalFor. cfg is validated as NewLoad validates it, and
// must watch the same variables, each a Rate or not as before (the
// statement and the rates are built for them; watching others is another
// Load). The last reading is judged at once against the new levels, the
// critical level included, as ToleranceSetter says of a tolerance.
func (l *Load) SetLimits(cfg LoadConfig) error {
	limits, err := loadLimits(cfg)
	if err != nil {
		return configError([]error{fmt.Errorf("SetLimits: %w", err)})
	}
	lv := &loadLevels{limits: make([]LoadLimit, len(l.limits)), criticalFor: cfg.CriticalFor}
	set := make([]bool, len(l.limits))
	var errs []error
	for _, lim := range limits {
		i := slices.IndexFunc(l.limits, func(w LoadLimit) bool { return strings.EqualFold(w.Variable, lim.Variable) })
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("SetLimits: %s is not watched by this Load: the variables are NewLoad's", lim.Variable))
			continue
		case lim.Rate != l.limits[i].Rate:
			errs = append(errs, fmt.Errorf("SetLimits: %s has Rate %v, and NewLoad's %v", lim.Variable, lim.Rate, l.limits[i].Rate))
		}
		lim.Variable = l.limits[i].Variable
		lv.limits[i], set[i] = lim, true
	}
	for i, ok := range set {
		if !ok {
			errs = append(errs, fmt.Errorf("SetLimits: %s is watched by this Load but given no levels", l.limits[i].Variable))
		}
	}
	if err := configError(errs); err != nil {
		return err
	}
	l.levels.Store(lv)
	l.poll.Rejudge(l.judgeLast)
	l.log.Info("throttler: load levels changed", "load", l.describe())
	return nil
}

// Utilization is the largest of the watched values (or rates) over its
// threshold; see Utilizer.
func (l *Load) Utilization() float64 {
	u := 0.0
	for i, lim := range l.levels.Load().limits {
		u = max(u, math.Float64frombits(l.values[i].Load())/lim.Threshold)
	}
	return l.utilization(u)
}

// statusReadingError is a reading the server gave that cannot be used
// (Load's, PurgeLag's, Galera's): a missing variable or counter (which
// unwraps to ErrUnavailable, whose own text, about lag sources, would
// mislead here) or a value that is not a number. They throttle on it at
// once.
type statusReadingError struct {
	msg   string
	cause error // nil or a sentinel
}

func (e *statusReadingError) Error() string { return e.msg }

// unreadable is a probe's outcome for err, a failed reading of what. A
// statusReadingError means the server answered, and its answer cannot be
// used: that is a new reading of "unknown", not a missing one, so the last
// good verdict no longer stands and it throttles at once. Any other error
// is a missing reading, which the stale window covers.
func unreadable(what string, err error) (poller.Verdict, error) {
	var bad *statusReadingError
	if errors.As(err, &bad) {
		return poller.Verdict{Throttled: true, Kind: "unreadable", Reason: what + " unknown: " + err.Error()}, err
	}
	return poller.Verdict{}, err
}
func (e *statusReadingError) Unwrap() error { return e.cause }

// loadValue is one status value as read: its text, its float64 value, and,
// for a non-negative integer that fits, its exact value, so that the
// increase of a counter past 2^53 is exact.
type loadValue struct {
	raw   string // as the server sent it, truncated for reasons
	f     float64
	u     uint64
	exact bool // u holds the value
}

// read runs the statement and returns one value per limit, in order.
func (l *Load) read(ctx context.Context) ([]loadValue, error) {
	return onSession(ctx, l.db, l.readOn)
}

func (l *Load) readOn(ctx context.Context, db querier) ([]loadValue, error) {
	status, err := showStatus(ctx, db, l.stmt)
	if err != nil {
		return nil, fmt.Errorf("SHOW GLOBAL STATUS: %w", err)
	}
	vals := make([]loadValue, len(l.limits))
	for i, lim := range l.limits {
		value, ok := status[strings.ToLower(lim.Variable)]
		if !ok {
			return nil, &statusReadingError{
				msg:   fmt.Sprintf("the server has no global status variable %q (see SHOW GLOBAL STATUS)", lim.Variable),
				cause: ErrUnavailable,
			}
		}
		v, err := loadParseValue(value)
		if err != nil {
			return nil, &statusReadingError{msg: fmt.Sprintf("status variable %s = %q: %v", lim.Variable, loadTruncate(value), err)}
		}
		vals[i] = v
	}
	return vals, nil
}

// loadParseValue reads a status value: a finite decimal number, integer or
// fractional ("31", "0.250000", "-2"). Anything else, including a number
// too large for a float64, is not a value to compare.
func loadParseValue(s string) (loadValue, error) {
	f, ok := parseDecimal(s)
	if !ok {
		return loadValue{}, errors.New("not a finite decimal number")
	}
	v := loadValue{raw: loadTruncate(s), f: f}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		v.u, v.exact = u, true
	}
	return v, nil
}

func loadTruncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// loadRate is the rate state of one Rate limit.
type loadRate struct {
	start   loadValue // the reading the next rate starts from
	at      time.Time // when start was read
	has     bool      // start is set
	rate    float64   // the last rate, valid when hasRate
	hasRate bool
}

// next takes a reading made at now and returns the variable's rate, and
// false when there is none (see LoadLimit.Rate).
func (r *loadRate) next(v loadValue, now time.Time, window time.Duration) (float64, bool) {
	if !r.has {
		r.start, r.at, r.has = v, now, true
		return 0, false
	}
	elapsed := now.Sub(r.at)
	var delta float64
	switch {
	case v.exact && r.start.exact && v.u >= r.start.u:
		delta = float64(v.u - r.start.u) // exact before rounding once
	case v.exact && r.start.exact, v.f < r.start.f:
		// The counter went down: restarted or flushed. The interval
		// has no rate; the next one starts here.
		r.start, r.at, r.hasRate = v, now, false
		return 0, false
	default:
		delta = v.f - r.start.f
	}
	if elapsed < window || elapsed <= 0 {
		return r.rate, r.hasRate
	}
	r.rate, r.hasRate = delta/elapsed.Seconds(), true
	r.start, r.at = v, now
	return r.rate, true
}

// loadFormat writes a level as Go would write it back: "25", "0.5".
func loadFormat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// loadFormatRate writes a rate with four significant digits at most, and
// no fraction from 1000 up: "5230", "12.35", "0.01234".
func loadFormatRate(f float64) string {
	if f == 0 {
		return "0"
	}
	decimals := max(0, 3-int(math.Floor(math.Log10(math.Abs(f)))))
	s := strconv.FormatFloat(f, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// readCritical takes one successful reading's critical reason ("" for none)
// and publishes it once confirmed (LoadConfig.CriticalFor).
func (l *Load) readCritical(reason string, at time.Time) {
	l.critMu.Lock()
	defer l.critMu.Unlock()
	if reason == "" {
		l.critSince = time.Time{}
	} else if l.critSince.IsZero() {
		l.critSince = at
	}
	if reason == "" || at.Sub(l.critSince) >= l.levels.Load().criticalFor {
		l.setCriticalLocked(reason, false)
	}
}

// setCritical publishes the critical reason ("" for none) and logs a change.
// Once the throttler is released, only reset may clear it: a reading that
// lands after Close changes nothing, and logs nothing.
func (l *Load) setCritical(reason string, reset bool) {
	l.critMu.Lock()
	defer l.critMu.Unlock()
	l.setCriticalLocked(reason, reset)
}

func (l *Load) setCriticalLocked(reason string, reset bool) {
	if reset {
		l.critSince = time.Time{} // a new Open confirms afresh
	}
	if l.poll.Released() && !reset {
		return
	}
	old := l.critical.Load()
	switch {
	case reason == "" && old == nil:
	case reason == "":
		l.critical.Store(nil)
		if !reset {
			l.log.Info("throttler: load no longer critical")
		}
	case old != nil && *old == reason:
	default:
		l.critical.Store(&reason)
		if old == nil {
			l.log.Warn("throttler: load critical", "reason", reason)
		}
	}
}

func (l *Load) Close() error {
	l.poll.Close()
	return nil
}

// IsCritical reports whether the last successful reading was at or above a
// critical level (and, with LoadConfig.CriticalFor, every one for that long
// before it): one atomic load while not critical. It is false when no
// Critical is set, before Open, and once the throttler stopped.
func (l *Load) IsCritical() bool { return l.critical.Load() != nil && !l.poll.Released() }

// CriticalReason is "" when not critical; otherwise it names each variable at
// or above its critical level, for example "Threads_running 120 >= 100".
func (l *Load) CriticalReason() string {
	if r := l.critical.Load(); r != nil && !l.poll.Released() {
		return *r
	}
	return ""
}

// Value is the last successful reading of the (first) watched variable, or
// its rate per second for a Rate limit; 0 before the first reading.
func (l *Load) Value() float64 { return math.Float64frombits(l.values[0].Load()) }

// ValueOf is what Value is for variable (case-insensitive), and whether it is
// watched.
func (l *Load) ValueOf(variable string) (float64, bool) {
	for i, lim := range l.limits {
		if strings.EqualFold(lim.Variable, variable) {
			return math.Float64frombits(l.values[i].Load()), true
		}
	}
	return 0, false
}

// String is the name given with WithName, or "load".
func (l *Load) String() string { return cmp.Or(l.name, "load") }

// describe is the configuration for the open log line, for example
// "Threads_running>=25 (critical 100), Innodb_rows_inserted>=5000/s".
func (l *Load) describe() string {
	limits := l.levels.Load().limits
	parts := make([]string, len(limits))
	for i, lim := range limits {
		unit := ""
		if lim.Rate {
			unit = "/s"
		}
		parts[i] = lim.Variable + ">=" + loadFormat(lim.Threshold) + unit
		if lim.Critical > 0 {
			parts[i] += " (critical " + loadFormat(lim.Critical) + unit + ")"
		}
	}
	return strings.Join(parts, ", ")
}

var (
	_ Throttler        = (*Load)(nil)
	_ Reasoner         = (*Load)(nil)
	_ Waiter           = (*Load)(nil)
	_ CriticalReporter = (*Load)(nil)
	_ Utilizer         = (*Load)(nil)
	_ fmt.Stringer     = (*Load)(nil)
)
