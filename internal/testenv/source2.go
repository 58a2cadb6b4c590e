package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The on-demand second, independent primary ("source2") and MariaDB
// multi-source replication of the first replica from it.
//
// Measured on MariaDB 10.11.19 (this package, loopback, 2 cores):
//
//   - Creating source2 (install-db, start, users, schema) takes about 0.8s
//     (1.5s budgeted); reusing it about 2ms. Adding the named connection
//     and catching up takes about 35-40ms (110ms when it first replays a
//     few hundred heartbeat events).
//   - SHOW ALL SLAVES STATUS on the replica returns one row per connection,
//     the default connection ("") first, then "east"; each row has
//     Connection_name, its own Slave_IO_Running/Slave_SQL_Running,
//     Seconds_Behind_Master, SQL_Delay, Using_Gtid and Gtid_Slave_Pos.
//     Gtid_Slave_Pos is the replica-wide @@gtid_slave_pos, the same in every
//     row (for example "0-1-88,1-4-30"): the position is shared, one entry
//     per domain, which is why the second source writes in its own
//     gtid_domain_id. Plain SHOW SLAVE STATUS is the default connection's
//     row only and has no Gtid_Slave_Pos column. The monitoring user's SLAVE
//     MONITOR covers SHOW ALL SLAVES STATUS.
//   - Every per-connection statement takes the name: STOP SLAVE 'east'
//     SQL_THREAD, CHANGE MASTER 'east' TO MASTER_DELAY=5, RESET SLAVE 'east'
//     ALL; unnamed ones act on the default connection only (STOP SLAVE and
//     SetDelay leave "east" running); SHOW SLAVE 'nope' STATUS is Error 1617
//     ("There is no master connection 'nope'"). MASTER_DELAY is per
//     connection and, as for the default one, needs both of that
//     connection's threads stopped: with only its SQL thread stopped,
//     CHANGE MASTER 'east' TO MASTER_DELAY=1 is Error 1198 ("... you have a
//     running slave 'east'; run STOP SLAVE 'east' first").
//     With MASTER_DELAY=5 on "east" and both sources writing every 100ms,
//     east's Seconds_Behind_Master read 1, 2, 3, 4, 5 at one-second steps
//     and then held at 5, while the default row stayed at 0; setting the
//     delay back to 0 dropped it to 0 within about 100ms.
//   - Stopping east's SQL thread: east shows Slave_SQL_Running No and
//     Seconds_Behind_Master NULL; its IO thread: Slave_IO_Running No, NULL.
//     The default row stays Yes/Yes/0 and keeps applying. A killed source2:
//     east's IO thread "Connecting" with Last_IO_Errno 2013 or 2003,
//     reconnecting within about 0.9s of its restart (MASTER_CONNECT_RETRY=1).
//   - The shared gtid_slave_pos keeps domain 1's entry after RESET SLAVE
//     'east' ALL. See forgetDomain for what that does to the default
//     connection and how a rebuilt source2 deals with it.
//
// Users are created on source2 with sql_log_bin=0 (the replica has them
// from the primary already; replaying CREATE USER would stop the 'east'
// applier with Error 1396). Its database and table are binlogged, with IF NOT
// EXISTS, so that the replica creates them when it first replicates.

// source2Name is the second source's instance directory and Server.Name.
const source2Name = "source2"

// Identity of the second source: server_id 4 (primary 1, replicas 2 and 3),
// and GTID domain 1, so that its GTIDs never collide with the primary's
// domain 0 in the replica's shared gtid_slave_pos.
const (
	source2ServerID = 4
	source2DomainID = 1
)

// Names of the objects on the second source (replicated to the replica by a
// named connection). They do not clash with Database, which the replica has
// from the primary.
const (
	// Source2Database is created on the second source.
	Source2Database = "throttler_src2"
	// Source2HeartbeatTable is the second source's heartbeat table, written by
	// SourceHandle.StartWriter, with HeartbeatTable's layout.
	Source2HeartbeatTable = Source2Database + ".heartbeat"
)

// SourceHandle drives the second source (see SecondSource). It reads the
// server's record from the state file on each call, so it follows restarts
// made through any handle or process.
type SourceHandle struct{ p *Pair }

