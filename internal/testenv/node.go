package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node drives one server of the pair, whatever its role. It reads the
// server's record from the state file on each call, so it follows restarts
// made through any handle or process. Its replication channels are
// Channel's.
type Node struct {
	p    *Pair
	spec spec
}

func (p *Pair) node(name string) *Node { return &Node{p: p, spec: specOf(name)} }

// Primary is the pair's primary.
func (p *Pair) Primary() *Node { return p.node("primary") }

// Replica is the pair's (first) replica.
func (p *Pair) Replica() *Node { return p.node("replica") }

// Replication is the replica's default channel, from the primary: the
// replication that most tests lag and break.
func (p *Pair) Replication() *Channel { return p.Replica().Replication() }

// SecondReplica returns a second replica of the primary, starting it the
// first time: server_id 3, GTID replication from the primary (it replays the
// primary's whole binary log, so it gets the same database, users and grants
// as the first replica), read-only, with report_host/report_port set so that
// SHOW SLAVE HOSTS on the primary lists it at its address. It takes about
// 1.5s to create and 80MB of memory.
func (p *Pair) SecondReplica(ctx context.Context) (*Node, error) { return p.start(ctx, "replica2") }

// SecondReplicaDSN is the monitoring user on the second replica, or "" when
// the pair has none; it starts nothing (SecondReplica does).
func (p *Pair) SecondReplicaDSN() string {
	n := p.node("replica2")
	if _, err := n.server(); err != nil {
		return ""
	}
	return n.DSN()
}

// SecondSource returns a second primary independent of the pair's primary,
// starting it the first time: server_id 4, gtid_domain_id 1, the repl and
// monitoring users with the pair's passwords (unlogged: the replica has them
// from the primary), and Source2Database with Source2HeartbeatTable
// (binlogged, so that a replica creates them when it first replicates).
// Nothing replicates from it until Node.AddChannel. It takes about 0.8s to
// create.
func (p *Pair) SecondSource(ctx context.Context) (*Node, error) { return p.start(ctx, "source2") }

