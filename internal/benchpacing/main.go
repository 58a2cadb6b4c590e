// Command benchpacing measures how well the throttler holds a real replica's
// lag under a tolerance when the copier is faster than the replica can apply
// (`make bench-pacing`, DESIGN.md section 4, notes/pacing.md).
//
// It uses the local MariaDB primary+replica (starting it if it is not up, and
// taking its use lock as the tests do), caps the replica's apply rate with a
// replica-only trigger, measures that capacity R by queue and drain, and then,
// for each throttler mode, copier speed and lag tolerance, copies a table in
// 1,000-row chunks with BlockWait before each chunk while a probe that does
// not use the library measures the true lag. It prints a Markdown table:
// throughput (rows/s and % of R), true lag mean, p95 and max, time over the
// tolerance, stops, and whether the lag stayed under 0.8 × the tolerance.
//
//	go run ./internal/benchpacing                         # all 16 runs, about 10 minutes
//	go run ./internal/benchpacing -modes stopgo -speeds 3R -tolerances 1s -r 10000   # one cell, ~40 s
//
// Modes: stopgo (stop/go on the lag alone: the backlog is hidden from the
// throttler, as before the leading signal), stopgo-backlog (the defaults),
// paced-heartbeat (WithPacing, heartbeat source at 100 ms beats) and
// paced-status (WithPacing, the default source).
//
// The pair is left as it was: the trigger, the setting it needs and the
// bench's database are removed at the end, also after an error or Ctrl-C. A
// second Ctrl-C exits without tidying up.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the pair's DSNs

	"github.com/throttlekit/throttler/internal/testenv"
)

const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// cleanupTimeout bounds the tidying up at the end, which may have to wait for
// the replica to apply a backlog.
const cleanupTimeout = 3 * time.Minute

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "benchpacing:", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels ctx; a second one kills the process as usual.
	context.AfterFunc(ctx, stop)

	err = run(ctx, cfg, stdout)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "benchpacing: interrupted")
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "benchpacing:", err)
		}
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(stderr, "benchpacing:", err)
		return exitFailed
	}
	return exitOK
}

// bench is the state of one invocation.
type bench struct {
	cfg          config
	pair         *testenv.Pair
	primary      *sql.DB // admin
	replicaAdmin *sql.DB
	dbs          throttleDBs
	out          io.Writer
	start        time.Time
}

// say prints a progress line, stamped with the time since the start.
func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.out, "%6.1fs  %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	b := &bench{cfg: cfg, out: out, start: time.Now()}
	release, err := testenv.Hold(ctx, cfg.Dir, func() {
		b.say("waiting for a test run to finish with the pair in %s (Ctrl-C to give up)", cfg.Dir)
	})
	if err != nil {
		return err
	}
	defer release()
	b.pair, err = testenv.Up(ctx, cfg.Dir, b.say)
	if err != nil {
		return err
	}

	closeDBs, err := b.openDBs()
	if err != nil {
		return err
	}
	defer closeDBs()

	defer func() {
		// Tidy up whatever happened, with a context of its own: ctx may be
		// the one that was cancelled.
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if cerr := b.tidy(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("leave the pair as it was: %w", cerr))
		}
	}()

	b.say("creating %s with %s rows", sourceTable, thousands(int64(cfg.Rows)))
	if err := createTables(ctx, b.primary, cfg.Rows); err != nil {
		return err
	}
	if err := b.waitCaughtUp(ctx); err != nil {
		return err
	}
	rcap := &replicaCap{pair: b.pair, replicaAdmin: b.replicaAdmin}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if cerr := rcap.remove(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the replica's cap: %w", cerr))
		}
	}()
	b.say("capping the replica's apply rate (replica-only trigger, %s=%s)", rbrVar, rbrValue)
	if err := rcap.install(ctx); err != nil {
		return err
	}

	caps := capacities{Start: cfg.Capacity, Given: cfg.Capacity > 0}
	if !caps.Given {
		if caps.Start, err = b.measureCapacity(ctx, "start"); err != nil {
			return err
		}
	}

	var results []result
	cells := b.cells(caps.Start)
	for i, c := range cells {
		b.say("run %d/%d: %s", i+1, len(cells), c)
		res, err := b.runCell(ctx, c)
		if err != nil {
			return fmt.Errorf("run %d (%s): %w", i+1, c, err)
		}
		b.say("run %d/%d: %s rows/s, true lag mean %s, p95 %s, max %s, over tolerance %s, %d stops%s",
			i+1, len(cells), thousands(int64(res.rowsPerSecond())), seconds(res.Lag.Mean), seconds(res.Lag.P95),
			seconds(res.Lag.Max), seconds(res.Lag.Over), res.Copy.Stops, probeNote(res.ProbeErrs))
		results = append(results, res)
	}

	if !caps.Given {
		if caps.End, err = b.measureCapacity(ctx, "end"); err != nil {
			return err
		}
	}
	table := formatTable(caps, results)
	fmt.Fprintf(out, "\n%s", table)
	if cfg.Out != "" {
		if err := os.WriteFile(cfg.Out, []byte(table), 0o644); err != nil {
			return fmt.Errorf("write the table: %w", err)
		}
	}
	return nil
}