// SecondSource returns a handle on a second primary independent of the
// pair's primary, starting it the first time: its own datadir, tmpdir,
// socket and port, server_id 4, gtid_domain_id 1, binary log on, the repl
// and monitoring users with the pair's passwords (not binlogged), and
// Source2Database with Source2HeartbeatTable (binlogged). Nothing replicates
// from it until AddSourceConnection. A recorded second source is reused
// (restarted if it is not running or answering), so the call is cheap from
// the second time on.
//
// It is part of the pair from then on: Reset restarts it when it is down,
// Healthy checks it, Down stops it and Purge removes it. A fresh start (Up
// over a broken pair) discards it. Creating it takes about 1.5s and 80MB.
func (p *Pair) SecondSource(ctx context.Context) (*SourceHandle, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(p.Dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("testenv: second source: %w", err)
	}
	defer unlock()
	if err := p.ensureSecondSource(ctx); err != nil {
		return nil, fmt.Errorf("testenv: second source: %w", err)
	}
	return &SourceHandle{p: p}, nil
}

// source2 returns the second source as currently recorded.
func (p *Pair) source2() (Server, error) {
	p.refresh()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Source2 == nil {
		return Server{}, fmt.Errorf("the pair has no second source (SecondSource creates it)")
	}
	return *p.Source2, nil
}

// ensureSecondSource reuses (repairing) or builds the second source. The
// caller holds the dir lock.
func (p *Pair) ensureSecondSource(ctx context.Context) error {
	if _, err := p.source2(); err == nil {
		if err := p.repairSource2(ctx, true); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return p.createSecondSource(ctx)
}

// repairSource2 thaws the second source and restarts it when it does not
// answer; locked says the caller holds the dir lock.
func (p *Pair) repairSource2(ctx context.Context, locked bool) error {
	s, err := p.source2()
	if err != nil {
		return err
	}
	if isOurServer(s) {
		_ = signalProcess(s.PID, sigCont)
		if ping(ctx, p.adminDSN(s), 3*time.Second) == nil {
			return nil
		}
	}
	if !locked {
		unlock, err := lockFile(ctx, filepath.Join(p.Dir, lockName))
		if err != nil {
			return err
		}
		defer unlock()
	}
	return p.restartSource2(ctx)
}

// restartSource2 (re)starts the recorded second source with its config and
// port. The caller holds the dir lock.
func (p *Pair) restartSource2(ctx context.Context) error {
	s, err := p.source2()
	if err != nil {
		return err
	}
	return p.restartRecorded(ctx, s, func(pid int) { p.Source2.PID = pid })
}

func (p *Pair) createSecondSource(ctx context.Context) (err error) {
	s := newServer(p.Dir, source2Name, source2ServerID)
	s.GTIDDomainID = source2DomainID
	discard, err := p.startExtra(ctx, &s, true, func(v *Server) { p.Source2 = v })
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			discard()
		}
	}()
	err = withConn(ctx, p.adminDSN(s), func(c *sql.Conn) error {
		return execAll(ctx, c,
			"SET SESSION sql_log_bin = 0",
			fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", replUser, p.ReplPassword),
			fmt.Sprintf("GRANT REPLICATION SLAVE ON *.* TO '%s'@'%%'", replUser),
			fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", monitorUser, p.MonitorPassword),
			grantMonitorStatement(),
			"SET SESSION sql_log_bin = 1",
			"CREATE DATABASE IF NOT EXISTS "+Source2Database,
			`CREATE TABLE IF NOT EXISTS `+Source2HeartbeatTable+` (
				ts                    VARCHAR(26) NOT NULL,
				server_id             INT UNSIGNED NOT NULL PRIMARY KEY,
				file                  VARCHAR(255) DEFAULT NULL,
				position              BIGINT UNSIGNED DEFAULT NULL,
				relay_master_log_file VARCHAR(255) DEFAULT NULL,
				exec_master_log_pos   BIGINT UNSIGNED DEFAULT NULL)`,
		)
	})
	if err != nil {
		return fmt.Errorf("create users and schema on the %s: %w", s.Name, err)
	}
	if err := p.forgetDomain(ctx, source2DomainID); err != nil {
		return fmt.Errorf("make the replica forget an earlier %s: %w", s.Name, err)
	}
	return nil
}

// Server is the second source as currently recorded; the zero Server when
// there is none.
func (h *SourceHandle) Server() Server {
	s, _ := h.p.source2()
	return s
}

// Name is "source2".
func (h *SourceHandle) Name() string { return source2Name }

// ServerID is 4.
func (h *SourceHandle) ServerID() int { return h.Server().ServerID }

// GTIDDomainID is the second source's gtid_domain_id, 1.
func (h *SourceHandle) GTIDDomainID() int { return h.Server().GTIDDomainID }