// start returns on-demand server name, reusing a recorded one after a repair
// like Reset's (cheap from the second call on) and building it otherwise.
// It is part of the pair from then on: Reset repairs it, Healthy checks it,
// Down stops it and Purge removes it. A fresh start (Up over a broken pair)
// discards it.
func (p *Pair) start(ctx context.Context, name string) (*Node, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	n := p.node(name)
	err := p.locked(ctx, true, func() error {
		if _, err := n.server(); err == nil {
			if err := n.repair(ctx, true); err == nil || ctx.Err() != nil {
				return err
			}
			// Beyond repair (a datadir from another primary, a broken
			// replication position): build it again.
		}
		return n.create(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: %w", name, err)
	}
	return n, nil
}

// locked runs fn holding the dir lock, which serialises state-file updates
// across processes, unless the caller already holds it (held).
func (p *Pair) locked(ctx context.Context, held bool, fn func() error) error {
	if held {
		return fn()
	}
	unlock, err := lockFile(ctx, filepath.Join(p.Dir, lockName))
	if err != nil {
		return err
	}
	defer unlock()
	return fn()
}

// create builds on-demand server n: it stops whatever an earlier one left
// running, initialises and starts it, records it in the state file as soon
// as it runs (so that Down stops it whatever happens next) and sets it up.
// On error nothing of it is left running. The caller holds the dir lock.
func (n *Node) create(ctx context.Context) (err error) {
	p, sp := n.p, n.spec
	if err := n.stopLeftovers(); err != nil {
		return err
	}
	bins, err := findBinaries()
	if err != nil {
		return err
	}
	if p.Mariadbd != "" {
		bins.mariadbd = p.Mariadbd // the same server as the rest of the pair
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	s := newServer(p.Dir, sp)
	s.Port = ports[0]
	if err := initServer(ctx, bins, s, sp); err != nil {
		return err
	}
	if err := startWithPortRetry(ctx, bins.mariadbd, &s, sp); err != nil {
		return err
	}
	p.setRecord(sp.name, &s)
	defer func() {
		if err != nil { // leave nothing running that no state file points to
			_ = stopServer(s)
			p.setRecord(sp.name, nil)
			_ = writeState(p)
		}
	}()
	if err := writeState(p); err != nil {
		return err
	}
	if err := p.setUp(ctx, s, sp); err != nil {
		return err
	}
	if sp.role == roleReplica {
		ch := n.Replication()
		if err := ch.waitThreads(ctx, bothThreads); err != nil {
			return err
		}
		if err := ch.waitCaughtUp(ctx); err != nil {
			return fmt.Errorf("first catch-up: %w", err)
		}
	}
	if sp.domainID != 0 {
		for _, r := range p.Servers() {
			if specOf(r.Name).role == roleReplica {
				if err := p.node(r.Name).forgetDomain(ctx, sp); err != nil {
					return fmt.Errorf("make the %s forget an earlier %s: %w", r.Name, sp.name, err)
				}
			}
		}
	}
	return nil
}

// orphanServer finds a server of instance name in dir that runs although no
// state file may record it, from the pid file its defaults file names.
func orphanServer(dir, name string) (Server, bool) {
	s := newServer(dir, specOf(name))
	b, err := os.ReadFile(filepath.Join(s.Dir, "mariadbd.pid"))
	if err != nil {
		return s, false
	}
	s.PID, err = strconv.Atoi(strings.TrimSpace(string(b)))
	return s, err == nil && isOurServer(s)
}

// server is n's record, or an error when n was never started.
func (n *Node) server() (Server, error) { return n.p.record(n.spec.name) }

// Server is n's record; the zero Server when n was never started.
func (n *Node) Server() Server {
	s, _ := n.server()
	return s
}

// Name is n's name in the topology: "primary", "replica", "replica2",
// "source2".
func (n *Node) Name() string { return n.spec.name }

// ServerID is n's server_id.
func (n *Node) ServerID() int { return n.spec.serverID }

// GTIDDomainID is n's gtid_domain_id.
func (n *Node) GTIDDomainID() int { return n.spec.domainID }

// Port is n's TCP port on 127.0.0.1 (a replica's report_port).
func (n *Node) Port() int { return n.Server().Port }

// Addr is "127.0.0.1:<port>", as SHOW SLAVE HOSTS on a primary lists a
// replica.
func (n *Node) Addr() string { return n.Server().Addr() }

// DSN is the monitoring user (MonitorUser) on n: what a throttler is given
// in production. It selects no database because the user may not use any.
func (n *Node) DSN() string { return dsn(MonitorUser, n.p.MonitorPassword, n.Port(), "") }

// AdminDSN is root on n, with the database its data is in: a primary's own,
// a replica's source's.
func (n *Node) AdminDSN() string { return dsn("root", n.p.AdminPassword, n.Port(), n.database()) }

func (n *Node) database() string {
	if n.spec.role == roleReplica {
		return specOf(n.spec.source).database
	}
	return n.spec.database
}

// adminDSN is root on s without a database, usable before the database
// exists.
func (p *Pair) adminDSN(s Server) string { return dsn("root", p.AdminPassword, s.Port, "") }

// admin runs fn on one admin connection to n.
func (n *Node) admin(ctx context.Context, fn func(context.Context, *sql.Conn) error) error {
	s, err := n.server()
	if err != nil {
		return err
	}
	return withConn(ctx, n.p.adminDSN(s), func(c *sql.Conn) error { return fn(ctx, c) })
}

// do runs fn on one admin connection to n, bounded by ctx or
// defaultOpTimeout, and prefixes its error with n and what.
func (n *Node) do(ctx context.Context, what string, fn func(context.Context, *sql.Conn) error) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	if err := n.admin(ctx, fn); err != nil {
		return fmt.Errorf("testenv: %s: %s: %w", n.spec.name, what, err)
	}
	return nil
}

// Exec runs stmts in order on one admin connection to n; what names them in
// errors.
func (n *Node) Exec(ctx context.Context, what string, stmts ...string) error {
	return n.do(ctx, what, func(ctx context.Context, c *sql.Conn) error { return execAll(ctx, c, stmts...) })
}

// ExecNoBinlog is Exec in a session with sql_log_bin=0, so that what stmts
// create (a replica-only trigger that slows the applier, say) never reaches
// a binary log and cannot travel on to another server. A SET GLOBAL that
// needs the SQL thread stopped goes between Channel.StopSQLThread and
// Channel.StartSQLThread.
func (n *Node) ExecNoBinlog(ctx context.Context, what string, stmts ...string) error {
	return n.Exec(ctx, what, append([]string{"SET SESSION sql_log_bin=0"}, stmts...)...)
}

// BinlogPos is n's @@gtid_binlog_pos.
func (n *Node) BinlogPos(ctx context.Context) (string, error) {
	var pos string
	err := n.do(ctx, "binlog position", func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos)
	})
	return pos, err
}

