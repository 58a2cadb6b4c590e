// Command copier is a small but real chunked table copier, throttled by
// replica lag: the job an online schema-change tool or a backfill does, and
// the job this library exists for.
//
// It creates throttler_demo.orders on the primary (300,000 rows by default)
// and copies it into throttler_demo.orders_copy in primary-key chunks,
// asking the throttler before each chunk:
//
//	for each chunk {
//		t.BlockWait(ctx) // returns at once unless the replica needs a rest
//		INSERT INTO orders_copy SELECT ... WHERE id > ? AND id <= ?
//	}
//
// Against the local MariaDB primary+replica (the default), it also makes the
// replica fall behind for real while it copies: it stops the replica's SQL
// thread for a few seconds, then sets a MASTER_DELAY above the lag
// tolerance. Watch the status line: the copier pauses on its own, says why,
// and resumes the moment the replica has caught up. It ends by verifying the
// copy (row count and checksum) and summing up how long it was throttled.
//
//	go run ./examples/copier          # or: make demo (~25s)
//	go run ./examples/copier -quick   # ~10s, one pause and one resume: for CI
//	PRIMARY_DSN=... REPLICA_DSN=... go run ./examples/copier   # your servers; no faults
//
// Flags: -rows (300000; 100000 with -quick), -chunk (2000 rows), -tolerance
// (1s of replica lag), -pace (75ms of sleep after each chunk, so that the
// copy lasts long enough to watch; the throttler, not this sleep, is what
// pauses it), -faults (true with the local pair, which it needs) and -quick.
//
// The local pair is shared with the integration tests: the demo takes its
// use lock, as testenv.Require does, and waits while a test run holds it.
//
// Ctrl-C (or SIGTERM) stops the copy at once: the demo closes the
// throttler, puts the replica back (SQL thread running, no delay) if it
// broke it, prints the summary so far and exits 130. A second Ctrl-C exits
// without tidying up.
//
// Exit status: 0 when the copy is verified and, with faults, the copier
// paused at least once (so CI can tell that throttling really happened); 1
// when either is not the case or something failed; 2 for bad flags; 130 when
// interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/throttlekit/throttler/internal/testenv"
)

// config is what run needs; parseFlags builds it from the command line.
type config struct {
	PrimaryDSN string // the primary the copy runs on
	ReplicaDSN string // the replica whose lag throttles it
	// Pair is the local test pair when the demo uses it; faults need it.
	Pair *testenv.Pair

	Database  string        // created on the primary if missing
	Rows      int           // rows in the source table
	Chunk     int           // rows per chunk
	Tolerance time.Duration // replica lag at which the copier pauses
	Pace      time.Duration // sleep after each chunk, so the copy lasts long enough to watch
	Faults    bool          // make the replica lag while copying (needs Pair)
	Schedule  []fault       // the faults, in order
	Live      bool          // rewrite one status line in place (stdout is a terminal)
}

const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "copier:", err)
		return exitUsage
	}
	cfg.Live = isTerminal(stdout)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels ctx; a second one kills the process as usual.
	context.AfterFunc(ctx, stop)

	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	if cfg.PrimaryDSN != "" {
		say("demo: copying on PRIMARY_DSN, throttled by the lag of REPLICA_DSN (no faults: they need the local pair)")
	} else {
		release, startedHere, err := localPair(ctx, &cfg, say)
		if err != nil {
			return exitCode(ctx, fmt.Errorf("local pair: %w", err), stderr)
		}
		defer release()
		if startedHere {
			defer say("demo: the local pair was started for this demo and is left running for the next one; stop it with: make replica-down")
		}
	}

	sum, err := run(ctx, cfg, stdout)
	fmt.Fprint(stdout, sum)
	return exitCode(ctx, err, stderr)
}

func exitCode(ctx context.Context, err error, stderr io.Writer) int {
	switch {
	case ctx.Err() != nil:
		if !onlyCanceled(err) { // for example the replica could not be restored
			fmt.Fprintln(stderr, "copier:", err)
		}
		fmt.Fprintln(stderr, "copier: interrupted")
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(stderr, "copier:", err)
		return exitFailed
	}
	return exitOK
}

