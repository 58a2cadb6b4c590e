// Package testenv runs real MariaDB servers on loopback for the project's
// integration tests, demo and pacing bench, and drives real replication lag
// and faults on them. The servers are described as data (topology): a
// primary and a replica, which Up starts, and on-demand ones a test asks
// for (SecondReplica, SecondSource, and Galera: a 3-node Galera cluster). A
// Node drives one server (start, stop, kill, freeze, grants, admin
// statements, DSNs; desync and flow control on a Galera node); a Channel
// drives one replication channel of a replica (delay, threads, catch-up,
// status), the default one and named multi-source ones alike.
//
// The pair is plain mariadbd processes owned by this package: each server has
// its own datadir, tmpdir, socket, port and server_id under one state
// directory, and is started in its own session so that it outlives the process
// that started it. `make test` (or `go run ./internal/testenv/cmd/replicapair
// up`) starts the pair once and exports its directory in THROTTLER_TESTENV_DIR;
// tests then attach with Require, which skips when no pair is available.
//
// Lag and faults are the real thing, not simulations: MASTER_DELAY, stopped
// replication threads, a SIGKILLed or SIGSTOPped server, and a revoked
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
	// Node.StartWriter: one row per writing server_id, ts in UTC as
	// '2006-01-02T15:04:05.000000' (what pt-heartbeat --utc writes).
	HeartbeatTable = Database + ".heartbeat"
	// Source2Database is the second source's database, with its own
	// heartbeat table. It does not clash with Database, which a replica
	// of both sources has from the primary.
	Source2Database = "throttler_src2"
	// Source2HeartbeatTable is the second source's heartbeat table.
	Source2HeartbeatTable = Source2Database + ".heartbeat"

	// MonitorUser is the least-privileged account a throttler needs:
	// SLAVE MONITOR on *.* and SELECT on performance_schema.*, nothing
	// else. Node.DSN logs in as it.
	MonitorUser = "throttler_monitor"

	replUser  = "repl"
	stateFile = "state.json"
	lockName  = "lock"
)

// Default bounds for calls whose context carries no deadline.
const (
	defaultOpTimeout    = 30 * time.Second
	defaultStartTimeout = 60 * time.Second
	stopGrace           = 10 * time.Second
)

// role is what a server is in the topology; it decides the server's config
// and set-up.
type role int

const (
	// rolePrimary writes a binary log and holds a database with a
	// heartbeat table.
	rolePrimary role = iota + 1
	// roleReplica is read-only and replicates from its source on the
	// default channel.
	roleReplica
	// roleGalera is one node of the Galera cluster (galera.go): no binary
	// log, no replication channel; it replicates write sets with its peers.
	roleGalera
)

// spec describes one server this package can run.
type spec struct {
	name     string // instance directory and Server.Name
	role     role
	serverID int
	domainID int    // gtid_domain_id when not MariaDB's default 0
	source   string // a replica's source on its default channel
	database string // a primary's database, holding its heartbeat table
	// localUsers makes a primary create the users unlogged: its replicas
	// have them already from another source, and replaying CREATE USER
	// would stop their applier with Error 1396.
	localUsers bool
	// onDemand servers are started by Pair.start when a test first asks
	// (SecondReplica, SecondSource), not by Up; the Galera nodes by
	// Pair.Galera, all three together.
	onDemand bool
	// galera is a Galera node's place in the cluster, 1 to 3: node 1
	// bootstraps it, the others join by state transfer.
	galera int
}

// topology is every server the package knows, in the order they are
// started, repaired and listed. A server's role, identity and source are
// here; nothing else in the package names a server but through this table.
var topology = []spec{
	{name: "primary", role: rolePrimary, serverID: 1, database: Database},
	{name: "replica", role: roleReplica, serverID: 2, source: "primary"},
	{name: "replica2", role: roleReplica, serverID: 3, source: "primary", onDemand: true},
	// GTID domain 1, so that its GTIDs never collide with the primary's
	// domain 0 in a replica's shared gtid_slave_pos.
	{name: "source2", role: rolePrimary, serverID: 4, domainID: 1, database: Source2Database, localUsers: true, onDemand: true},
	{name: "galera1", role: roleGalera, serverID: 11, database: GaleraDatabase, onDemand: true, galera: 1},
	{name: "galera2", role: roleGalera, serverID: 12, database: GaleraDatabase, onDemand: true, galera: 2},
	{name: "galera3", role: roleGalera, serverID: 13, database: GaleraDatabase, onDemand: true, galera: 3},
}

