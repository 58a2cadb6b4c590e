package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// adminDSN is root on s without a database, usable before Database exists
// on the replica.
func (p *Pair) adminDSN(s Server) string { return dsn("root", p.AdminPassword, s.Port, "") }

// replicaID names one of the pair's replicas for the handles shared by the
// Pair's methods (the first replica) and ReplicaHandle (either).
type replicaID int

const (
	replica1 replicaID = iota + 1
	replica2
)

// errNoSecondReplica is returned by a second-replica handle on a pair whose
// second replica was never created (or was forgotten by a fresh start).
var errNoSecondReplica = errors.New("the pair has no second replica (SecondReplica creates it)")

// label prefixes a handle's description with the replica it acts on, except
// for the first replica, whose messages predate the second.
func (id replicaID) label(what string) string {
	if id == replica2 {
		return replica2Name + ": " + what
	}
	return what
}

// adminReplica runs fn on one admin connection to the replica.
func (p *Pair) adminReplica(ctx context.Context, fn func(context.Context, *sql.Conn) error) error {
	return p.adminOn(ctx, replica1, fn)
}

// adminOn runs fn on one admin connection to replica id.
func (p *Pair) adminOn(ctx context.Context, id replicaID, fn func(context.Context, *sql.Conn) error) error {
	s, err := p.replicaByID(id)
	if err != nil {
		return err
	}
	return withConn(ctx, p.adminDSN(s), func(c *sql.Conn) error { return fn(ctx, c) })
}

// Replication threads that replicaExec waits for after its statements.
const (
	noThread    = ""
	ioThread    = "Slave_IO_Running"
	sqlThread   = "Slave_SQL_Running"
	bothThreads = "both"
)

// replicaExec runs statements on the replica as admin, bounded by ctx or
// defaultOpTimeout, then waits until the thread(s) named by wait report Yes:
// START SLAVE returns while the IO thread is still "Preparing" or
// "Connecting", and callers want a settled state to assert on.
func (p *Pair) replicaExec(ctx context.Context, id replicaID, what, wait string, stmts ...string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	err := p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error { return execAll(ctx, c, stmts...) })
	if err == nil && wait != noThread {
		err = p.waitThreads(ctx, id, wait)
	}
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", id.label(what), err)
	}
	return nil
}

// SetDelay makes the replica apply each transaction d after the primary
// committed it (MASTER_DELAY). MariaDB only accepts the change with both
// replication threads stopped, so they are stopped and started again; it
// returns once both run. The delay has whole-second resolution (d is rounded
// up, so a non-zero d never turns into none), and MariaDB counts it from the
// event's whole-second timestamp: a write committed late in its second
// appears up to 1s sooner than d.
func (p *Pair) SetDelay(ctx context.Context, d time.Duration) error {
	return p.setDelay(ctx, replica1, d)
}

func (p *Pair) setDelay(ctx context.Context, id replicaID, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("testenv: %s: negative delay %v", id.label("set delay"), d)
	}
	secs := int64((d + time.Second - 1) / time.Second)
	return p.replicaExec(ctx, id, fmt.Sprintf("set delay %ds", secs), bothThreads, delayStatements(secs)...)
}

func delayStatements(secs int64) []string {
	return []string{"STOP SLAVE", fmt.Sprintf("CHANGE MASTER TO MASTER_DELAY=%d", secs), "START SLAVE"}
}

// ReplicaExec runs stmts in order on one admin connection to the replica, in
// a session with sql_log_bin=0, so that what they create there (a replica-only
// trigger that slows the applier, say) never reaches a binary log and cannot
// travel on to another server. A SET GLOBAL that needs the SQL thread stopped
// goes between StopSQLThread and StartSQLThread.
func (p *Pair) ReplicaExec(ctx context.Context, what string, stmts ...string) error {
	return p.replicaExec(ctx, replica1, what, noThread, append([]string{"SET SESSION sql_log_bin=0"}, stmts...)...)
}

// StopSQLThread stops the applier; the IO thread keeps fetching, so the
// backlog grows while the primary writes.
func (p *Pair) StopSQLThread(ctx context.Context) error {
	return p.replicaExec(ctx, replica1, "stop SQL thread", noThread, "STOP SLAVE SQL_THREAD")
}

