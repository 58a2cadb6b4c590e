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
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/throttlekit/throttler/internal/poller"
)

// Query throttles while a query of the caller's returns a number at or above
// a threshold, like gh-ost's --throttle-query: the query can read anything
// the copier's owner cares about (a flag table an operator sets, a count of
// long transactions, a business-hours window).
//
// The query reads as throttled, with a reason from ThrottleReason, while
//
//   - its value is at or above the threshold ("throttle query value 3 >= 1");
//   - its answer is not one number (NULL, no row, several rows or columns,
//     text that is not a number): a new answer that says "unknown", so it
//     throttles at once rather than letting the last value stand;
//   - it has not answered for WithStaleAfter (a query error, a dead or hung
//     server, a timeout): the last value stands only that long, then the
//     throttler throttles with the error in its reason. A query that fails
//     is not an answer: one failed run, such as a dropped connection, does
//     not throttle, but a query that keeps failing throttles within the
//     stale window, never after it.
//
// A run that outlives WithQueryTimeout is killed on the server (KILL QUERY
// on its connection, which needs no privilege for one's own connection):
// the driver gives up by closing the client connection, which leaves the
// statement running on the server, and a query stuck behind a lock would
// leave one such thread per poll. So each run first reads its connection's
// CONNECTION_ID(). Behind a proxy that multiplexes client connections onto
// server connections, that id may not name the run's server thread: point
// Query at the server itself.
//
// Most callers need only Open, BlockWait before each chunk, and Close.
type Query struct {
	db          *sql.DB
	name        string
	query       string
	args        []any
	threshold   atomic.Uint64 // math.Float64bits; SetThreshold changes it
	killTimeout time.Duration
	log         *slog.Logger
	polling
	value atomic.Uint64 // math.Float64bits of the last value
}

// QueryConfig is the query Query runs and the level that throttles.
type QueryConfig struct {
	// SQL is the query. It must return exactly one row with one numeric
	// column: an integer, a float, or a DECIMAL or text that reads as a
	// decimal number. Required.
	SQL string
	// Threshold throttles while the value is at or above it. It must be
	// positive (a gh-ost-style query that returns 0 when all is well and 1
	// to throttle wants Threshold 1).
	Threshold float64
	// Args are the query's placeholder arguments, if any. With arguments
	// the driver prepares the statement on each run, unless the DSN sets
	// interpolateParams=true.
	Args []any
}

// NewQuery returns a throttler that runs cfg.SQL on db and throttles while
// its value is at or above cfg.Threshold. It does no I/O; Open does. A nil
// logger logs nothing. Bad input (a nil DB, an empty query, a threshold or
// option out of range) is an error wrapping ErrInvalidConfig.
func NewQuery(db *sql.DB, cfg QueryConfig, logger *slog.Logger, opts ...Option) (*Query, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("db *sql.DB is nil"))
	}
	if strings.TrimSpace(cfg.SQL) == "" {
		errs = append(errs, fmt.Errorf("QueryConfig.SQL %q is empty", cfg.SQL))
	}
	if err := queryCheckThreshold("QueryConfig.Threshold", cfg.Threshold); err != nil {
		errs = append(errs, err)
	}
	o, problems := buildOptions(opts, "a Query throttler", pollingOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	q := &Query{
		db:          db,
		name:        o.name,
		query:       cfg.SQL,
		args:        append([]any(nil), cfg.Args...),
		killTimeout: o.queryTimeout,
		log:         logger,
	}
	q.threshold.Store(math.Float64bits(cfg.Threshold))
	q.polling = polling{poll: poller.New(o.pollerConfig(logger, "throttle query result", "query"), q.probe), updating: "update query"}
	return q, nil
}

