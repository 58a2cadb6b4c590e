package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// replica2Name is the second replica's instance directory and Server.Name.
const replica2Name = "replica2"

// replica2ServerID is the second replica's server_id (primary 1, replica 2).
const replica2ServerID = 3

// ReplicaHandle drives one replica of the pair: the first (FirstReplica, the
// same server as the Pair's own methods act on) or the on-demand second one
// (SecondReplica). Its methods behave like the Pair's methods of the same
// name (SetDelay like SetDelay, Kill like KillReplica, ...), on its replica
// only. It reads the replica's record from the state file on each call, so
// it follows restarts made through any handle or process.
type ReplicaHandle struct {
	p  *Pair
	id replicaID
}

// FirstReplica is a handle on the pair's first replica, for tests that treat
// both replicas alike.
func (p *Pair) FirstReplica() *ReplicaHandle { return &ReplicaHandle{p: p, id: replica1} }

// SecondReplica returns a handle on a second replica of the same primary,
// starting it the first time: its own datadir, tmpdir, socket and port,
// server_id 3, GTID replication from the primary (it replays the primary's
// whole binary log, so it gets the same database, users and grants as the
// first replica), read-only, with report_host/report_port set so that SHOW
// SLAVE HOSTS on the primary lists it at its address. A second replica that
// exists already is reused after a repair like Reset's, so the call is cheap
// from the second time on (Require's Reset keeps it healthy between tests).
//
// It also makes sure the first replica reports its address too: a pair
// started before report_host was configured gets its first replica's
// defaults file rewritten and that replica restarted, once.
//
// The second replica is part of the pair from then on: Reset repairs it,
// Healthy checks it, Down stops it and Purge removes it. A fresh start (Up
// over a broken pair) discards it; the next SecondReplica builds a new one.
// Creating one takes about 1.5s; each server needs about 80MB of memory.
func (p *Pair) SecondReplica(ctx context.Context) (*ReplicaHandle, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(p.Dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("testenv: second replica: %w", err)
	}
	defer unlock()
	if err := p.ensureSecondReplica(ctx); err != nil {
		return nil, fmt.Errorf("testenv: second replica: %w", err)
	}
	if err := p.ensureReportHost(ctx); err != nil {
		return nil, fmt.Errorf("testenv: second replica: first replica's report_host: %w", err)
	}
	return &ReplicaHandle{p: p, id: replica2}, nil
}

// SecondReplicaDSN is the monitoring user on the second replica, or "" when
// the pair has none; it starts nothing (SecondReplica does).
func (p *Pair) SecondReplicaDSN() string {
	if s, err := p.replicaByID(replica2); err == nil {
		return p.monitorDSN(s)
	}
	return ""
}

// ensureSecondReplica reuses a healthy (or repairable) recorded second
// replica and otherwise builds one. The caller holds the dir lock.
func (p *Pair) ensureSecondReplica(ctx context.Context) error {
	if _, err := p.replicaByID(replica2); err == nil {
		if err := p.resetReplica(ctx, replica2, true); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Beyond repair (a datadir from another primary, a broken
		// replication position): build it again.
	}
	return p.createSecondReplica(ctx)
}

func (p *Pair) createSecondReplica(ctx context.Context) (err error) {
	s := newServer(p.Dir, replica2Name, replica2ServerID)
	discard, err := p.startExtra(ctx, &s, false, func(v *Server) { p.Replica2 = v })
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			discard()
		}
	}()
	if err := p.adminOn(ctx, replica2, p.configureReplication); err != nil {
		return fmt.Errorf("start replication: %w", err)
	}
	if err := p.waitThreads(ctx, replica2, bothThreads); err != nil {
		return err
	}
	if err := p.waitCaughtUp(ctx, replica2); err != nil {
		return fmt.Errorf("first catch-up: %w", err)
	}
	return nil
}