// StartSQLThread starts the applier again.
func (p *Pair) StartSQLThread(ctx context.Context) error {
	return p.replicaExec(ctx, replica1, "start SQL thread", sqlThread, "START SLAVE SQL_THREAD")
}

// StopIOThread disconnects the replica from the primary; it applies what it
// already fetched and then falls silently behind.
func (p *Pair) StopIOThread(ctx context.Context) error {
	return p.replicaExec(ctx, replica1, "stop IO thread", noThread, "STOP SLAVE IO_THREAD")
}

// StartIOThread reconnects the replica to the primary.
func (p *Pair) StartIOThread(ctx context.Context) error {
	return p.replicaExec(ctx, replica1, "start IO thread", ioThread, "START SLAVE IO_THREAD")
}

// KillReplica SIGKILLs the replica's mariadbd and waits until it is gone,
// like a crash: in-flight queries fail with "invalid connection" and new
// ones with "connection refused" until RestartReplica.
func (p *Pair) KillReplica() error { return p.kill(replica1) }

func (p *Pair) kill(id replicaID) error {
	what := id.label("kill replica")
	s, err := p.replicaByID(id)
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	if !isOurServer(s) {
		return fmt.Errorf("testenv: %s: not running (pid %d)", what, s.PID)
	}
	if err := signalProcess(s.PID, sigKill); err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	if !waitGone(s, 10*time.Second) {
		return fmt.Errorf("testenv: %s: pid %d still alive 10s after SIGKILL", what, s.PID)
	}
	return nil
}

// RestartReplica starts the replica again with the same config and port,
// stopping it first if it still runs, and returns once it accepts
// connections and both replication threads run (replication resumes from
// its GTID position; a MASTER_DELAY set before persists).
func (p *Pair) RestartReplica(ctx context.Context) error {
	return p.restart(ctx, replica1)
}

func (p *Pair) restart(ctx context.Context, id replicaID) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	if err := p.restartReplica(ctx, id, false); err != nil {
		return fmt.Errorf("testenv: %s: %w", id.label("restart replica"), err)
	}
	return nil
}

// restartReplica does RestartReplica for replica id; locked says the caller
// already holds the dir lock (Up, SecondReplica), which serialises
// state-file updates across processes.
func (p *Pair) restartReplica(ctx context.Context, id replicaID, locked bool) error {
	if !locked {
		unlock, err := lockFile(ctx, filepath.Join(p.Dir, lockName))
		if err != nil {
			return err
		}
		defer unlock()
	}
	s, err := p.replicaByID(id) // read under the lock: what we write back is current
	if err != nil {
		return err
	}
	err = p.restartRecorded(ctx, s, func(pid int) {
		if id == replica1 {
			p.Replica.PID = pid
		} else {
			p.Replica2.PID = pid
		}
	})
	if err != nil {
		return err
	}
	return p.waitThreads(ctx, id, bothThreads)
}

// restartRecorded stops s and starts it again with its config and port, and
// records its new PID (through setPID, under p.mu) in the state file. The
// caller holds the dir lock.
func (p *Pair) restartRecorded(ctx context.Context, s Server, setPID func(int)) error {
	if err := stopServer(s); err != nil {
		return err
	}
	pid, err := startServer(ctx, p.Mariadbd, s, p.adminDSN(s))
	if err != nil {
		return err
	}
	p.mu.Lock()
	setPID(pid)
	p.mu.Unlock()
	return writeState(p)
}