// Kill SIGKILLs n's mariadbd and waits until it is gone, like a crash:
// in-flight queries fail with "invalid connection" and new ones with
// "connection refused" until Restart. A primary's replicas show their IO
// thread "Connecting" meanwhile, and it stops listing them in SHOW SLAVE
// HOSTS; a killed replica is unlisted by its primary when the primary next
// sends it an event.
func (n *Node) Kill() error {
	s, err := n.signal("kill", sigKill)
	if err == nil && !waitGone(s, 10*time.Second) {
		err = fmt.Errorf("testenv: %s: kill: pid %d still alive 10s after SIGKILL", n.spec.name, s.PID)
	}
	return err
}

// Freeze SIGSTOPs n: its TCP port stays open but nothing answers, the
// hardest fault for a client (only a context deadline or a read timeout
// ends a query). A frozen replica stays listed by its primary. Thaw or
// Reset undoes it.
func (n *Node) Freeze() error {
	_, err := n.signal("freeze", sigStop)
	return err
}

// Thaw SIGCONTs n.
func (n *Node) Thaw() error {
	_, err := n.signal("thaw", sigCont)
	return err
}

func (n *Node) signal(what string, sig syscall.Signal) (Server, error) {
	s, err := n.server()
	if err == nil && !isOurServer(s) {
		err = fmt.Errorf("not running (pid %d)", s.PID)
	}
	if err == nil {
		err = signalProcess(s.PID, sig)
	}
	if err != nil {
		return s, fmt.Errorf("testenv: %s: %s: %w", n.spec.name, what, err)
	}
	return s, nil
}

// Restart starts n again with the same config and port, stopping it first
// if it still runs, and returns once it accepts connections and, for a
// replica, its default channel runs (replication resumes from its GTID
// position; a MASTER_DELAY set before persists). A Galera node rejoins its
// cluster by IST and accepts connections once the transfer is done; it
// may still be Joining then (Cluster.WaitHealthy waits for Synced).
func (n *Node) Restart(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	if err := n.restart(ctx, false); err != nil {
		return fmt.Errorf("testenv: %s: restart: %w", n.spec.name, err)
	}
	return nil
}

// restart does Restart; held says the caller holds the dir lock.
func (n *Node) restart(ctx context.Context, held bool) error {
	if n.spec.role == roleGalera {
		return n.p.locked(ctx, held, func() error { return n.restartGalera(ctx) })
	}
	err := n.p.locked(ctx, held, func() error {
		s, err := n.server() // read under the lock: what we write back is current
		if err != nil {
			return err
		}
		if err := stopServer(s); err != nil {
			return err
		}
		s.PID, err = startServer(ctx, n.p.Mariadbd, s, n.p.adminDSN(s))
		if err != nil {
			return err
		}
		n.p.setRecord(s.Name, &s)
		return writeState(n.p)
	})
	if err != nil || n.spec.role != roleReplica {
		return err
	}
	return n.Replication().waitThreads(ctx, bothThreads)
}