func specOf(name string) spec {
	for _, sp := range topology {
		if sp.name == name {
			return sp
		}
	}
	panic("testenv: no server " + name + " in the topology")
}

// Server is one mariadbd instance, as recorded in the state file.
type Server struct {
	Name         string `json:"name"` // the topology's name: "primary", "replica", "replica2", "source2", "galera1".."galera3"
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
	GTIDDomainID int    `json:"gtid_domain_id,omitempty"`
	// Galera is a Galera node's cluster settings; nil for the others.
	Galera *GaleraNode `json:"galera,omitempty"`
}

// Addr is the server's TCP address.
func (s Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Pair is the running servers of a state directory, as recorded in its state
// file: the primary and replica that Up starts, and the on-demand servers
// tests asked for. Handles (Node, Channel) re-read the records from the
// state file, because restarts (possibly from another process) change PIDs.
type Pair struct {
	Dir      string `json:"dir"`
	Mariadbd string `json:"mariadbd"` // server binary used to start every server
	// Instances are the recorded servers by topology name.
	Instances map[string]*Server `json:"servers"`

	// Passwords are random per fresh start; the state file is mode 0600.
	AdminPassword   string `json:"admin_password"` // root on every server
	MonitorPassword string `json:"monitor_password"`
	ReplPassword    string `json:"repl_password"`

	mu sync.Mutex // guards Instances against concurrent restarts
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
			logf("testenv: reusing the running pair in %s (primary pid %d, replica pid %d)", dir, p.Primary().Server().PID, p.Replica().Server().PID)
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
func Down(dir string) error { return lockedDir(dir, "down", func() error { return downLocked(dir) }) }

// lockedDir runs fn holding dir's lock; what prefixes errors. A dir that
// does not exist has nothing to act on.
func lockedDir(dir, what string, fn func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*stopGrace)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	defer unlock()
	return fn()
}

func downLocked(dir string) error {
	p, err := readState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("testenv: down: %w", err)
	}
	var servers []*Server
	for _, sp := range topology {
		if s := p.Instances[sp.name]; s != nil {
			servers = append(servers, s)
		} else if s, ok := orphanServer(dir, sp.name); ok {
			// A server the state file does not record (an older
			// writer's, or one whose start failed half-way): stop it
			// all the same.
			servers = append(servers, &s)
		}
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
	return lockedDir(dir, "purge", func() error { return purgeLocked(dir) })
}

func purgeLocked(dir string) error {
	if err := downLocked(dir); err != nil {
		return err
	}
	var errs []error
	for _, sp := range topology {
		errs = append(errs, removeInstance(filepath.Join(dir, sp.name)))
	}
	if p, err := readState(dir); err == nil {
		for _, s := range p.Servers() {
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
	primary := p.Primary().Server()
	if !isOurServer(primary) {
		return nil, fmt.Errorf("primary (pid %d) in %s is not running", primary.PID, dir)
	}
	_ = signalProcess(primary.PID, sigCont) // harmless, and a frozen primary would not answer
	if err := ping(ctx, p.adminDSN(primary), 3*time.Second); err != nil {
		return nil, fmt.Errorf("primary (pid %d, port %d) does not answer: %w", primary.PID, primary.Port, err)
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

// Servers lists the recorded servers in topology order, as currently
// recorded in the state file.
func (p *Pair) Servers() []Server {
	p.refresh()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Server
	for _, sp := range topology {
		if s := p.Instances[sp.name]; s != nil {
			out = append(out, *s)
		}
	}
	return out
}

// refresh takes the records from the state file, which other processes
// change (restarts, on-demand servers); every write holds the dir lock, so
// the file is authoritative. The in-memory copy stands when the file cannot
// be read.
func (p *Pair) refresh() {
	q, err := readState(p.Dir)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Instances = q.Instances
}

// record returns server name as currently recorded (see refresh).
func (p *Pair) record(name string) (Server, error) {
	p.refresh()
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.Instances[name]; s != nil {
		return *s, nil
	}
	return Server{}, fmt.Errorf("the pair has no %s (started on demand: SecondReplica, SecondSource)", name)
}

// setRecord records s (nil: forgets server name) in memory; writeState
// saves it.
func (p *Pair) setRecord(name string, s *Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s == nil {
		delete(p.Instances, name)
		return
	}
	if p.Instances == nil {
		p.Instances = make(map[string]*Server)
	}
	c := *s
	p.Instances[name] = &c
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
