// Package testenv runs a real MariaDB primary and replica on loopback for the
// project's integration tests and demo, and drives real replication lag and
// faults on them. Tests that need two replicas of the same primary (replica
// discovery, several replicas under one throttler) ask for a second one with
// SecondReplica; ReplicaHandle drives either replica. Multi-source tests ask
// for a second, independent primary with SecondSource and attach the first
// replica to it as a named connection with AddSourceConnection (see
// source2.go).
//
// The pair is plain mariadbd processes owned by this package: each server has
// its own datadir, tmpdir, socket, port and server_id under one state
// directory, and is started in its own session so that it outlives the process
// that started it. `make test` (or `go run ./internal/testenv/cmd/replicapair
// up`) starts the pair once and exports its directory in THROTTLER_TESTENV_DIR;
// tests then attach with Require, which skips when no pair is available.
//
// Lag and faults are the real thing, not simulations: MASTER_DELAY, stopped
// replication threads, a SIGKILLed or SIGSTOPped replica, and a revoked
// privilege. Every handle returns an error instead of panicking and is bounded
// by its context (or a default timeout when the context has no deadline).
//
// By hand:
//
//	eval "$(go run ./internal/testenv/cmd/replicapair up)"  # ~1.5s from nothing, ~10ms when running
//	export THROTTLER_TESTENV_DIR THROTTLER_TESTENV_REQUIRED=1
//	go test -race ./...
//	go run ./internal/testenv/cmd/replicapair down          # or: down -purge
//
// MariaDB 10.5.9 or newer is needed (for the SLAVE MONITOR privilege); Up
// installs Debian's mariadb-server when it is missing and it runs as root.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // the driver every DSN here is for
)

// Environment variables understood by Require and set by `make test`.
const (
	// EnvDir names the state directory of a running pair.
	EnvDir = "THROTTLER_TESTENV_DIR"
	// EnvRequired set to "1" makes Require fail instead of skip when the
	// pair is unusable, so CI cannot silently skip the integration tests.
	EnvRequired = "THROTTLER_TESTENV_REQUIRED"
)

// Names of the objects the pair is created with.
const (
	// Database is created on the primary (and replicated); the admin DSNs
	// select it.
	Database = "throttler_test"
	// HeartbeatTable is a pt-heartbeat-compatible table written by
	// StartWriter: one row per writing server_id, ts in UTC as
	// '2006-01-02T15:04:05.000000' (what pt-heartbeat --utc writes).
	HeartbeatTable = Database + ".heartbeat"

	monitorUser = "throttler_monitor"
	replUser    = "repl"
	stateFile   = "state.json"
	lockName    = "lock"
)

// Default bounds for calls whose context carries no deadline.
const (
	defaultOpTimeout    = 30 * time.Second
	defaultStartTimeout = 60 * time.Second
	stopGrace           = 10 * time.Second
)

// Server is one mariadbd instance of the pair.
type Server struct {
	Name         string `json:"name"` // "primary", "replica", "replica2" or "source2"
	ServerID     int    `json:"server_id"`
	Port         int    `json:"port"` // TCP port on 127.0.0.1
	PID          int    `json:"pid"`  // 0 when stopped by Down
	Dir          string `json:"dir"`  // instance root, holds everything below
	DataDir      string `json:"data_dir"`
	TmpDir       string `json:"tmp_dir"`
	Socket       string `json:"socket"`
	DefaultsFile string `json:"defaults_file"`
	ErrorLog     string `json:"error_log"`
	ConsoleLog   string `json:"console_log"` // stdout/stderr of mariadbd
	// GTIDDomainID is gtid_domain_id when not 0: 1 on the second source
	// (SecondSource), 0 (MariaDB's default) on every other server.
	GTIDDomainID int `json:"gtid_domain_id,omitempty"`
}