// repair brings n back to healthy, acting only where something differs, so
// it is cheap on a healthy server: thawed, restarted if dead or
// unresponsive, monitor grant present; for a replica also no named channel
// left, the default one without delay, running and caught up. held says the
// caller holds the dir lock.
func (n *Node) repair(ctx context.Context, held bool) error {
	s, err := n.server()
	if err != nil {
		return err
	}
	if isOurServer(s) {
		_ = signalProcess(s.PID, sigCont)
	}
	if err := ping(ctx, n.p.adminDSN(s), 3*time.Second); err != nil {
		if err := n.restart(ctx, held); err != nil {
			return fmt.Errorf("restart %s: %w", s.Name, err)
		}
	}
	err = n.admin(ctx, func(ctx context.Context, c *sql.Conn) error {
		granted, err := monitorHasGrant(ctx, c)
		if err != nil {
			return err
		}
		if !granted {
			if err := execAll(ctx, c, "SET SESSION sql_log_bin = 0", grantMonitorStatement); err != nil {
				return fmt.Errorf("restore monitor grant: %w", err)
			}
			if err := killMonitorSessions(ctx, c); err != nil {
				return err
			}
		}
		if n.spec.role != roleReplica {
			return nil
		}
		// Every test starts with the default channel only.
		if err := removeNamedChannels(ctx, c); err != nil {
			return fmt.Errorf("remove named channels: %w", err)
		}
		st, err := queryStatus(ctx, c, "SHOW SLAVE STATUS")
		switch {
		case err != nil:
			return err
		case st == nil:
			return n.p.configureReplication(ctx, c, n.spec)
		case st["SQL_Delay"] != "0":
			return execAll(ctx, c, n.Replication().delayStatements(0)...)
		case st[ioThread] != "Yes" || st[sqlThread] != "Yes":
			return execAll(ctx, c, "START SLAVE")
		}
		return nil
	})
	if err != nil || n.spec.role != roleReplica {
		return err
	}
	ch := n.Replication()
	if err := ch.waitThreads(ctx, bothThreads); err != nil {
		return err
	}
	return ch.waitCaughtUp(ctx)
}

// grantMonitorStatement gives MonitorUser SLAVE MONITOR.
var grantMonitorStatement = fmt.Sprintf("GRANT SLAVE MONITOR ON *.* TO '%s'@'%%'", MonitorUser)

// RevokeMonitorGrant takes SLAVE MONITOR away from the monitoring user on n
// and kills that user's sessions there. The kill matters: MariaDB checks
// global privileges against a per-connection copy taken at login, so a
// pooled connection would otherwise keep the old grant and hide the fault.
// Grants change unlogged: they are n's own.
func (n *Node) RevokeMonitorGrant(ctx context.Context) error {
	return n.changeMonitorGrant(ctx, "revoke monitor grant", true,
		fmt.Sprintf("REVOKE SLAVE MONITOR ON *.* FROM '%s'@'%%'", MonitorUser))
}

// RestoreMonitorGrant gives SLAVE MONITOR back and, for the same reason as
// RevokeMonitorGrant, kills the user's sessions so pools reconnect with it.
func (n *Node) RestoreMonitorGrant(ctx context.Context) error {
	return n.changeMonitorGrant(ctx, "restore monitor grant", true, grantMonitorStatement)
}

// GrantMonitorKeepSessions gives SLAVE MONITOR back as an operator would:
// GRANT alone, the monitor user's sessions left open. Those sessions stay
// denied (MariaDB copies global privileges at login); a client sees the
// grant only on a new session.
func (n *Node) GrantMonitorKeepSessions(ctx context.Context) error {
	return n.changeMonitorGrant(ctx, "grant monitor", false, grantMonitorStatement)
}

func (n *Node) changeMonitorGrant(ctx context.Context, what string, kill bool, stmt string) error {
	return n.do(ctx, what, func(ctx context.Context, c *sql.Conn) error {
		if err := execAll(ctx, c, "SET SESSION sql_log_bin = 0", stmt); err != nil || !kill {
			return err
		}
		return killMonitorSessions(ctx, c)
	})
}