// ensureReportHost restarts the first replica with the current defaults
// file when it does not report its address yet (a pair started by an older
// version of this package). report_host is read-only at run time.
func (p *Pair) ensureReportHost(ctx context.Context) error {
	var host sql.NullString
	var port int
	err := p.adminOn(ctx, replica1, func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, "SELECT @@report_host, @@report_port").Scan(&host, &port)
	})
	if err != nil {
		return err
	}
	s, _ := p.replicaByID(replica1)
	if host.String == "127.0.0.1" && port == s.Port {
		return nil
	}
	if err := writeConfig(s, false); err != nil {
		return err
	}
	return p.restartReplica(ctx, replica1, true)
}

// orphanServer finds a server of instance name in dir that runs although no
// state file may record it, from the pid file its defaults file names.
func orphanServer(dir, name string) (Server, bool) {
	s := newServer(dir, name, 0)
	b, err := os.ReadFile(filepath.Join(s.Dir, "mariadbd.pid"))
	if err != nil {
		return s, false
	}
	s.PID, err = strconv.Atoi(strings.TrimSpace(string(b)))
	return s, err == nil && isOurServer(s)
}

// Server is the replica as currently recorded; the zero Server when it is
// the second replica and none exists.
func (h *ReplicaHandle) Server() Server {
	s, _ := h.p.replicaByID(h.id)
	return s
}

// Name is "replica" for the first replica and "replica2" for the second.
func (h *ReplicaHandle) Name() string {
	if h.id == replica1 {
		return "replica"
	}
	return replica2Name
}

// ServerID is the replica's server_id: 2 for the first, 3 for the second.
func (h *ReplicaHandle) ServerID() int { return h.Server().ServerID }

// Port is the replica's TCP port on 127.0.0.1 (its report_port).
func (h *ReplicaHandle) Port() int { return h.Server().Port }

// Addr is "127.0.0.1:<port>", as SHOW SLAVE HOSTS on the primary lists it.
func (h *ReplicaHandle) Addr() string { return h.Server().Addr() }

// DSN is the monitoring user on this replica (see Pair.ReplicaDSN).
func (h *ReplicaHandle) DSN() string { return h.p.monitorDSN(h.Server()) }

// AdminDSN is root on this replica, database Database.
func (h *ReplicaHandle) AdminDSN() string {
	return dsn("root", h.p.AdminPassword, h.Server().Port, Database)
}

// SetDelay sets MASTER_DELAY on this replica; see Pair.SetDelay.
func (h *ReplicaHandle) SetDelay(ctx context.Context, d time.Duration) error {
	return h.p.setDelay(ctx, h.id, d)
}

// StopSQLThread stops this replica's applier; see Pair.StopSQLThread.
func (h *ReplicaHandle) StopSQLThread(ctx context.Context) error {
	return h.p.replicaExec(ctx, h.id, "stop SQL thread", noThread, "STOP SLAVE SQL_THREAD")
}

// StartSQLThread starts this replica's applier again.
func (h *ReplicaHandle) StartSQLThread(ctx context.Context) error {
	return h.p.replicaExec(ctx, h.id, "start SQL thread", sqlThread, "START SLAVE SQL_THREAD")
}

// StopIOThread disconnects this replica from the primary; see
// Pair.StopIOThread. The primary stops listing it in SHOW SLAVE HOSTS when
// it next sends it an event (at once while it writes; see StartWriter). A
// killed replica is unlisted the same way; a frozen one stays listed.
func (h *ReplicaHandle) StopIOThread(ctx context.Context) error {
	return h.p.replicaExec(ctx, h.id, "stop IO thread", noThread, "STOP SLAVE IO_THREAD")
}

// StartIOThread reconnects this replica to the primary.
func (h *ReplicaHandle) StartIOThread(ctx context.Context) error {
	return h.p.replicaExec(ctx, h.id, "start IO thread", ioThread, "START SLAVE IO_THREAD")
}