// Addr is the server's TCP address.
func (s Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Pair is a running primary and replica, as recorded in the state file of its
// directory. Its fields are a snapshot: the methods re-read the replica's PID
// from the state file, because RestartReplica (possibly from another process)
// changes it.
type Pair struct {
	Dir      string `json:"dir"`
	Mariadbd string `json:"mariadbd"` // server binary used to start both
	Primary  Server `json:"primary"`
	Replica  Server `json:"replica"`
	// Replica2 is the on-demand second replica (see SecondReplica); nil
	// until a test asked for it. State files written before it existed
	// have no such key and load with it nil.
	Replica2 *Server `json:"replica2,omitempty"`
	// Source2 is the on-demand second, independent primary (see
	// SecondSource); nil until a test asked for it. Older state files load
	// with it nil.
	Source2 *Server `json:"source2,omitempty"`

	// Passwords are random per fresh start; the state file is mode 0600.
	AdminPassword   string `json:"admin_password"` // root on both servers
	MonitorPassword string `json:"monitor_password"`
	ReplPassword    string `json:"repl_password"`

	mu sync.Mutex // guards Replica.PID, Replica2 and Source2 against concurrent restarts
}

// DefaultDir is where the command and `make test` keep the pair by default.
// It is short so that the servers' unix sockets fit inside it.
func DefaultDir() string {
	name := "throttler-testenv"
	if uid := os.Getuid(); uid > 0 {
		name += "-" + strconv.Itoa(uid)
	}
	return filepath.Join(os.TempDir(), name)
}

// MonitorUser is the least-privileged account a throttler needs: SLAVE
// MONITOR on *.* and SELECT on performance_schema.*, nothing else.
func (p *Pair) MonitorUser() string { return monitorUser }

// PrimaryDSN is root on the primary, database Database.
func (p *Pair) PrimaryDSN() string {
	return dsn("root", p.AdminPassword, p.Primary.Port, Database)
}

// ReplicaAdminDSN is root on the replica, database Database.
func (p *Pair) ReplicaAdminDSN() string {
	return dsn("root", p.AdminPassword, p.Replica.Port, Database)
}

// ReplicaDSN is the monitoring user on the replica: what a throttler is
// given in production. It selects no database because the user may not use
// any.
func (p *Pair) ReplicaDSN() string {
	return dsn(monitorUser, p.MonitorPassword, p.Replica.Port, "")
}

// PrimaryMonitorDSN is the monitoring user on the primary, for tests of a
// throttler mistakenly pointed at a primary.
func (p *Pair) PrimaryMonitorDSN() string {
	return dsn(monitorUser, p.MonitorPassword, p.Primary.Port, "")
}

// monitorDSN is the monitoring user on s.
func (p *Pair) monitorDSN(s Server) string { return dsn(monitorUser, p.MonitorPassword, s.Port, "") }

func dsn(user, password string, port int, db string) string {
	return fmt.Sprintf("%s:%s@tcp(127.0.0.1:%d)/%s?timeout=2s", user, password, port, db)
}

// Up makes sure a healthy pair runs in dir and returns it.
//
// A pair already recorded in dir is reused when its primary is the mariadbd
// this package started and answers, after Reset has repaired the replica;
// anything else (no state, dead or foreign PIDs, a broken pair) is stopped and
// replaced by a fresh pair: MariaDB is installed if missing (as root, with
// apt-get), both datadirs are initialised, the servers started, GTID
// replication set up and the replica caught up. Concurrent calls, from this or
// other processes, are serialised by a lock file in dir. logf, which may be
// nil, receives progress lines.
func Up(ctx context.Context, dir string, logf func(format string, args ...any)) (*Pair, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ctx, cancel := withDefaultTimeout(ctx, 5*time.Minute)
	defer cancel()
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("testenv: up: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testenv: up: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("testenv: up: %w", err)
	}
	defer unlock()

	switch p, err := attach(ctx, dir); {
	case err == nil:
		err = p.reset(ctx, true)
		if err == nil {
			logf("testenv: reusing the running pair in %s (primary pid %d, replica pid %d)", dir, p.Primary.PID, p.Replica.PID)
			return p, nil
		}
		logf("testenv: the pair in %s is unhealthy, starting afresh: %v", dir, err)
	case errors.Is(err, fs.ErrNotExist):
	default:
		logf("testenv: no usable pair in %s, starting afresh: %v", dir, err)
	}

	bins, err := ensureMariaDB(ctx, logf)
	if err != nil {
		return nil, err
	}
	p, err := startFresh(ctx, dir, bins, logf)
	if err != nil {
		return nil, fmt.Errorf("testenv: up: %w", err)
	}
	return p, nil
}

// Down stops the pair's servers, each only if its PID is still the mariadbd
// this package started with that pair's config, and records them as stopped.
// Data and logs stay for inspection; Purge removes them. A dir without a
// state file is not an error: there is nothing to stop.
func Down(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*stopGrace)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("testenv: down: %w", err)
	}
	defer unlock()
	return downLocked(dir)
}