// killMonitorSessions kills the monitor user's connections and waits until
// the server has closed them, so the next use of a pooled connection sees a
// closed socket (which database/sql retries on a new connection) rather
// than racing the kill. It waits for the sessions it killed only: a client
// polling meanwhile may log in again at once (a throttler drops a session
// that was denied), and those new sessions (higher ids) are not waited for.
func killMonitorSessions(ctx context.Context, c *sql.Conn) error {
	var last sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT MAX(ID) FROM information_schema.PROCESSLIST WHERE USER = ?", MonitorUser).Scan(&last); err != nil {
		return fmt.Errorf("list monitor sessions: %w", err)
	}
	if _, err := c.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION USER '%s'", MonitorUser)); err != nil {
		return fmt.Errorf("kill monitor sessions: %w", err)
	}
	if !last.Valid {
		return nil // there were none
	}
	for {
		var n int
		err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <= ?", MonitorUser, last.Int64).Scan(&n)
		if err != nil {
			return fmt.Errorf("count monitor sessions: %w", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d monitor sessions survive KILL: %w", n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func monitorHasGrant(ctx context.Context, c *sql.Conn) (bool, error) {
	rows, err := c.QueryContext(ctx, fmt.Sprintf("SHOW GRANTS FOR '%s'@'%%'", MonitorUser))
	if err != nil {
		return false, fmt.Errorf("show monitor grants: %w", err)
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return false, err
		}
		found = found || strings.Contains(g, "SLAVE MONITOR")
	}
	return found, rows.Err()
}

// StartWriter updates primary n's row of its heartbeat table (HeartbeatTable
// on the primary, Source2HeartbeatTable on the second source) every `every`
// (100ms if zero) until stop is called or ctx ends, because a lagging
// replica only shows lag while its source writes. The first write happens
// before StartWriter returns, so its error is reported; later errors are
// ignored (the next tick retries). stop waits for the goroutine to exit and
// may be called more than once.
func (n *Node) StartWriter(ctx context.Context, every time.Duration) (stop func(), err error) {
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	s, err := n.server()
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: start writer: %w", n.spec.name, err)
	}
	db, err := sql.Open("mysql", n.p.adminDSN(s))
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: start writer: %w", n.spec.name, err)
	}
	db.SetMaxOpenConns(1)
	write := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, `INSERT INTO `+n.spec.database+`.heartbeat (ts, server_id)
			VALUES (DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f'), @@server_id)
			ON DUPLICATE KEY UPDATE ts = VALUES(ts)`)
		return err
	}
	if err := write(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("testenv: %s: start writer: first heartbeat: %w", n.spec.name, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer db.Close()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				_ = write(wctx)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}, nil
}

// Reset brings every recorded server back to healthy (see repair): the
// replica without delay, fault or named channel, replicating and caught up,
// and the same for the on-demand servers tests asked for. It only acts
// where something differs, so it is cheap on a healthy pair; Require runs
// it before and after every test.
func (p *Pair) Reset(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	if err := p.reset(ctx, false); err != nil {
		return fmt.Errorf("testenv: reset: %w", err)
	}
	return nil
}

func (p *Pair) reset(ctx context.Context, held bool) error {
	galera := false
	for _, s := range p.Servers() {
		if specOf(s.Name).role == roleGalera {
			galera = true // repaired as one cluster, below
			continue
		}
		if err := p.node(s.Name).repair(ctx, held); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	if galera {
		if err := (&Cluster{p: p}).ensure(ctx, held); err != nil {
			return fmt.Errorf("galera: %w", err)
		}
	}
	return nil
}

// Healthy reports whether every recorded server runs and answers, every
// replica's default channel runs, and the monitor user may connect to the
// replicas: what `replicapair status` shows.
func (p *Pair) Healthy(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, 10*time.Second)
	defer cancel()
	servers := p.Servers()
	for _, s := range servers {
		if !isOurServer(s) {
			return fmt.Errorf("%s (pid %d) is not running", s.Name, s.PID)
		}
		if err := ping(ctx, p.adminDSN(s), 3*time.Second); err != nil {
			return fmt.Errorf("%s (pid %d, port %d) does not answer: %w", s.Name, s.PID, s.Port, err)
		}
	}
	galera := false
	for _, s := range servers {
		n := p.node(s.Name)
		galera = galera || n.spec.role == roleGalera
		if n.spec.role != roleReplica {
			continue
		}
		st, err := n.Replication().Status(ctx)
		if err != nil {
			return err
		}
		if st[ioThread] != "Yes" || st[sqlThread] != "Yes" {
			return fmt.Errorf("%s: replication is not running (%s)", s.Name, summarize(st, nil))
		}
		if err := ping(ctx, n.DSN(), 3*time.Second); err != nil {
			return fmt.Errorf("monitor user cannot connect to the %s: %w", s.Name, err)
		}
	}
	if galera {
		return (&Cluster{p: p}).waitHealthy(ctx)
	}
	return nil
}

// stopLeftovers stops what an earlier server n left running: the one its
// record names, and an orphan of its directory that no record names.
func (n *Node) stopLeftovers() error {
	if old, err := n.server(); err == nil {
		if err := stopServer(old); err != nil {
			return err
		}
	}
	if orphan, ok := orphanServer(n.p.Dir, n.spec.name); ok {
		if err := stopServer(orphan); err != nil {
			return err
		}
	}
	return nil
}