// Port is the second source's TCP port on 127.0.0.1.
func (h *SourceHandle) Port() int { return h.Server().Port }

// Addr is "127.0.0.1:<port>".
func (h *SourceHandle) Addr() string { return h.Server().Addr() }

// AdminDSN is root on the second source, database Source2Database.
func (h *SourceHandle) AdminDSN() string {
	return dsn("root", h.p.AdminPassword, h.Server().Port, Source2Database)
}

// DSN is the monitoring user on the second source.
func (h *SourceHandle) DSN() string { return h.p.monitorDSN(h.Server()) }

// StartWriter updates the second source's row of Source2HeartbeatTable every
// `every` (100ms if zero), like Pair.StartWriter does on the primary.
func (h *SourceHandle) StartWriter(ctx context.Context, every time.Duration) (stop func(), err error) {
	s, err := h.p.source2()
	if err != nil {
		return nil, fmt.Errorf("testenv: source2: start writer: %w", err)
	}
	return startWriter(ctx, h.p.adminDSN(s), Source2HeartbeatTable, every, "source2: start writer")
}

// BinlogPos is the second source's @@gtid_binlog_pos (domain 1 only).
func (h *SourceHandle) BinlogPos(ctx context.Context) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	s, err := h.p.source2()
	if err != nil {
		return "", fmt.Errorf("testenv: source2: binlog position: %w", err)
	}
	var pos string
	err = withConn(ctx, h.p.adminDSN(s), func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos)
	})
	if err != nil {
		return "", fmt.Errorf("testenv: source2: binlog position: %w", err)
	}
	return pos, nil
}

// Kill SIGKILLs the second source and waits until it is gone. A connection
// replicating from it shows its IO thread "Connecting" until Restart.
func (h *SourceHandle) Kill() error {
	s, err := h.p.source2()
	if err != nil {
		return fmt.Errorf("testenv: source2: kill: %w", err)
	}
	if !isOurServer(s) {
		return fmt.Errorf("testenv: source2: kill: not running (pid %d)", s.PID)
	}
	if err := signalProcess(s.PID, sigKill); err != nil {
		return fmt.Errorf("testenv: source2: kill: %w", err)
	}
	if !waitGone(s, 10*time.Second) {
		return fmt.Errorf("testenv: source2: kill: pid %d still alive 10s after SIGKILL", s.PID)
	}
	return nil
}

// Restart starts the second source again with the same config and port,
// stopping it first if it runs, and returns once it answers.
func (h *SourceHandle) Restart(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(h.p.Dir, lockName))
	if err != nil {
		return fmt.Errorf("testenv: source2: restart: %w", err)
	}
	defer unlock()
	if err := h.p.restartSource2(ctx); err != nil {
		return fmt.Errorf("testenv: source2: restart: %w", err)
	}
	return nil
}

// connectionName is what MariaDB accepts as a connection name here: the
// named connections of this package are plain identifiers.
var connectionName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

func checkConnectionName(name string) error {
	if !connectionName.MatchString(name) {
		return fmt.Errorf("connection name %q: want 1-64 letters, digits or underscores (the default connection \"\" has the Pair's own methods)", name)
	}
	return nil
}

// AddSourceConnection makes the first replica also replicate from src as
// the MariaDB multi-source connection name (CHANGE MASTER 'name' TO ...,
// MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE 'name'),
// replacing a connection of that name if there is one, and returns once
// both of its threads run and it has applied everything src binlogged. The
// default connection from the primary is untouched. Reset removes every
// named connection again.
func (p *Pair) AddSourceConnection(ctx context.Context, name string, src *SourceHandle) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	what := fmt.Sprintf("add source connection %q", name)
	if err := checkConnectionName(name); err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	s, err := p.source2()
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	if src == nil || src.p != p {
		return fmt.Errorf("testenv: %s: the source is not this pair's (use SecondSource)", what)
	}
	err = p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		names, err := namedConnections(ctx, c)
		if err != nil {
			return err
		}
		for _, n := range names {
			if n == name {
				if err := removeConnection(ctx, c, name); err != nil {
					return err
				}
			}
		}
		return execAll(ctx, c,
			fmt.Sprintf("CHANGE MASTER '%s' TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', "+
				"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", name, s.Port, replUser, p.ReplPassword),
			fmt.Sprintf("START SLAVE '%s'", name),
		)
	})
	if err == nil {
		err = p.waitConnThreads(ctx, name, bothThreads)
	}
	if err == nil {
		err = p.WaitConnectionCaughtUp(ctx, name, src)
	}
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	return nil
}