// Open fails on a query that fails or whose answer is not one number.
func (q *Query) Open(ctx context.Context) error {
	if err := q.poll.Open(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	q.log.Info("throttler: open", "query", queryTruncate(q.query, 200), "value", q.Value(), "threshold", q.Threshold())
	return nil
}

// probe runs the query once and says what its answer calls for. The poller
// never runs two probes at once.
func (q *Query) probe(ctx context.Context) (poller.Verdict, error) {
	v, err := q.read(ctx)
	if err != nil {
		var bad *queryAnswerError
		if errors.As(err, &bad) {
			return poller.Verdict{Throttled: true, Kind: "unknown value", Reason: err.Error()}, err
		}
		return poller.Verdict{}, err
	}
	q.value.Store(math.Float64bits(v)) // before judging: see poller.Rejudge
	return q.judge(v, q.Threshold()), nil
}

// judge is what value v calls for against threshold: the probe's verdict,
// and SetThreshold's.
func (q *Query) judge(v, threshold float64) poller.Verdict {
	if v >= threshold {
		return poller.Verdict{Throttled: true, Kind: "value", Reason: "throttle query value " + queryFormat(v) + " >= " + queryFormat(threshold)}
	}
	return poller.Verdict{}
}

// judgeLast judges the last value against the threshold now.
func (q *Query) judgeLast() poller.Verdict { return q.judge(q.Value(), q.Threshold()) }

func queryCheckThreshold(what string, f float64) error {
	if !(f > 0) || math.IsInf(f, 1) {
		return fmt.Errorf("%s %v must be a positive number", what, f)
	}
	return nil
}

// Threshold is the level now: QueryConfig.Threshold, or the last
// SetThreshold's.
func (q *Query) Threshold() float64 { return math.Float64frombits(q.threshold.Load()) }

// SetThreshold changes the level at and above which the query's value
// throttles (positive and finite, as QueryConfig.Threshold), judged at once
// against the last value as ToleranceSetter says of a tolerance.
func (q *Query) SetThreshold(threshold float64) error {
	if err := queryCheckThreshold("SetThreshold: the threshold", threshold); err != nil {
		return configError([]error{err})
	}
	old := math.Float64frombits(q.threshold.Swap(math.Float64bits(threshold)))
	q.poll.Rejudge(q.judgeLast)
	if old != threshold {
		q.log.Info("throttler: threshold changed", "threshold", threshold, "was", old)
	}
	return nil
}

// Utilization is the last value over the threshold; see Utilizer.
func (q *Query) Utilization() float64 {
	return q.utilization(max(q.Value()/q.Threshold(), 0)) // a negative value is as idle as 0
}

// queryAnswerError is an answer the server gave that is not one number.
type queryAnswerError struct{ msg string }

func (e *queryAnswerError) Error() string { return e.msg }

func queryAnswer(format string, args ...any) error {
	return &queryAnswerError{msg: "throttle query " + fmt.Sprintf(format, args...)}
}

// read runs the query on a connection whose server-side id it knows first,
// so that a run cut short by its context can be killed on the server.
func (q *Query) read(ctx context.Context) (float64, error) {
	var id int64
	v, err := onSession(ctx, q.db, func(ctx context.Context, conn querier) (float64, error) {
		if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			return 0, fmt.Errorf("read the connection id: %w", err)
		}
		// A context that ends mid-query closes the connection under the
		// driver (it is discarded, not reused); the server has not noticed.
		return q.run(ctx, conn)
	})
	if err == nil {
		return v, nil
	}
	var answer *queryAnswerError
	if !errors.As(err, &answer) { // an answer names itself
		err = fmt.Errorf("throttle query: %w", err)
	}
	if id != 0 && ctx.Err() != nil {
		if kerr := q.kill(ctx, id); kerr != nil {
			err = fmt.Errorf("%w (and KILL QUERY %d failed: %v)", err, id, kerr)
		}
	}
	return v, err
}

// run runs the query on conn and reads its one number.
func (q *Query) run(ctx context.Context, conn querier) (float64, error) {
	rows, err := conn.QueryContext(ctx, q.query, q.args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	if len(cols) != 1 {
		return 0, queryAnswer("returned %d columns (%s); want one numeric column", len(cols), strings.Join(cols, ", "))
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, queryAnswer("returned no rows; want exactly one")
	}
	var raw any
	if err := rows.Scan(&raw); err != nil {
		return 0, err
	}
	if rows.Next() {
		return 0, queryAnswer("returned more than one row; want exactly one")
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return queryNumber(raw)
}

// kill ends the query still running on the server in connection id. It runs
// even when ctx ended by Close: the statement would otherwise outlive the
// throttler. It is bounded by the query timeout, so a dead server costs Close
// at most that.
func (q *Query) kill(ctx context.Context, id int64) error {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.killTimeout)
	defer cancel()
	_, err := q.db.ExecContext(kctx, "KILL QUERY "+strconv.FormatInt(id, 10))
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1094 { // ER_NO_SUCH_THREAD: already gone
		return nil
	}
	return err
}

// queryNumber reads the value the driver scanned: integers and floats as
// they are, DECIMAL and text when they read as a decimal number. NULL is an
// unknown value, never 0: it throttles.
func queryNumber(raw any) (float64, error) {
	switch v := raw.(type) {
	case nil:
		return 0, queryAnswer("returned NULL: the value is unknown")
	case int64:
		return float64(v), nil
	case uint64:
		return float64(v), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, queryAnswer("returned %v; want a finite number", v)
		}
		return v, nil
	case float32:
		return queryNumber(float64(v))
	case []byte:
		return queryParse(string(v))
	case string:
		return queryParse(v)
	}
	return 0, queryAnswer("returned %v (%T), not a number", raw, raw)
}

// queryParse reads a decimal number, allowing spaces around it.
func queryParse(s string) (float64, error) {
	if v, ok := parseDecimal(strings.TrimSpace(s)); ok {
		return v, nil
	}
	return 0, queryAnswer("returned %q, not a number", queryTruncate(s, 64))
}

func queryFormat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func queryTruncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Close kills a run in flight on the server first, which takes at most the
// query timeout.
func (q *Query) Close() error {
	q.poll.Close()
	return nil
}

// Value is the last number the query returned; 0 before the first.
func (q *Query) Value() float64 { return math.Float64frombits(q.value.Load()) }

// String is the name given with WithName, or "query".
func (q *Query) String() string { return cmp.Or(q.name, "query") }

var (
	_ Throttler    = (*Query)(nil)
	_ Reasoner     = (*Query)(nil)
	_ Waiter       = (*Query)(nil)
	_ Utilizer     = (*Query)(nil)
	_ fmt.Stringer = (*Query)(nil)
)