// onlyCanceled reports whether err is nil or says nothing but that the run
// was cancelled.
func onlyCanceled(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyCanceled(e) {
				return false
			}
		}
		return true
	}
	return err == nil || errors.Is(err, context.Canceled)
}

// localPair starts or reuses the local MariaDB pair and points cfg at it. It
// first takes the pair's use lock, as the integration tests do, so that the
// demo's faults never land in the middle of someone's test run. release
// gives the lock back.
func localPair(ctx context.Context, cfg *config, say func(string, ...any)) (release func(), startedHere bool, err error) {
	dir := os.Getenv(testenv.EnvDir)
	if dir == "" {
		dir = testenv.DefaultDir()
	}
	say("demo: PRIMARY_DSN and REPLICA_DSN are not set: using the local MariaDB primary+replica in %s", dir)
	release, err = testenv.Hold(ctx, dir, func() {
		say("demo: waiting for a test run to finish with the pair (Ctrl-C to give up)")
	})
	if err != nil {
		return nil, false, err
	}
	_, loadErr := testenv.Load(dir)
	p, err := testenv.Up(ctx, dir, func(format string, args ...any) {
		if loadErr != nil { // starting afresh takes a while: show progress
			say(format, args...)
		}
	})
	if err != nil {
		release()
		return nil, false, err
	}
	cfg.Pair = p
	cfg.PrimaryDSN, cfg.ReplicaDSN = p.Primary().AdminDSN(), p.Replica().DSN()
	return release, loadErr != nil, nil
}

// Defaults; -quick changes those not given on the command line.
const (
	defaultRows      = 300_000
	defaultChunk     = 2_000
	defaultTolerance = time.Second
	defaultPace      = 75 * time.Millisecond
	defaultDatabase  = "throttler_demo"

	quickRows = 100_000
)

// parseFlags reads the flags and, through getenv, PRIMARY_DSN and
// REPLICA_DSN.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := config{Database: defaultDatabase}
	fs := flag.NewFlagSet("copier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: copier [flags]

Copies a table in primary-key chunks, pausing while the replica lags.
Without PRIMARY_DSN and REPLICA_DSN in the environment it uses (and starts if
needed) the local MariaDB pair, and makes its replica lag on purpose.

`)
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Rows, "rows", defaultRows, "rows in the source table")
	fs.IntVar(&cfg.Chunk, "chunk", defaultChunk, "rows per chunk")
	fs.DurationVar(&cfg.Tolerance, "tolerance", defaultTolerance, "replica lag at which the copier pauses")
	fs.DurationVar(&cfg.Pace, "pace", defaultPace, "sleep after each chunk (0: copy flat out)")
	fs.BoolVar(&cfg.Faults, "faults", true, "make the replica lag while copying (local pair only)")
	quick := fs.Bool("quick", false, fmt.Sprintf("a ~10s run for CI: %d rows, one fault", quickRows))
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg.Schedule = fullSchedule
	if *quick {
		cfg.Schedule = quickSchedule
		if !set["rows"] {
			cfg.Rows = quickRows
		}
	}
	cfg.PrimaryDSN, cfg.ReplicaDSN = getenv("PRIMARY_DSN"), getenv("REPLICA_DSN")
	switch {
	case (cfg.PrimaryDSN == "") != (cfg.ReplicaDSN == ""):
		return cfg, errors.New("set both PRIMARY_DSN and REPLICA_DSN, or neither to use the local pair")
	case cfg.PrimaryDSN != "" && cfg.Faults && set["faults"]:
		return cfg, errors.New("-faults needs the local pair: unset PRIMARY_DSN and REPLICA_DSN")
	case cfg.PrimaryDSN != "":
		cfg.Faults = false
	}
	switch {
	case cfg.Rows < 1:
		return cfg, fmt.Errorf("-rows %d: must be at least 1", cfg.Rows)
	case cfg.Chunk < 1:
		return cfg, fmt.Errorf("-chunk %d: must be at least 1", cfg.Chunk)
	case cfg.Tolerance <= 0:
		return cfg, fmt.Errorf("-tolerance %v: must be positive", cfg.Tolerance)
	case cfg.Pace < 0:
		return cfg, fmt.Errorf("-pace %v: must not be negative", cfg.Pace)
	}
	return cfg, nil
}

// isTerminal reports whether w is a terminal, where the status line can be
// rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