// Kill SIGKILLs this replica; see Pair.KillReplica.
func (h *ReplicaHandle) Kill() error { return h.p.kill(h.id) }

// Restart starts this replica again; see Pair.RestartReplica.
func (h *ReplicaHandle) Restart(ctx context.Context) error { return h.p.restart(ctx, h.id) }

// Freeze SIGSTOPs this replica; see Pair.FreezeReplica.
func (h *ReplicaHandle) Freeze() error {
	return h.p.signalReplica(h.id, "freeze replica", sigStop)
}

// Thaw SIGCONTs this replica.
func (h *ReplicaHandle) Thaw() error {
	return h.p.signalReplica(h.id, "thaw replica", sigCont)
}

// RevokeMonitorGrant takes SLAVE MONITOR away from the monitoring user on
// this replica; see Pair.RevokeMonitorGrant.
func (h *ReplicaHandle) RevokeMonitorGrant(ctx context.Context) error {
	return h.p.changeMonitorGrant(ctx, h.id, "revoke monitor grant",
		fmt.Sprintf("REVOKE SLAVE MONITOR ON *.* FROM '%s'@'%%'", monitorUser))
}

// RestoreMonitorGrant gives SLAVE MONITOR back on this replica.
func (h *ReplicaHandle) RestoreMonitorGrant(ctx context.Context) error {
	return h.p.changeMonitorGrant(ctx, h.id, "restore monitor grant", grantMonitorStatement())
}

// Status is this replica's SHOW SLAVE STATUS row; see Pair.ReplicaStatus.
func (h *ReplicaHandle) Status(ctx context.Context) (map[string]string, error) {
	return h.p.replicaStatus(ctx, h.id)
}

// WaitCaughtUp waits until this replica has applied everything the primary
// has binlogged so far; see Pair.WaitCaughtUp.
func (h *ReplicaHandle) WaitCaughtUp(ctx context.Context) error {
	return h.p.waitCaughtUp(ctx, h.id)
}

// startExtra starts one more server of the pair (the second replica, the
// second source) from s, which names it: it stops whatever an earlier one
// left running, initialises and starts it, records it through record (under
// p.mu) and in the state file as soon as it runs, so that Down stops it
// whatever happens next, and secures root. On error nothing of it is left
// running; after success, the caller calls discard if its own set-up fails.
func (p *Pair) startExtra(ctx context.Context, s *Server, primary bool, record func(*Server)) (discard func(), err error) {
	p.mu.Lock()
	var old *Server
	for _, x := range []*Server{p.Replica2, p.Source2} {
		if x != nil && x.Name == s.Name {
			old = x
		}
	}
	p.mu.Unlock()
	if old != nil {
		if err := stopServer(*old); err != nil {
			return nil, err
		}
	}
	if orphan, ok := orphanServer(p.Dir, s.Name); ok {
		if err := stopServer(orphan); err != nil {
			return nil, err
		}
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	if p.Mariadbd != "" {
		bins.mariadbd = p.Mariadbd // the same server as the rest of the pair
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	s.Port = ports[0]
	if err := initServer(ctx, bins, *s, primary); err != nil {
		return nil, err
	}
	if err := startWithPortRetry(ctx, bins.mariadbd, s, primary); err != nil {
		return nil, err
	}
	p.mu.Lock()
	record(s)
	p.mu.Unlock()
	discard = func() { // leave nothing running that no state file points to
		_ = stopServer(*s)
		p.mu.Lock()
		record(nil)
		p.mu.Unlock()
		_ = writeState(p)
	}
	if err := writeState(p); err != nil {
		discard()
		return nil, err
	}
	err = withConn(ctx, dsn("root", "", s.Port, ""), func(c *sql.Conn) error {
		return setRootPassword(ctx, c, p.AdminPassword)
	})
	if err != nil {
		discard()
		return nil, fmt.Errorf("secure root on the %s: %w", s.Name, err)
	}
	return discard, nil
}
