package throttler

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/throttlekit/throttler/internal/poller"
)

// PurgeLag throttles while InnoDB's purge is behind on the server it
// watches: while the history list length (undo logs of committed
// transactions not yet purged) is at or above a threshold. A bulk job that
// updates or deletes faster than purge keeps up, or that runs beside a long
// transaction whose read view holds purge back, grows the list; every read
// of a changed row then walks more undo, and the undo tablespace grows.
//
// It reads the counter trx_rseg_history_len of
// information_schema.INNODB_METRICS, which MariaDB (10.5+: column ENABLED)
// and MySQL 8 (column STATUS) both have and enable by default; reading it
// needs the PROCESS privilege. The server reads as throttled, with a reason
// such as "history list length 123456 >= 100000", while the length is at or
// above the threshold, and while the counter cannot be used (disabled with
// innodb_monitor_disable, absent, not a number): a disabled counter keeps its
// last value, so trusting it could hold a stale "all clear" for good. It
// throttles at once, and Open fails, with the statement that enables it.
//
// Most callers need Open, BlockWait before each chunk, and Close.
type PurgeLag struct {
	db     *sql.DB
	name   string
	max    int64
	log    *slog.Logger
	length atomic.Int64 // the last length read
	polling
}

// purgeCounter is the INNODB_METRICS counter PurgeLag reads.
const purgeCounter = "trx_rseg_history_len"

// purgeStatement selects every column: the one that says whether the counter
// is enabled is ENABLED (1 or 0) on MariaDB 10.5+ and STATUS ('enabled' or
// 'disabled') on MySQL and older MariaDB, and naming either fails on the
// other.
const purgeStatement = "SELECT * FROM information_schema.INNODB_METRICS WHERE NAME = '" + purgeCounter + "'"

// NewPurgeLag returns a throttler that watches db (the primary, or any
// server whose purge the job must not outrun) and throttles while its
// history list length is at or above maxHistory. It does no I/O; Open does.
// A nil logger logs nothing. Bad input (a nil DB, a maxHistory that is not
// positive, an option out of range) is an error wrapping ErrInvalidConfig.
func NewPurgeLag(db *sql.DB, maxHistory int64, logger *slog.Logger, opts ...Option) (*PurgeLag, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("db *sql.DB is nil"))
	}
	if maxHistory <= 0 {
		errs = append(errs, fmt.Errorf("maxHistory %d must be positive: the history list length that throttles", maxHistory))
	}
	o, problems := buildOptions(opts, "a PurgeLag throttler", pollingOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger)
	p := &PurgeLag{db: db, name: o.name, max: maxHistory, log: logger}
	p.polling = polling{poll: poller.New(o.pollerConfig(logger, "history list length reading", "purge lag"), p.probe), updating: "update purge lag"}
	return p, nil
}

// Open fails on a missing PROCESS privilege (errors.Is ErrAccessDenied), a
// server without the counter (ErrUnavailable) or with the counter disabled.
func (p *PurgeLag) Open(ctx context.Context) error {
	if err := p.poll.Open(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	p.log.Info("throttler: open", "history_list_length", p.Length(), "max", p.max)
	return nil
}

// probe reads the length once and says what it calls for.
func (p *PurgeLag) probe(ctx context.Context) (poller.Verdict, error) {
	n, err := onSession(ctx, p.db, p.read)
	if err != nil {
		return unreadable("history list length", err)
	}
	p.length.Store(n)
	if n >= p.max {
		return poller.Verdict{Throttled: true, Kind: "purge lag", Reason: "history list length " + strconv.FormatInt(n, 10) + " >= " + strconv.FormatInt(p.max, 10)}, nil
	}
	return poller.Verdict{}, nil
}

func (p *PurgeLag) read(ctx context.Context, q querier) (int64, error) {
	rows, err := queryRowMaps(ctx, q, purgeStatement)
	if accessDenied(err) {
		return 0, fmt.Errorf("%w: grant PROCESS to the monitoring user (information_schema.INNODB_METRICS needs it): %w", ErrAccessDenied, err)
	}
	if err != nil {
		return 0, fmt.Errorf("INNODB_METRICS: %w", err)
	}
	if len(rows) != 1 {
		return 0, &statusReadingError{msg: fmt.Sprintf("information_schema.INNODB_METRICS has %d rows for %s, want 1 (is InnoDB the storage engine?)", len(rows), purgeCounter), cause: ErrUnavailable}
	}
	r := rows[0]
	enabled, ok := r.first("ENABLED", "STATUS", "enabled", "status")
	if !ok || !(enabled.String == "1" || strings.EqualFold(enabled.String, "enabled")) {
		return 0, &statusReadingError{msg: fmt.Sprintf("the InnoDB monitor counter %s is disabled (ENABLED/STATUS %q): its value is stale; enable it with SET GLOBAL innodb_monitor_enable = '%s' (and innodb_monitor_enable=%s in the server's configuration to keep it across restarts)",
			purgeCounter, enabled.String, purgeCounter, purgeCounter)}
	}
	count, _ := r.first("COUNT", "count")
	n, err := strconv.ParseInt(count.String, 10, 64)
	if !count.Valid || err != nil || n < 0 {
		return 0, &statusReadingError{msg: fmt.Sprintf("%s COUNT %q is not a length", purgeCounter, loadTruncate(count.String))}
	}
	return n, nil
}

func (p *PurgeLag) Close() error {
	p.poll.Close()
	return nil
}

// Length is the last history list length read; 0 before the first reading.
func (p *PurgeLag) Length() int64 { return p.length.Load() }

// Utilization is the last length over the threshold; see Utilizer.
func (p *PurgeLag) Utilization() float64 {
	return p.utilization(float64(p.Length()) / float64(p.max))
}

// String is the name given with WithName, or "purge lag".
func (p *PurgeLag) String() string { return cmp.Or(p.name, "purge lag") }

var (
	_ Throttler    = (*PurgeLag)(nil)
	_ Reasoner     = (*PurgeLag)(nil)
	_ Waiter       = (*PurgeLag)(nil)
	_ Utilizer     = (*PurgeLag)(nil)
	_ fmt.Stringer = (*PurgeLag)(nil)
)
