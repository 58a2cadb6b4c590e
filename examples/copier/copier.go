package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql" // the driver for PRIMARY_DSN and REPLICA_DSN

	"github.com/throttlekit/throttler"
)

// pollInterval is how often the throttler measures the replica's lag: the
// copier notices lag, and its end, within about this long.
const pollInterval = 100 * time.Millisecond

// errNeverPaused fails a run with faults in which the copier never paused:
// the demo's (and CI's) proof that throttling really happened is missing.
var errNeverPaused = errors.New("the copy never paused: throttling was not demonstrated")

// run sets up the tables, copies them chunk by chunk under the throttler
// (injecting faults while it copies when cfg.Faults is set), verifies the
// copy and returns what happened. The summary is filled in as far as the run
// got, also when it returns an error or ctx is cancelled.
func run(ctx context.Context, cfg config, out io.Writer) (sum summary, err error) {
	start := time.Now()
	con := newConsole(out, cfg.Live, start)
	sum.Rows, sum.Tolerance = int64(cfg.Rows), cfg.Tolerance
	defer func() { sum.Elapsed = time.Since(start) }()
	if cfg.Faults && cfg.Pair == nil {
		return sum, errors.New("faults need the local pair")
	}

	primary, err := openDB(cfg.PrimaryDSN, 4)
	if err != nil {
		return sum, fmt.Errorf("primary: %w", err)
	}
	defer primary.Close()
	replica, err := openDB(cfg.ReplicaDSN, 2)
	if err != nil {
		return sum, fmt.Errorf("replica: %w", err)
	}
	defer replica.Close()

	tb := tables{db: primary, src: qualify(cfg.Database, "orders"), dst: qualify(cfg.Database, "orders_copy")}
	con.Printf("demo: creating %s with %s rows and an empty %s", tb.src, thousands(int64(cfg.Rows)), tb.dst)
	if err := tb.create(ctx, cfg.Database, cfg.Rows); err != nil {
		return sum, err
	}
	if cfg.Pair != nil {
		// Let the replica apply the fill before the clock starts, so that
		// every pause below is one the demo caused.
		if err := cfg.Pair.Replication().WaitCaughtUp(ctx); err != nil {
			return sum, fmt.Errorf("wait for the replica to apply the fill: %w", err)
		}
	}

	logger := slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	// Pacing admits chunks at the rate the replica applies them, so that a
	// copier faster than the replica holds its lag near half the tolerance
	// instead of overrunning it before the lag shows.
	t, err := throttler.NewReplicationThrottler(replica, cfg.Tolerance, logger,
		throttler.WithInterval(pollInterval), throttler.WithPacing(0))
	if err != nil {
		return sum, err
	}
	if err := t.Open(ctx); err != nil {
		return sum, err
	}
	defer t.Close()

	if cfg.Faults {
		// A replica only shows lag while the primary writes, and the
		// copier stops writing while it is paused.
		stopWriter, err := cfg.Pair.Primary().StartWriter(ctx, 100*time.Millisecond)
		if err != nil {
			return sum, err
		}
		defer stopWriter()
	}

	c := &copier{tables: tb, t: t, chunk: cfg.Chunk, pace: cfg.Pace}
	copyStart := time.Now()
	stopStatus := startStatus(con, c, t, int64(cfg.Rows))
	var stopFaults func() (int, error)
	if cfg.Faults {
		stopFaults = startFaults(ctx, cfg.Pair, cfg.Schedule, cfg.Tolerance, con)
	}
	copyErr := c.run(ctx)
	var faultErr error
	if stopFaults != nil {
		// Restores the replica, whether the copy ended or was interrupted.
		sum.Faults, faultErr = stopFaults()
	}
	final := "done"
	if copyErr != nil {
		final = "stopped"
	}
	sum.WorstLag = stopStatus(final)
	sum.Copied, sum.Throttle = c.copied.Load(), t.Stats()
	sum.CopyTime = time.Since(copyStart)
	if err := errors.Join(copyErr, faultErr); err != nil {
		return sum, err
	}

	if sum.Verified, sum.Checksum, err = tb.verify(ctx); err != nil {
		return sum, err
	}
	sum.Checked = true
	switch {
	case !sum.Verified:
		return sum, fmt.Errorf("verification failed: %s and %s differ", tb.src, tb.dst)
	case cfg.Faults && sum.Throttle.Waits == 0 && sum.Faults == 0:
		return sum, fmt.Errorf("%w: the copy ended before the first fault (raise -rows or -pace)", errNeverPaused)
	case cfg.Faults && sum.Throttle.Waits == 0:
		return sum, fmt.Errorf("%w, although the replica was made to lag %s", errNeverPaused, plural(sum.Faults, "time"))
	}
	return sum, nil
}

func openDB(dsn string, conns int) (*sql.DB, error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

// dropTime leaves the time out of the throttler's log lines: the console
// prefixes every line with the time since the start instead.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// copier copies tables.src into tables.dst in primary-key order, chunk by
// chunk, asking the throttler before each chunk.
type copier struct {
	tables
	t     *throttler.Replication
	chunk int
	pace  time.Duration

	copied atomic.Int64 // rows; read by the status line
}

func (c *copier) run(ctx context.Context) error {
	var after int64 // the last id copied
	for {
		// Paced to the replica's apply rate, and stopped while it lags.
		// The throttler counts the waits for the summary (Stats).
		c.t.BlockWait(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		last, n, err := c.copyChunk(ctx, after)
		if err != nil {
			return fmt.Errorf("copy the chunk after id %d: %w", after, err)
		}
		if n == 0 {
			return nil // past the last id
		}
		after = last
		c.copied.Add(n)

		if err := sleep(ctx, c.pace); err != nil {
			return err
		}
	}
}

// copyChunk copies up to c.chunk rows with ids above after and returns the
// last id copied and how many rows were. Its upper bound is found first, so
// that the INSERT ... SELECT reads exactly one closed id range.
func (c *copier) copyChunk(ctx context.Context, after int64) (last, n int64, err error) {
	var hi sql.NullInt64
	err = c.db.QueryRowContext(ctx, fmt.Sprintf(
		"SELECT MAX(id) FROM (SELECT id FROM %s WHERE id > ? ORDER BY id LIMIT ?) AS chunk", c.src),
		after, c.chunk).Scan(&hi)
	if err != nil || !hi.Valid {
		return after, 0, err
	}
	res, err := c.db.ExecContext(ctx, fmt.Sprintf(
		"INSERT INTO %s (%s) SELECT %s FROM %s WHERE id > ? AND id <= ?", c.dst, columns, columns, c.src),
		after, hi.Int64)
	if err != nil {
		return after, 0, err
	}
	n, err = res.RowsAffected()
	return hi.Int64, n, err
}