// waitThreads polls until the named replication thread(s) of replica id
// report Yes. A thread that stopped on an error fails at once instead of
// timing out.
func (p *Pair) waitThreads(ctx context.Context, id replicaID, which string) error {
	var last map[string]string
	for {
		err := p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error {
			var err error
			last, err = queryStatus(ctx, c)
			return err
		})
		if err == nil {
			io, sqlRunning := last[ioThread] == "Yes", last[sqlThread] == "Yes"
			switch {
			case which == ioThread && io, which == sqlThread && sqlRunning, io && sqlRunning:
				return nil
			case last["Last_SQL_Errno"] != "" && last["Last_SQL_Errno"] != "0" && !sqlRunning:
				return fmt.Errorf("SQL thread stopped on an error (%s)", summarize(last, nil))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replication threads not running (%s): %w", summarize(last, err), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// FreezeReplica SIGSTOPs the replica: its TCP port stays open but nothing
// answers, the hardest fault for a client (only a context deadline or a
// read timeout ends a query). ThawReplica or Reset undoes it.
func (p *Pair) FreezeReplica() error { return p.signalReplica(replica1, "freeze replica", sigStop) }

// ThawReplica SIGCONTs the replica.
func (p *Pair) ThawReplica() error { return p.signalReplica(replica1, "thaw replica", sigCont) }

func (p *Pair) signalReplica(id replicaID, what string, sig syscall.Signal) error {
	what = id.label(what)
	s, err := p.replicaByID(id)
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	if !isOurServer(s) {
		return fmt.Errorf("testenv: %s: not running (pid %d)", what, s.PID)
	}
	if err := signalProcess(s.PID, sig); err != nil {
		return fmt.Errorf("testenv: %s: %w", what, err)
	}
	return nil
}

// RevokeMonitorGrant takes SLAVE MONITOR away from the monitor user on the
// replica and kills that user's sessions there. The kill matters: MariaDB
// checks global privileges against a per-connection copy taken at login, so
// a pooled connection would otherwise keep the old grant and hide the fault.
func (p *Pair) RevokeMonitorGrant(ctx context.Context) error {
	return p.changeMonitorGrant(ctx, replica1, "revoke monitor grant",
		fmt.Sprintf("REVOKE SLAVE MONITOR ON *.* FROM '%s'@'%%'", monitorUser))
}

// RestoreMonitorGrant gives SLAVE MONITOR back and, for the same reason as
// RevokeMonitorGrant, kills the user's sessions so pools reconnect with it.
func (p *Pair) RestoreMonitorGrant(ctx context.Context) error {
	return p.changeMonitorGrant(ctx, replica1, "restore monitor grant", grantMonitorStatement())
}

// GrantMonitorKeepSessions gives SLAVE MONITOR back as an operator would:
// GRANT alone, the monitor user's sessions left open. Those sessions stay
// denied (MariaDB copies global privileges at login); a client sees the
// grant only on a new session.
func (p *Pair) GrantMonitorKeepSessions(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	err := p.adminOn(ctx, replica1, func(ctx context.Context, c *sql.Conn) error {
		_, err := c.ExecContext(ctx, grantMonitorStatement())
		return err
	})
	if err != nil {
		return fmt.Errorf("testenv: grant monitor: %w", err)
	}
	return nil
}

func grantMonitorStatement() string {
	return fmt.Sprintf("GRANT SLAVE MONITOR ON *.* TO '%s'@'%%'", monitorUser)
}

func (p *Pair) changeMonitorGrant(ctx context.Context, id replicaID, what, stmt string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	err := p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error {
		if _, err := c.ExecContext(ctx, stmt); err != nil {
			return err
		}
		return killMonitorSessions(ctx, c)
	})
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", id.label(what), err)
	}
	return nil
}

// killMonitorSessions kills the monitor user's connections and waits until
// the server has closed them, so the next use of a pooled connection sees a
// closed socket (which database/sql retries on a new connection) rather
// than racing the kill. It waits for the sessions it killed only: a client
// polling meanwhile may log in again at once (a throttler drops a session
// that was denied), and those new sessions (higher ids) are not waited for.
func killMonitorSessions(ctx context.Context, c *sql.Conn) error {
	var last sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT MAX(ID) FROM information_schema.PROCESSLIST WHERE USER = ?", monitorUser).Scan(&last); err != nil {
		return fmt.Errorf("list monitor sessions: %w", err)
	}
	if _, err := c.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION USER '%s'", monitorUser)); err != nil {
		return fmt.Errorf("kill monitor sessions: %w", err)
	}
	if !last.Valid {
		return nil // there were none
	}
	for {
		var n int
		err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <= ?", monitorUser, last.Int64).Scan(&n)
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

// StartWriter updates this primary's row of HeartbeatTable every `every`
// (100ms if zero) until stop is called or ctx ends, because a lagging
// replica only shows lag while the primary writes. The first write happens
// before StartWriter returns, so its error is reported; later errors are
// ignored (the next tick retries). stop waits for the goroutine to exit and
// may be called more than once.
func (p *Pair) StartWriter(ctx context.Context, every time.Duration) (stop func(), err error) {
	return startWriter(ctx, p.adminDSN(p.Primary), HeartbeatTable, every, "start writer")
}

// startWriter is StartWriter for the server at adminDSN, into table; what
// prefixes errors.
func startWriter(ctx context.Context, adminDSN, table string, every time.Duration, what string) (stop func(), err error) {
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	db, err := sql.Open("mysql", adminDSN)
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: %w", what, err)
	}
	db.SetMaxOpenConns(1)
	write := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, `INSERT INTO `+table+` (ts, server_id)
			VALUES (DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f'), @@server_id)
			ON DUPLICATE KEY UPDATE ts = VALUES(ts)`)
		return err
	}
	if err := write(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("testenv: %s: first heartbeat: %w", what, err)
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

// WaitCaughtUp waits until the replica has applied everything the primary
// has binlogged so far (MASTER_GTID_WAIT on the primary's gtid_binlog_pos),
// within ctx or defaultOpTimeout.
func (p *Pair) WaitCaughtUp(ctx context.Context) error { return p.waitCaughtUp(ctx, replica1) }

func (p *Pair) waitCaughtUp(ctx context.Context, id replicaID) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	var pos string
	err := withConn(ctx, p.adminDSN(p.Primary), func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos)
	})
	if err != nil {
		return fmt.Errorf("testenv: %s: read the primary's position: %w", id.label("wait caught up"), err)
	}
	if pos == "" {
		return nil
	}
	// Bound the server-side wait by our deadline, so that giving up here
	// also ends the query there.
	deadline, _ := ctx.Deadline()
	wait := max(time.Until(deadline)-100*time.Millisecond, 100*time.Millisecond)
	var res sql.NullInt64
	err = p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos, wait.Seconds()).Scan(&res)
	})
	if err == nil && (!res.Valid || res.Int64 != 0) {
		err = fmt.Errorf("not caught up after %.1fs", wait.Seconds())
	}
	if err != nil {
		return fmt.Errorf("testenv: %s to %s: %w (replica: %s)", id.label("wait caught up"), pos, err, p.statusSummary(id))
	}
	return nil
}

