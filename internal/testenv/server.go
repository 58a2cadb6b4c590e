package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/throttlekit/throttler/internal/ptheartbeat"
)

// configMarker starts every defaults file this package writes. An instance
// directory is only ever deleted when its my.cnf starts with it, so a
// mistyped -dir cannot wipe someone else's files.
const configMarker = "# Written by throttler internal/testenv; rewritten on every fresh start."

// maxSocketPath keeps unix socket paths inside sun_path (108 bytes with NUL).
const maxSocketPath = 100

// errPortInUse marks a start that failed because another process took the
// port between picking it and binding it.
var errPortInUse = errors.New("port already in use")

func newServer(dir string, sp spec) Server {
	root := filepath.Join(dir, sp.name)
	sock := filepath.Join(root, "mysqld.sock")
	if len(sock) > maxSocketPath {
		sum := sha256.Sum256([]byte(root))
		sock = filepath.Join("/tmp", "throttler-"+hex.EncodeToString(sum[:6])+".sock")
	}
	return Server{
		Name:         sp.name,
		ServerID:     sp.serverID,
		GTIDDomainID: sp.domainID,
		Dir:          root,
		DataDir:      filepath.Join(root, "data"),
		TmpDir:       filepath.Join(root, "tmp"),
		Socket:       sock,
		DefaultsFile: filepath.Join(root, "my.cnf"),
		ErrorLog:     filepath.Join(root, "error.log"),
		ConsoleLog:   filepath.Join(root, "console.log"),
	}
}

// config is the server's defaults file. The sizes keep each server near 80 MB
// RSS; durability is relaxed because the data is thrown away.
func (s Server) config(sp spec) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("%s", configMarker)
	w("[mysqld]")
	switch {
	case os.Geteuid() != 0:
	case sp.role == roleGalera:
		w("user=%s", galeraUser) // see galeraUser: not root
	default:
		w("user=root") // mariadbd refuses to run as root without it
	}
	w("datadir=%s", s.DataDir)
	w("tmpdir=%s", s.TmpDir) // a shared tmpdir lets one server's start delete the other's temporary tables
	w("socket=%s", s.Socket)
	w("port=%d", s.Port)
	w("bind-address=127.0.0.1")
	w("pid-file=%s", filepath.Join(s.Dir, "mariadbd.pid"))
	w("log-error=%s", s.ErrorLog)
	w("server-id=%d", s.ServerID)
	w("skip-name-resolve")
	w("character-set-server=utf8mb4")
	w("collation-server=utf8mb4_general_ci")
	w("max-connections=200")
	w("performance-schema=OFF")
	if sp.role == roleGalera {
		w("innodb-buffer-pool-size=32M") // the size measured in notes/galera.md
	} else {
		w("innodb-buffer-pool-size=16M")
	}
	w("innodb-log-file-size=16M")
	w("innodb-log-buffer-size=2M")
	w("innodb-flush-log-at-trx-commit=2")
	w("innodb-doublewrite=0")
	w("key-buffer-size=1M")
	w("query-cache-size=0")
	w("table-open-cache=400") // the default asks for more open files than a container allows
	if sp.domainID != 0 {
		w("gtid-domain-id=%d", sp.domainID)
	}
	switch sp.role {
	case rolePrimary:
		w("log-bin=mysql-bin")
		w("binlog-format=ROW")
		w("sync-binlog=0")
	case roleGalera:
		s.galeraConfig(w)
	case roleReplica:
		w("relay-log=relay-bin")
		w("relay-log-recovery=ON")
		w("read-only=ON") // as in production; root bypasses it
		// What the primary lists in SHOW SLAVE HOSTS, for replica
		// discovery. Measured on 10.11: without report-host the replica is
		// still listed, with Host taken from its connection (127.0.0.1
		// here; MariaDB 10.5.1+ does this, MySQL and older MariaDB leave it
		// empty) and Port = @@report_port, which defaults to @@port. With
		// them set, the row says exactly this address. Both are read-only
		// at run time: changing them takes a restart.
		w("report-host=127.0.0.1")
		w("report-port=%d", s.Port)
	}
	return b.String()
}

