package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler"
)

// The bench's tables live in their own database, which it drops at the end:
// the replica-only trigger goes with it.
const (
	benchDB     = "throttler_bench"
	sourceTable = benchDB + ".source"
	targetTable = benchDB + ".target"
)

// createTables (re)creates the bench's database with a source of rows rows,
// an empty target and the probe table. The source is filled by doubling, as
// the demo copier does: about 19 statements for 300,000 rows.
func createTables(ctx context.Context, primary *sql.DB, rows int) error {
	stmts := []string{
		"DROP DATABASE IF EXISTS " + benchDB,
		"CREATE DATABASE " + benchDB,
		"CREATE TABLE " + sourceTable + ` (
			id      BIGINT UNSIGNED NOT NULL PRIMARY KEY,
			account VARCHAR(32)     NOT NULL,
			amount  DECIMAL(10,2)   NOT NULL,
			note    CHAR(32)        NOT NULL
		) ENGINE=InnoDB`,
		"CREATE TABLE " + targetTable + " LIKE " + sourceTable,
		probeCreate,
		// The probe's row exists before the first read, which would
		// otherwise count as a failed one.
		"INSERT INTO " + probeTable + " (id, ts) VALUES (1, NOW(6))",
		"INSERT INTO " + sourceTable + " VALUES (1, 'account-1', 0.07, MD5(1))",
	}
	for _, s := range stmts {
		if _, err := primary.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create the bench's tables: %w", err)
		}
	}
	double := "INSERT INTO " + sourceTable + ` (id, account, amount, note)
		SELECT n, CONCAT('account-', n % 9973), (n * 7919 % 100000) / 100, MD5(n)
		FROM (SELECT id + ? AS n FROM ` + sourceTable + ` WHERE id + ? <= ?) AS more`
	for have := 1; have < rows; have *= 2 {
		if _, err := primary.ExecContext(ctx, double, have, have, rows); err != nil {
			return fmt.Errorf("fill %s (%d of %d rows): %w", sourceTable, have, rows, err)
		}
	}
	return nil
}

func truncateTarget(ctx context.Context, primary *sql.DB) error {
	if _, err := primary.ExecContext(ctx, "TRUNCATE TABLE "+targetTable); err != nil {
		return fmt.Errorf("truncate %s: %w", targetTable, err)
	}
	return nil
}

// copier copies the source into the target on the primary in id-range chunks
// of chunk rows, as a schema-change tool's row copier does, calling BlockWait
// before each chunk when it has a throttler.
type copier struct {
	db      *sql.DB
	rows    int
	chunk   int
	workers int
	// rate caps the copier's own speed in rows/s (0: as fast as the
	// primary goes), standing for a copier whose own work takes time.
	rate float64
	t    throttler.Throttler // nil: not throttled

	copied atomic.Int64

	mu     sync.Mutex // guards the fields below
	next   time.Time  // the earliest start of the next chunk, with rate
	stops  int        // BlockWait calls made while throttled: the copier stopped
	waited time.Duration
}

// copyResult is what one copy did.
type copyResult struct {
	Rows     int64
	Start    time.Time
	Duration time.Duration // from the first chunk's start to the last one's commit
	Stops    int           // BlockWait calls made while throttled
	Waited   time.Duration // in BlockWait (stopped or paced), summed over the workers
}

func (c *copier) run(ctx context.Context) (copyResult, error) {
	chunks := (c.rows + c.chunk - 1) / c.chunk
	var claimed atomic.Int64
	start := time.Now()
	c.next = start
	errs := make([]error, c.workers)
	var wg sync.WaitGroup
	for w := range c.workers {
		wg.Go(func() {
			for {
				k := claimed.Add(1) - 1
				if k >= int64(chunks) {
					return
				}
				if err := c.copyChunk(ctx, k); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	res := copyResult{Rows: c.copied.Load(), Start: start, Duration: time.Since(start)}
	c.mu.Lock()
	res.Stops, res.Waited = c.stops, c.waited
	c.mu.Unlock()
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

// copyChunk copies chunk k (ids k*chunk+1 to (k+1)*chunk) once the copier's
// own pace and then the throttler let it.
func (c *copier) copyChunk(ctx context.Context, k int64) error {
	if err := c.pace(ctx); err != nil {
		return err
	}
	if c.t != nil {
		stopped := c.t.IsThrottled() // else a wait is pacing's
		t0 := time.Now()
		c.t.BlockWait(ctx)
		w := time.Since(t0)
		c.mu.Lock()
		if stopped {
			c.stops++
		}
		c.waited += w
		c.mu.Unlock()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	lo := k*int64(c.chunk) + 1
	hi := min(lo+int64(c.chunk)-1, int64(c.rows))
	res, err := c.db.ExecContext(ctx, "INSERT INTO "+targetTable+" SELECT * FROM "+sourceTable+" WHERE id BETWEEN ? AND ?", lo, hi)
	if err != nil {
		return fmt.Errorf("copy ids %d-%d: %w", lo, hi, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("copy ids %d-%d: %w", lo, hi, err)
	}
	c.copied.Add(n)
	return nil
}

// pace sleeps until the next chunk's slot at c.rate. A slot missed (the
// throttler held the copier) is not made up for with a burst: the copier
// goes on at its speed from now.
func (c *copier) pace(ctx context.Context) error {
	if c.rate <= 0 {
		return nil
	}
	c.mu.Lock()
	slot := c.next
	if now := time.Now(); slot.Before(now) {
		slot = now
	}
	c.next = slot.Add(time.Duration(float64(c.chunk) / c.rate * float64(time.Second)))
	c.mu.Unlock()
	return sleepUntil(ctx, slot)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