// RemoveSourceConnection stops and forgets the named connection (STOP SLAVE
// 'name'; RESET SLAVE 'name' ALL). Removing a connection that does not exist
// is not an error.
func (p *Pair) RemoveSourceConnection(ctx context.Context, name string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	what := fmt.Sprintf("remove source connection %q", name)
	if err := checkConnectionName(name); err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	err := p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		names, err := namedConnections(ctx, c)
		if err != nil {
			return err
		}
		for _, n := range names {
			if n == name {
				return removeConnection(ctx, c, name)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	return nil
}

func removeConnection(ctx context.Context, c *sql.Conn, name string) error {
	return execAll(ctx, c, fmt.Sprintf("STOP SLAVE '%s'", name), fmt.Sprintf("RESET SLAVE '%s' ALL", name))
}

// namedConnections lists the replica's connections other than the default.
func namedConnections(ctx context.Context, c *sql.Conn) ([]string, error) {
	rows, err := queryStatusRows(ctx, c, "SHOW ALL SLAVES STATUS")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range rows {
		if n := r["Connection_name"]; n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

// SetConnectionDelay sets MASTER_DELAY on the named connection only, like
// SetDelay does on the default one: that connection's threads are stopped,
// changed and started again, and it returns once both run.
func (p *Pair) SetConnectionDelay(ctx context.Context, name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("testenv: connection %q: set delay: negative delay %v", name, d)
	}
	secs := int64((d + time.Second - 1) / time.Second)
	return p.connExec(ctx, name, fmt.Sprintf("set delay %ds", secs), bothThreads,
		fmt.Sprintf("STOP SLAVE '%s'", name),
		fmt.Sprintf("CHANGE MASTER '%s' TO MASTER_DELAY=%d", name, secs),
		fmt.Sprintf("START SLAVE '%s'", name))
}

// StopConnectionSQLThread stops the named connection's applier only.
func (p *Pair) StopConnectionSQLThread(ctx context.Context, name string) error {
	return p.connExec(ctx, name, "stop SQL thread", noThread, fmt.Sprintf("STOP SLAVE '%s' SQL_THREAD", name))
}

// StartConnectionSQLThread starts the named connection's applier again.
func (p *Pair) StartConnectionSQLThread(ctx context.Context, name string) error {
	return p.connExec(ctx, name, "start SQL thread", sqlThread, fmt.Sprintf("START SLAVE '%s' SQL_THREAD", name))
}

// StopConnectionIOThread disconnects the named connection from its source.
func (p *Pair) StopConnectionIOThread(ctx context.Context, name string) error {
	return p.connExec(ctx, name, "stop IO thread", noThread, fmt.Sprintf("STOP SLAVE '%s' IO_THREAD", name))
}

// StartConnectionIOThread reconnects the named connection to its source.
func (p *Pair) StartConnectionIOThread(ctx context.Context, name string) error {
	return p.connExec(ctx, name, "start IO thread", ioThread, fmt.Sprintf("START SLAVE '%s' IO_THREAD", name))
}

// ConnectionStatus is the named connection's SHOW SLAVE 'name' STATUS row by
// column name (NULL columns absent).
func (p *Pair) ConnectionStatus(ctx context.Context, name string) (map[string]string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	if err := checkConnectionName(name); err != nil {
		return nil, fmt.Errorf("testenv: connection status: %w", err)
	}
	st, err := p.connStatus(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("testenv: connection %q: status: %w", name, err)
	}
	return st, nil
}

// AllConnectionsStatus is the first replica's SHOW ALL SLAVES STATUS: one
// row per connection, the default one ("" Connection_name) first.
func (p *Pair) AllConnectionsStatus(ctx context.Context) ([]map[string]string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	var rows []map[string]string
	err := p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		var err error
		rows, err = queryStatusRows(ctx, c, "SHOW ALL SLAVES STATUS")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: all connections status: %w", err)
	}
	return rows, nil
}

// WaitConnectionCaughtUp waits until the replica has applied everything src
// has binlogged so far (MASTER_GTID_WAIT on src's gtid_binlog_pos); name is
// only for messages.
func (p *Pair) WaitConnectionCaughtUp(ctx context.Context, name string, src *SourceHandle) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	pos, err := src.BinlogPos(ctx)
	if err != nil {
		return err
	}
	if pos == "" {
		return nil
	}
	deadline, _ := ctx.Deadline()
	wait := max(time.Until(deadline)-100*time.Millisecond, 100*time.Millisecond)
	var res sql.NullInt64
	err = p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos, wait.Seconds()).Scan(&res)
	})
	if err == nil && (!res.Valid || res.Int64 != 0) {
		err = fmt.Errorf("not caught up after %.1fs", wait.Seconds())
	}
	if err != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		st, serr := p.connStatus(sctx, name)
		return fmt.Errorf("testenv: connection %q: wait caught up to %s: %w (%s)", name, pos, err, summarize(st, serr))
	}
	return nil
}