// removeInstance deletes an instance directory created by this package.
func removeInstance(root string) error {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		cnf, err := os.ReadFile(filepath.Join(root, "my.cnf"))
		if err != nil || !bytes.HasPrefix(cnf, []byte(configMarker)) {
			return fmt.Errorf("refusing to remove %s: it was not created by testenv (no marked my.cnf)", root)
		}
	}
	return os.RemoveAll(root)
}

// initServer creates the instance directory, its config and a fresh datadir.
func initServer(ctx context.Context, bins binaries, s Server, sp spec) error {
	if err := removeInstance(s.Dir); err != nil {
		return fmt.Errorf("init %s: %w", s.Name, err)
	}
	for _, d := range []string{s.Dir, s.DataDir, s.TmpDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("init %s: %w", s.Name, err)
		}
	}
	if err := writeConfig(s, sp); err != nil {
		return fmt.Errorf("init %s: %w", s.Name, err)
	}
	args := []string{"--defaults-file=" + s.DefaultsFile, "--auth-root-authentication-method=normal", "--skip-test-db"}
	if sp.role == roleGalera {
		if err := galeraOwn(s.Dir); err != nil {
			return fmt.Errorf("init %s: %w", s.Name, err)
		}
		if sp.galera != 1 {
			return nil // a joiner's datadir comes from its donor (SST)
		}
		if os.Geteuid() == 0 {
			args = append(args, "--user="+galeraUser)
		}
	}
	cmd := exec.CommandContext(ctx, bins.installDB, args...)
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(s.Dir, "install-db.log"), out, 0o640)
	if err != nil {
		return fmt.Errorf("init %s: %s: %w\n%s", s.Name, bins.installDB, err, tailLines(out, 15))
	}
	return nil
}

func writeConfig(s Server, sp spec) error {
	return os.WriteFile(s.DefaultsFile, []byte(s.config(sp)), 0o640)
}

// startServer starts mariadbd for s, with extra arguments after its
// defaults file, and waits until readyDSN answers.
func startServer(ctx context.Context, mariadbd string, s Server, readyDSN string, extra ...string) (int, error) {
	if s.Socket != "" {
		_ = os.Remove(s.Socket) // a stale socket from a killed server stops mariadbd
	}
	pid, err := startDetached(ctx, s.ConsoleLog, append([]string{mariadbd, "--defaults-file=" + s.DefaultsFile}, extra...)...)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	s.PID = pid
	if err := waitReady(ctx, s, readyDSN); err != nil {
		_ = stopServer(s)
		return 0, err
	}
	return pid, nil
}