func probeNote(errs int) string {
	if errs == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d probe reads failed)", errs)
}

// cells lists the runs, mode by mode, with the copier's rates from R.
func (b *bench) cells(r float64) []cell {
	var out []cell
	for _, m := range b.cfg.Modes {
		for _, s := range b.cfg.Speeds {
			for _, tol := range b.cfg.Tolerances {
				for range b.cfg.Repeat {
					out = append(out, cell{Mode: m, Speed: s, Rate: s.rate(r), Tolerance: tol})
				}
			}
		}
	}
	return out
}

func (b *bench) measureCapacity(ctx context.Context, when string) (float64, error) {
	b.say("measuring the replica's capacity R (%s): queue %s rows with the SQL thread stopped, then time the drain",
		when, thousands(int64(b.cfg.Rows)))
	r, drain, err := measureCapacity(ctx, b.pair, b.primary, b.replicaAdmin, b.cfg.Rows, b.cfg.Chunk)
	if err != nil {
		return 0, fmt.Errorf("measure the capacity: %w", err)
	}
	b.say("R = %s rows/s (%s rows applied in %s)", thousands(int64(r)), thousands(int64(b.cfg.Rows)), seconds(drain))
	return r, nil
}

// openDBs opens the bench's connections to the pair.
func (b *bench) openDBs() (closeAll func(), err error) {
	var opened []*sql.DB
	closeAll = func() {
		for _, db := range opened {
			_ = db.Close()
		}
	}
	open := func(dsn string, conns int) *sql.DB {
		db, e := sql.Open("mysql", dsn)
		if e != nil {
			err = errors.Join(err, e)
			return nil
		}
		db.SetMaxOpenConns(conns)
		db.SetMaxIdleConns(conns)
		opened = append(opened, db)
		return db
	}
	b.primary = open(b.pair.Primary().AdminDSN(), b.cfg.Workers+4) // copier, probe writer, heartbeat
	b.replicaAdmin = open(b.pair.Replica().AdminDSN(), 4)          // probe reader, heartbeat source, drain wait
	replica := open(b.pair.Replica().DSN(), 2)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open the pair's connections: %w", err)
	}
	b.dbs = throttleDBs{primary: b.primary, replica: replica, replicaAdmin: b.replicaAdmin}
	return closeAll, nil
}

func (b *bench) waitCaughtUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	return b.pair.Replication().WaitCaughtUp(ctx)
}

// tidy drops the bench's database (its trigger on the replica goes with the
// table) and gives the pair back healthy and caught up, as the tests expect
// it. It runs after the cap was removed, so the replica applies at full speed.
func (b *bench) tidy(ctx context.Context) error {
	_, dropErr := b.primary.ExecContext(ctx, "DROP DATABASE IF EXISTS "+benchDB)
	if dropErr != nil {
		dropErr = fmt.Errorf("drop %s: %w", benchDB, dropErr)
	}
	return errors.Join(dropErr, b.pair.Reset(ctx))
}