func (p *Pair) connStatus(ctx context.Context, name string) (map[string]string, error) {
	var st map[string]string
	err := p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		rows, err := queryStatusRows(ctx, c, fmt.Sprintf("SHOW SLAVE '%s' STATUS", name))
		if len(rows) > 0 {
			st = rows[0]
		}
		return err
	})
	return st, err
}

// connExec is replicaExec for a named connection of the first replica.
func (p *Pair) connExec(ctx context.Context, name, what, wait string, stmts ...string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	err := checkConnectionName(name)
	if err == nil {
		err = p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error { return execAll(ctx, c, stmts...) })
	}
	if err == nil && wait != noThread {
		err = p.waitConnThreads(ctx, name, wait)
	}
	if err != nil {
		return fmt.Errorf("testenv: connection %q: %s: %w", name, what, err)
	}
	return nil
}

// waitConnThreads is waitThreads for a named connection of the first
// replica.
func (p *Pair) waitConnThreads(ctx context.Context, name, which string) error {
	var last map[string]string
	for {
		var err error
		last, err = p.connStatus(ctx, name)
		if err == nil && last != nil {
			io, sqlRunning := last[ioThread] == "Yes", last[sqlThread] == "Yes"
			switch {
			case which == ioThread && io, which == sqlThread && sqlRunning, io && sqlRunning:
				return nil
			case last["Last_SQL_Errno"] != "" && last["Last_SQL_Errno"] != "0" && !sqlRunning:
				return fmt.Errorf("SQL thread stopped on an error (%s)", summarize(last, nil))
			case last["Last_IO_Errno"] == "1236":
				// The source refused our position: retrying will not help.
				return fmt.Errorf("IO thread stopped on an error (%s)", summarize(last, nil))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replication threads not running (%s): %w", summarize(last, err), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeNamedConnections removes every named connection on c's replica:
// the state every test starts from has the default connection only.
func removeNamedConnections(ctx context.Context, c *sql.Conn) error {
	names, err := namedConnections(ctx, c)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeConnection(ctx, c, n); err != nil {
			return err
		}
	}
	return nil
}

// forgetDomain makes the first replica forget what it replicated in GTID
// domain: its entry in the shared gtid_slave_pos and Source2Database. A
// newly created second source starts its binlog (domain 1) at sequence 1
// again; a replica still asking for a later position would be refused
// (Error 1236) and, were the position simply dropped, would replay the
// source's whole binlog over rows it already has. Called with every named
// connection removed; SET GLOBAL gtid_slave_pos needs all connections
// stopped, so the default one is restarted around it.
//
// An entry that stays is harmless otherwise (measured): RESET SLAVE 'east'
// ALL keeps domain 1 in gtid_slave_pos, and the default connection still
// reconnects to the primary, which has never logged domain 1, without error
// (gtid_strict_mode is OFF, the default); the primary just ignores the
// domain. Likewise the 'east' connection asks source2 for the primary's
// domain 0, which source2 ignores.
func (p *Pair) forgetDomain(ctx context.Context, domain int) error {
	return p.adminReplica(ctx, func(ctx context.Context, c *sql.Conn) error {
		var pos string
		if err := c.QueryRowContext(ctx, "SELECT @@gtid_slave_pos").Scan(&pos); err != nil {
			return err
		}
		var keep []string
		prefix := fmt.Sprintf("%d-", domain)
		found := false
		for g := range strings.SplitSeq(pos, ",") {
			g = strings.TrimSpace(g)
			switch {
			case g == "":
			case strings.HasPrefix(g, prefix):
				found = true
			default:
				keep = append(keep, g)
			}
		}
		if !found {
			return nil
		}
		if err := removeNamedConnections(ctx, c); err != nil {
			return err
		}
		return execAll(ctx, c,
			"STOP SLAVE",
			"SET GLOBAL gtid_slave_pos = '"+strings.Join(keep, ",")+"'",
			"START SLAVE",
			"SET SESSION sql_log_bin = 0",
			"DROP DATABASE IF EXISTS "+Source2Database,
		)
	})
}