// waitReady polls readyDSN until it answers, the process dies, or ctx ends;
// failures carry the tail of the server's logs, which says why.
func waitReady(ctx context.Context, s Server, readyDSN string) error {
	db, err := sql.Open("mysql", readyDSN)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	defer db.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if !isOurServer(s) {
			logs := s.logTail()
			if strings.Contains(logs, "Address already in use") {
				return fmt.Errorf("start %s on port %d: %w\n%s", s.Name, s.Port, errPortInUse, logs)
			}
			return fmt.Errorf("start %s: mariadbd (pid %d) exited; last log lines:\n%s", s.Name, s.PID, logs)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start %s: not answering on port %d (last error: %v): %w; last log lines:\n%s",
				s.Name, s.Port, err, ctx.Err(), s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopServer stops s if, and only if, its PID is still the mariadbd started
// with s's defaults file: SIGTERM (plus SIGCONT, in case it is frozen), then
// SIGKILL after stopGrace.
func stopServer(s Server) error {
	if !isOurServer(s) {
		return nil
	}
	if err := signalProcess(s.PID, sigTerm); err != nil {
		return fmt.Errorf("stop %s: %w", s.Name, err)
	}
	_ = signalProcess(s.PID, sigCont)
	if waitGone(s, stopGrace) {
		return nil
	}
	if err := signalProcess(s.PID, sigKill); err != nil && isOurServer(s) {
		return fmt.Errorf("stop %s: %w", s.Name, err)
	}
	if !waitGone(s, 5*time.Second) {
		return fmt.Errorf("stop %s: pid %d survived SIGKILL", s.Name, s.PID)
	}
	return nil
}

// waitGone waits until s is no longer running, including the last moments
// of its exit (see exiting), so that a caller sees its PID gone.
func waitGone(s Server, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for isOurServer(s) || exiting(s.PID) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// isOurServer reports whether s.PID is a live mariadbd started with s's
// defaults file, so that a recycled PID is never signalled.
func isOurServer(s Server) bool {
	args, ok := processArgs(s.PID)
	if !ok || len(args) < 2 || !strings.Contains(filepath.Base(args[0]), "mariadbd") {
		return false
	}
	return slices.Contains(args[1:], "--defaults-file="+s.DefaultsFile)
}

func (s Server) logTail() string {
	var b strings.Builder
	for _, path := range []string{s.ErrorLog, s.ConsoleLog} {
		data, err := os.ReadFile(path)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", path, tailLines(data, 15))
	}
	if b.Len() == 0 {
		return "(no log output)"
	}
	return strings.TrimRight(b.String(), "\n")
}

func tailLines(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// All listeners are held until every port is picked, so they differ.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startFresh replaces whatever is in dir by the topology's servers that are
// not on demand, set up and replicating. On-demand servers of the old pair
// belong to its primary and passwords: they are stopped and dropped, so that
// the next ask builds them anew.
func startFresh(ctx context.Context, dir string, bins binaries, logf func(string, ...any)) (_ *Pair, err error) {
	t0 := time.Now()
	if old, err := readState(dir); err == nil {
		for _, s := range old.Instances {
			if err := stopServer(*s); err != nil {
				return nil, fmt.Errorf("stop the previous %s: %w", s.Name, err)
			}
		}
	}
	p := &Pair{
		Dir:             dir,
		Mariadbd:        bins.mariadbd,
		AdminPassword:   randomPassword(),
		MonitorPassword: randomPassword(),
		ReplPassword:    randomPassword(),
	}
	var specs []spec
	for _, sp := range topology {
		if s, ok := orphanServer(dir, sp.name); ok { // one the state file forgot
			if err := stopServer(s); err != nil {
				return nil, fmt.Errorf("stop the previous %s: %w", s.Name, err)
			}
		}
		if sp.onDemand {
			if err := removeInstance(filepath.Join(dir, sp.name)); err != nil {
				return nil, err
			}
			continue
		}
		specs = append(specs, sp)
	}
	ports, err := freePorts(len(specs))
	if err != nil {
		return nil, err
	}
	servers := make([]Server, len(specs))
	var inits, starts []func() error
	for i, sp := range specs {
		servers[i] = newServer(dir, sp)
		servers[i].Port = ports[i]
		inits = append(inits, func() error { return initServer(ctx, bins, servers[i], sp) })
		starts = append(starts, func() error { return startWithPortRetry(ctx, bins.mariadbd, &servers[i], sp) })
	}
	if err := parallel(inits...); err != nil {
		return nil, err
	}
	logf("testenv: initialised %d datadirs in %s (%.1fs)", len(specs), dir, time.Since(t0).Seconds())

	defer func() {
		if err != nil { // leave nothing running that no state file points to
			for i := range servers {
				_ = stopServer(servers[i])
				servers[i].PID = 0
				p.setRecord(servers[i].Name, &servers[i])
			}
			_ = writeState(p)
		}
	}()
	err = parallel(starts...)
	var started []string
	for i := range servers {
		p.setRecord(servers[i].Name, &servers[i])
		started = append(started, fmt.Sprintf("%s (pid %d, port %d)", servers[i].Name, servers[i].PID, servers[i].Port))
	}
	if werr := writeState(p); err == nil {
		err = werr
	}
	if err != nil {
		return nil, err
	}
	logf("testenv: started %s (%.1fs)", strings.Join(started, " and "), time.Since(t0).Seconds())

	for i, sp := range specs {
		if err := p.setUp(ctx, servers[i], sp); err != nil {
			return nil, err
		}
	}
	for _, sp := range specs {
		if sp.role == roleReplica {
			if err := p.node(sp.name).Replication().WaitCaughtUp(ctx); err != nil {
				return nil, fmt.Errorf("first catch-up: %w", err)
			}
		}
	}
	logf("testenv: pair ready in %.1fs (GTID replication running, caught up)", time.Since(t0).Seconds())
	return p, nil
}

// startWithPortRetry starts a freshly initialised server, moving it to
// another port if its port was taken since it was picked.
func startWithPortRetry(ctx context.Context, mariadbd string, s *Server, sp spec) error {
	for attempt := 1; ; attempt++ {
		pid, err := startServer(ctx, mariadbd, *s, dsn("root", "", s.Port, ""))
		if err == nil {
			s.PID = pid
			return nil
		}
		if !errors.Is(err, errPortInUse) || attempt == 3 {
			return err
		}
		ports, perr := freePorts(1)
		if perr != nil {
			return errors.Join(err, perr)
		}
		s.Port = ports[0]
		if err := writeConfig(*s, sp); err != nil {
			return err
		}
	}
}

// setUp secures root on a freshly started server (unlogged), creates a
// primary's users and database with its heartbeat table, and starts a
// replica's replication from its source. Servers are set up in topology
// order, so a replica's source is ready when its turn comes.
func (p *Pair) setUp(ctx context.Context, s Server, sp spec) error {
	err := withConn(ctx, dsn("root", "", s.Port, ""), func(c *sql.Conn) error {
		return setRootPassword(ctx, c, p.AdminPassword)
	})
	if err != nil {
		return fmt.Errorf("secure root on the %s: %w", s.Name, err)
	}
	err = p.node(sp.name).admin(ctx, func(ctx context.Context, c *sql.Conn) error {
		if sp.role == roleReplica {
			return p.configureReplication(ctx, c, sp)
		}
		logBin := "1"
		if sp.localUsers {
			logBin = "0"
		}
		return execAll(ctx, c,
			"SET SESSION sql_log_bin = "+logBin,
			fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", replUser, p.ReplPassword),
			fmt.Sprintf("GRANT REPLICATION SLAVE ON *.* TO '%s'@'%%'", replUser),
			fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", MonitorUser, p.MonitorPassword),
			grantMonitorStatement,
			fmt.Sprintf("GRANT SELECT ON performance_schema.* TO '%s'@'%%'", MonitorUser),
			"SET SESSION sql_log_bin = 1",
			"CREATE DATABASE IF NOT EXISTS "+sp.database,
			fmt.Sprintf(ptheartbeat.CreateTable, sp.database+".heartbeat"),
		)
	})
	if err != nil {
		return fmt.Errorf("set up the %s: %w", s.Name, err)
	}
	return nil
}

// setRootPassword gives every root account the pair's admin password, with
// binary logging off so that the replica does not replay it.
func setRootPassword(ctx context.Context, c *sql.Conn, password string) error {
	if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
		return err
	}
	// Accounts for the machine's host name are ignored under
	// skip-name-resolve (and ALTER USER fails on them), so only these count.
	rows, err := c.QueryContext(ctx, "SELECT Host FROM mysql.user WHERE User = 'root' AND Host IN ('localhost', '127.0.0.1', '::1')")
	if err != nil {
		return err
	}
	var hosts []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return err
		}
		hosts = append(hosts, h)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, h := range hosts {
		q := fmt.Sprintf("ALTER USER 'root'@'%s' IDENTIFIED BY '%s'", strings.ReplaceAll(h, "'", "''"), password)
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("alter root@%s: %w", h, err)
		}
	}
	return nil
}

// configureReplication points replica sp at its source and starts it.
func (p *Pair) configureReplication(ctx context.Context, c *sql.Conn, sp spec) error {
	src, err := p.record(sp.source)
	if err != nil {
		return err
	}
	return execAll(ctx, c, p.changeMaster("", src), "START SLAVE")
}

// changeMaster is the CHANGE MASTER statement that points channel name (""
// for the default) at src with GTID replication.
func (p *Pair) changeMaster(name string, src Server) string {
	return fmt.Sprintf("CHANGE MASTER %sTO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', "+
		"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", quoteChannel(name), src.Port, replUser, p.ReplPassword)
}

// withConn runs fn on one connection to dsn (session settings persist
// across its statements) and closes everything afterwards, so no pool or
// goroutine outlives the call.
func withConn(ctx context.Context, dsn string, fn func(*sql.Conn) error) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// execAll runs statements in order, naming the failing one (passwords cut).
func execAll(ctx context.Context, c *sql.Conn, stmts ...string) error {
	for _, q := range stmts {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", redact(q), err)
		}
	}
	return nil
}

func redact(q string) string {
	for _, secret := range []string{"IDENTIFIED BY", "MASTER_PASSWORD"} {
		if i := strings.Index(q, secret); i >= 0 {
			return q[:i] + secret + " …"
		}
	}
	return q
}

func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