func downLocked(dir string) error {
	p, err := readState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("testenv: down: %w", err)
	}
	servers := []*Server{&p.Primary, &p.Replica}
	if p.Replica2 != nil {
		servers = append(servers, p.Replica2)
	} else if s, ok := orphanServer(dir, replica2Name); ok {
		// A second replica that an older writer of the state file
		// forgot: stop it all the same (it is not recorded, so no PID to
		// reset).
		servers = append(servers, &s)
	}
	if p.Source2 != nil {
		servers = append(servers, p.Source2)
	} else if s, ok := orphanServer(dir, source2Name); ok {
		servers = append(servers, &s)
	}
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			errs[i] = stopServer(*s)
			if errs[i] == nil {
				s.PID = 0
			}
		})
	}
	wg.Wait()
	if err := writeState(p); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testenv: down: %w", err)
	}
	return nil
}

// Purge stops the pair like Down and then removes everything this package
// created in dir (instance directories, sockets, state and lock files), and
// dir itself when that leaves it empty.
func Purge(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*stopGrace)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("testenv: purge: %w", err)
	}
	defer unlock()
	if err := downLocked(dir); err != nil {
		return err
	}
	var errs []error
	for _, name := range []string{"primary", "replica", replica2Name, source2Name} {
		errs = append(errs, removeInstance(filepath.Join(dir, name)))
	}
	if p, err := readState(dir); err == nil {
		for _, s := range p.servers() {
			if err := os.Remove(s.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, name := range []string{stateFile, useLockName, lockName} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(dir) // only succeeds when empty, which is the point
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testenv: purge: %w", err)
	}
	return nil
}

// Load attaches to the pair running in dir. It fails when dir has no state
// file or the primary is not the running, answering mariadbd recorded there.
// The replica may be down or frozen: Reset repairs that, and tests that
// killed it must still be able to attach.
func Load(dir string) (*Pair, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("testenv: load: %w", err)
	}
	p, err := attach(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("testenv: load: %w", err)
	}
	return p, nil
}

// attach reads the state in dir and checks that its primary runs and answers.
func attach(ctx context.Context, dir string) (*Pair, error) {
	p, err := readState(dir)
	if err != nil {
		return nil, err
	}
	if !isOurServer(p.Primary) {
		return nil, fmt.Errorf("primary (pid %d) in %s is not running", p.Primary.PID, dir)
	}
	_ = signalProcess(p.Primary.PID, sigCont) // harmless, and a frozen primary would not answer
	if err := ping(ctx, p.PrimaryDSN(), 3*time.Second); err != nil {
		return nil, fmt.Errorf("primary (pid %d, port %d) does not answer: %w", p.Primary.PID, p.Primary.Port, err)
	}
	return p, nil
}

func readState(dir string) (*Pair, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("no pair state in %s (start one with: go run ./internal/testenv/cmd/replicapair up -dir %s): %w", dir, dir, err)
	}
	p := new(Pair)
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, stateFile), err)
	}
	p.Dir = dir
	return p, nil
}

// writeState replaces the state file atomically, so readers in other
// processes never see a torn file.
func writeState(p *Pair) error {
	p.mu.Lock()
	b, err := json.MarshalIndent(p, "", "  ")
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(p.Dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(p.Dir, stateFile)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// servers lists the pair's recorded servers: primary, replica, and the
// second replica and the second source when there are.
func (p *Pair) servers() []Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []Server{p.Primary, p.Replica}
	if p.Replica2 != nil {
		out = append(out, *p.Replica2)
	}
	if p.Source2 != nil {
		out = append(out, *p.Source2)
	}
	return out
}

// refresh takes what other processes may have changed from the state file:
// the replica's PID (RestartReplica) and the second replica's whole record
// (SecondReplica), and the second source's (SecondSource). The in-memory copy stands when the file cannot be read.
func (p *Pair) refresh() {
	q, err := readState(p.Dir)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Replica.PID = q.Replica.PID
	p.Replica2 = q.Replica2 // the file is authoritative: every write holds the dir lock
	p.Source2 = q.Source2
}

// replicaByID returns replica id as currently recorded (see refresh), or an
// error when it is the second replica and none was created.
func (p *Pair) replicaByID(id replicaID) (Server, error) {
	p.refresh()
	p.mu.Lock()
	defer p.mu.Unlock()
	if id == replica1 {
		return p.Replica, nil
	}
	if p.Replica2 == nil {
		return Server{}, errNoSecondReplica
	}
	return *p.Replica2, nil
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func randomPassword() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // documented never to return an error
	return hex.EncodeToString(b)
}

// ping opens a fresh connection to dsn and pings it within d.
func ping(ctx context.Context, dsn string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}
