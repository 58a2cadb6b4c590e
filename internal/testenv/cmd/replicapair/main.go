// Command replicapair starts, stops and describes the local MariaDB primary
// and replica that the integration tests and the demo use.
//
//	replicapair up     [-dir DIR] [-second] [-galera]   start (or reuse) the pair; print its environment
//	replicapair down   [-dir DIR] [-purge]
//	replicapair status [-dir DIR]
//	replicapair env    [-dir DIR]   print the environment of a running pair
//
// up and env print shell assignments on stdout, so a shell or a Makefile can
// take them over:
//
//	eval "$(go run ./internal/testenv/cmd/replicapair up)"
//	export THROTTLER_TESTENV_DIR
//
// Progress and errors go to stderr. DIR defaults to $THROTTLER_TESTENV_DIR,
// else to a directory under the system's temp dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/throttlekit/throttler/internal/testenv"
)

const usage = `usage: replicapair up|down|status|env [-dir DIR]

  up      start the local MariaDB primary+replica (or reuse a healthy one) and
          print THROTTLER_TESTENV_DIR, PRIMARY_DSN and REPLICA_DSN as shell lines
          (-second: also a second replica, and REPLICA2_DSN; -galera: also a
          3-node Galera cluster, about 12s, and GALERA1_DSN..GALERA3_DSN)
  down    stop the pair's servers (-purge also deletes their data)
  status  say whether the pair is running and healthy (exit 1 if not)
  env     print the shell lines of a running pair (exit 1 if not running)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("replicapair "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultDir := os.Getenv(testenv.EnvDir)
	if defaultDir == "" {
		defaultDir = testenv.DefaultDir()
	}
	dir := fs.String("dir", defaultDir, "state directory of the pair")
	purge, second, galera := false, false, false
	timeout := 10 * time.Minute
	switch cmd {
	case "down":
		fs.BoolVar(&purge, "purge", false, "also delete the servers' data, logs and state")
	case "up":
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long (includes installing MariaDB)")
		fs.BoolVar(&second, "second", false, "also start (or reuse) a second replica of the primary")
		fs.BoolVar(&galera, "galera", false, "also start (or reuse) a 3-node Galera cluster")
	case "status", "env":
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "replicapair: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "replicapair %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "replicapair %s: %v\n", cmd, err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "up":
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		t0 := time.Now()
		logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
		p, err := testenv.Up(ctx, *dir, logf)
		if err != nil {
			return fail(err)
		}
		if second {
			if _, err := p.SecondReplica(ctx); err != nil {
				return fail(err)
			}
		}
		if galera {
			t1 := time.Now()
			if _, err := p.Galera(ctx); err != nil {
				return fail(err)
			}
			logf("testenv: galera cluster ready in %.1fs (3 nodes Synced)", time.Since(t1).Seconds())
		}
		logf("replicapair: up in %v; stop it with: go run ./internal/testenv/cmd/replicapair down -dir %s", time.Since(t0).Round(time.Millisecond), p.Dir)
		printEnv(stdout, p)
	case "down":
		f := testenv.Down
		if purge {
			f = testenv.Purge
		}
		if err := f(*dir); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stderr, "replicapair: no pair runs in %s now\n", *dir)
	case "status":
		p, err := testenv.Load(*dir)
		if err != nil {
			fmt.Fprintf(stdout, "not running: %v\n", err)
			return 1
		}
		if err := p.Healthy(ctx); err != nil {
			// Often a test injecting a fault right now; Reset or `up` repairs it.
			fmt.Fprintf(stdout, "running but unhealthy: %v (%s)\n", err, p.Dir)
			return 1
		}
		var servers []string
		for _, s := range p.Servers() {
			servers = append(servers, fmt.Sprintf("%s pid %d on %s", s.Name, s.PID, s.Addr()))
		}
		fmt.Fprintf(stdout, "running: %s, replication healthy (%s)\n", strings.Join(servers, ", "), p.Dir)
	case "env":
		p, err := testenv.Load(*dir)
		if err != nil {
			return fail(err)
		}
		printEnv(stdout, p)
	}
	return 0
}

func printEnv(w io.Writer, p *testenv.Pair) {
	fmt.Fprintf(w, "%s=%s\n", testenv.EnvDir, shellQuote(p.Dir))
	fmt.Fprintf(w, "PRIMARY_DSN=%s\n", shellQuote(p.Primary().AdminDSN()))
	fmt.Fprintf(w, "REPLICA_DSN=%s\n", shellQuote(p.Replica().DSN()))
	if dsn := p.SecondReplicaDSN(); dsn != "" {
		fmt.Fprintf(w, "REPLICA2_DSN=%s\n", shellQuote(dsn))
	}
	for i, dsn := range p.GaleraDSNs() {
		fmt.Fprintf(w, "GALERA%d_DSN=%s\n", i+1, shellQuote(dsn))
	}
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=@%+,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it; DSNs always do
// because of their parentheses.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