// Reset brings the pair back to healthy: replica thawed, restarted if dead
// or unresponsive, monitor grant present, no named (multi-source)
// connection left (see AddSourceConnection), no delay, both threads running,
// caught up; and the same for the second replica when SecondReplica has
// created one; and the second source thawed, or restarted when it does not
// answer, when SecondSource has created one. It only acts where something differs, so it is cheap on a
// healthy pair; Require runs it before and after every test.
func (p *Pair) Reset(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	if err := p.reset(ctx, false); err != nil {
		return fmt.Errorf("testenv: reset: %w", err)
	}
	return nil
}

func (p *Pair) reset(ctx context.Context, locked bool) error {
	if err := p.resetReplica(ctx, replica1, locked); err != nil {
		return err
	}
	if _, err := p.replicaByID(replica2); err == nil {
		if err := p.resetReplica(ctx, replica2, locked); err != nil {
			return fmt.Errorf("%s: %w", replica2Name, err)
		}
	}
	if _, err := p.source2(); err == nil {
		if err := p.repairSource2(ctx, locked); err != nil {
			return fmt.Errorf("%s: %w", source2Name, err)
		}
	}
	return nil
}

// resetReplica does reset for one replica.
func (p *Pair) resetReplica(ctx context.Context, id replicaID, locked bool) error {
	s, err := p.replicaByID(id)
	if err != nil {
		return err
	}
	if isOurServer(s) {
		_ = signalProcess(s.PID, sigCont)
	}
	if err := ping(ctx, p.adminDSN(s), 3*time.Second); err != nil {
		if err := p.restartReplica(ctx, id, locked); err != nil {
			return fmt.Errorf("restart replica: %w", err)
		}
	}
	err = p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error {
		granted, err := monitorHasGrant(ctx, c)
		if err != nil {
			return err
		}
		if !granted {
			if _, err := c.ExecContext(ctx, grantMonitorStatement()); err != nil {
				return fmt.Errorf("restore monitor grant: %w", err)
			}
			if err := killMonitorSessions(ctx, c); err != nil {
				return err
			}
		}
		if id == replica1 {
			// Only the first replica gets named connections
			// (AddSourceConnection); every test starts with the
			// default one only.
			if err := removeNamedConnections(ctx, c); err != nil {
				return fmt.Errorf("remove named connections: %w", err)
			}
		}
		st, err := queryStatus(ctx, c)
		switch {
		case err != nil:
			return err
		case st == nil:
			return p.configureReplication(ctx, c)
		case st["SQL_Delay"] != "0":
			return execAll(ctx, c, delayStatements(0)...)
		case st[ioThread] != "Yes" || st[sqlThread] != "Yes":
			return execAll(ctx, c, "START SLAVE")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := p.waitThreads(ctx, id, bothThreads); err != nil {
		return err
	}
	return p.waitCaughtUp(ctx, id)
}

func monitorHasGrant(ctx context.Context, c *sql.Conn) (bool, error) {
	rows, err := c.QueryContext(ctx, fmt.Sprintf("SHOW GRANTS FOR '%s'@'%%'", monitorUser))
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

// ReplicaStatus returns the replica's SHOW SLAVE STATUS row by column name
// (NULL columns are absent), or nil when replication is not configured.
func (p *Pair) ReplicaStatus(ctx context.Context) (map[string]string, error) {
	return p.replicaStatus(ctx, replica1)
}

func (p *Pair) replicaStatus(ctx context.Context, id replicaID) (map[string]string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	var st map[string]string
	err := p.adminOn(ctx, id, func(ctx context.Context, c *sql.Conn) error {
		var err error
		st, err = queryStatus(ctx, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: %w", id.label("replica status"), err)
	}
	return st, nil
}

// Healthy reports whether both servers (and the second replica, when there
// is one) run and answer, replication runs, and the monitor user may read
// replica status: what `replicapair status` shows.
func (p *Pair) Healthy(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, 10*time.Second)
	defer cancel()
	p.refresh()
	for _, s := range p.servers() {
		if !isOurServer(s) {
			return fmt.Errorf("%s (pid %d) is not running", s.Name, s.PID)
		}
		if err := ping(ctx, p.adminDSN(s), 3*time.Second); err != nil {
			return fmt.Errorf("%s (pid %d, port %d) does not answer: %w", s.Name, s.PID, s.Port, err)
		}
	}
	ids := []replicaID{replica1}
	if _, err := p.replicaByID(replica2); err == nil {
		ids = append(ids, replica2)
	}
	for _, id := range ids {
		st, err := p.replicaStatus(ctx, id)
		if err != nil {
			return err
		}
		if st[ioThread] != "Yes" || st[sqlThread] != "Yes" {
			return fmt.Errorf("%s (%s)", id.label("replication is not running"), summarize(st, nil))
		}
		s, _ := p.replicaByID(id)
		if err := ping(ctx, p.monitorDSN(s), 3*time.Second); err != nil {
			return fmt.Errorf("monitor user cannot connect to the %s: %w", s.Name, err)
		}
	}
	return nil
}

// queryStatus reads SHOW SLAVE STATUS (the default connection's row) into a
// map; nil when there is no row.
func queryStatus(ctx context.Context, c *sql.Conn) (map[string]string, error) {
	all, err := queryStatusRows(ctx, c, "SHOW SLAVE STATUS")
	if err != nil || len(all) == 0 {
		return nil, err
	}
	return all[0], nil
}

// queryStatusRows runs a SHOW ... STATUS statement and returns its rows by
// column name, NULL columns absent.
func queryStatusRows(ctx context.Context, c *sql.Conn, stmt string) ([]map[string]string, error) {
	rows, err := c.QueryContext(ctx, stmt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.ToLower(stmt), err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		st := make(map[string]string, len(cols))
		for i, col := range cols {
			if vals[i].Valid {
				st[col] = vals[i].String
			}
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// statusSummary describes the replica for error messages, with its own short
// timeout because the caller's context is typically already spent.
func (p *Pair) statusSummary(id replicaID) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := p.replicaStatus(ctx, id)
	return summarize(st, err)
}

func summarize(st map[string]string, err error) string {
	if err != nil {
		return "status unavailable: " + err.Error()
	}
	if st == nil {
		return "replication not configured"
	}
	parts := []string{
		"IO=" + st[ioThread],
		"SQL=" + st[sqlThread],
		"delay=" + st["SQL_Delay"],
	}
	for _, k := range []string{"Last_IO_Error", "Last_SQL_Error"} {
		if st[k] != "" {
			parts = append(parts, k+"="+st[k])
		}
	}
	return strings.Join(parts, " ")
}
