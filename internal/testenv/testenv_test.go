package testenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// slaveStatus reads SHOW SLAVE STATUS through db (the monitor user's view):
// nil for no row, NULL columns absent.
func slaveStatus(ctx context.Context, db *sql.DB) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	st := map[string]string{}
	for i, c := range cols {
		if vals[i].Valid {
			st[c] = vals[i].String
		}
	}
	return st, rows.Err()
}

func replicaStatus(t *testing.T, ctx context.Context, p *testenv.Pair) map[string]string {
	t.Helper()
	st, err := p.Replication().Status(ctx)
	require.NoError(t, err)
	require.NotNil(t, st, "replication is not configured")
	return st
}

// probe writes a fresh token on the primary and returns a function that
// reports whether the replica has applied it.
type probe struct {
	primary, replica *sql.DB
}

func newProbe(t *testing.T, ctx context.Context, p *testenv.Pair) probe {
	t.Helper()
	pr := probe{primary: openDB(t, p.Primary().AdminDSN()), replica: openDB(t, p.Replica().AdminDSN())}
	_, err := pr.primary.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS testenv_probe (id INT PRIMARY KEY, token VARCHAR(32) NOT NULL)")
	require.NoError(t, err)
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	return pr
}

func (pr probe) write(t *testing.T, ctx context.Context) string {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	token := hex.EncodeToString(b)
	_, err := pr.primary.ExecContext(ctx, "REPLACE INTO testenv_probe VALUES (1, ?)", token)
	require.NoError(t, err)
	return token
}

func (pr probe) applied(t *testing.T, ctx context.Context, token string) bool {
	t.Helper()
	var n int
	err := pr.replica.QueryRowContext(ctx, "SELECT COUNT(*) FROM testenv_probe WHERE token = ?", token).Scan(&n)
	require.NoError(t, err)
	return n == 1
}

func TestUsersAndDSNs(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)

	var dbName string
	require.NoError(t, openDB(t, p.Primary().AdminDSN()).QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName))
	assert.Equal(t, testenv.Database, dbName)

	var readOnly, serverID int
	require.NoError(t, openDB(t, p.Replica().AdminDSN()).QueryRowContext(ctx, "SELECT @@read_only, @@server_id").Scan(&readOnly, &serverID))
	assert.Equal(t, 1, readOnly, "the replica is read-only, as in production")
	assert.Equal(t, p.Replica().ServerID(), serverID)

	monitor := openDB(t, p.Replica().DSN())
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err)
	require.NotNil(t, st)
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
	assert.Equal(t, "0", st["SQL_Delay"])

	var user string
	require.NoError(t, monitor.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user))
	assert.Equal(t, testenv.MonitorUser+"@%", user)
	rows, err := monitor.QueryContext(ctx, "SHOW GRANTS")
	require.NoError(t, err)
	var grants []string
	for rows.Next() {
		var g string
		require.NoError(t, rows.Scan(&g))
		grants = append(grants, g)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.Len(t, grants, 2, "exactly what a throttler needs: %q", grants)
	assert.Contains(t, grants[0], "GRANT SLAVE MONITOR ON *.*")
	assert.Contains(t, grants[1], "GRANT SELECT ON `performance_schema`.*")

	var myErr *mysql.MySQLError
	_, err = monitor.ExecContext(ctx, "SELECT * FROM "+testenv.HeartbeatTable)
	require.ErrorAs(t, err, &myErr)
	assert.EqualValues(t, 1142, myErr.Number, "the monitor user reads no user data")

	// Pointed at the primary, every status form is empty, with no error.
	st, err = slaveStatus(ctx, openDB(t, p.Primary().DSN()))
	require.NoError(t, err)
	assert.Nil(t, st)
}

func TestWriterAdvancesOnReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	replica := openDB(t, p.Replica().AdminDSN())
	read := func() string {
		t.Helper()
		require.NoError(t, p.Replication().WaitCaughtUp(ctx))
		var ts string
		require.NoError(t, replica.QueryRowContext(ctx,
			"SELECT ts FROM "+testenv.HeartbeatTable+" WHERE server_id = ?", p.Primary().ServerID()).Scan(&ts))
		return ts
	}

	stop, err := p.Primary().StartWriter(ctx, 20*time.Millisecond)
	require.NoError(t, err)
	defer stop()
	first := read()
	_, err = time.Parse("2006-01-02T15:04:05.000000", first)
	require.NoError(t, err, "pt-heartbeat format")
	time.Sleep(200 * time.Millisecond)
	second := read()
	assert.Greater(t, second, first, "the heartbeat advances on the replica")

	stop()
	stop() // idempotent
	stopped := read()
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, stopped, read(), "no writes after stop")
}

func TestStopStartSQLThread(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	pr := newProbe(t, ctx, p)

	require.NoError(t, p.Replication().StopSQLThread(ctx))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "No", st["Slave_SQL_Running"])
	assert.Equal(t, "Yes", st["Slave_IO_Running"], "the IO thread keeps fetching")
	assert.NotContains(t, st, "Seconds_Behind_Master", "NULL while a thread is stopped")

	token := pr.write(t, ctx)
	time.Sleep(300 * time.Millisecond)
	assert.False(t, pr.applied(t, ctx, token), "nothing is applied while the SQL thread is stopped")

	require.NoError(t, p.Replication().StartSQLThread(ctx))
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	assert.True(t, pr.applied(t, ctx, token))
}

func TestReplicaExecOneSessionWithoutBinlog(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	replica := openDB(t, p.Replica().AdminDSN())
	const table = testenv.Database + ".testenv_replica_only"
	t.Cleanup(func() { _ = p.Replica().ExecNoBinlog(context.Background(), "drop", "DROP TABLE IF EXISTS "+table) })

	require.NoError(t, p.Replica().ExecNoBinlog(ctx, "create", "SET @step = 1",
		"CREATE TABLE "+table+" ENGINE=InnoDB AS SELECT @step AS step, @@SESSION.sql_log_bin AS log_bin"))
	var step, logBin int
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT step, log_bin FROM "+table).Scan(&step, &logBin))
	assert.Equal(t, 1, step, "the statements share one session")
	assert.Equal(t, 0, logBin, "sql_log_bin is off in that session")

	err := p.Replica().ExecNoBinlog(ctx, "bad", "SELECT * FROM no_such_table_here")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bad")
}

func TestStopStartIOThread(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	pr := newProbe(t, ctx, p)

	require.NoError(t, p.Replication().StopIOThread(ctx))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "No", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	token := pr.write(t, ctx)
	time.Sleep(300 * time.Millisecond)
	assert.False(t, pr.applied(t, ctx, token), "nothing arrives while the IO thread is stopped")

	require.NoError(t, p.Replication().StartIOThread(ctx))
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	assert.True(t, pr.applied(t, ctx, token))
}

func TestSetDelay(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	pr := newProbe(t, ctx, p)

	require.Error(t, p.Replication().SetDelay(ctx, -time.Second))
	require.NoError(t, p.Replication().SetDelay(ctx, 2*time.Second))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "2", st["SQL_Delay"])
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	// MariaDB delays from the event's whole-second timestamp, so a write
	// late in its second arrives up to 1s early: write just after a second
	// starts to see the full delay.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
	token := pr.write(t, ctx)
	t0 := time.Now()
	for !pr.applied(t, ctx, token) {
		require.Less(t, time.Since(t0), 8*time.Second, "the delayed write never arrived")
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	t.Logf("a write took %v to appear with MASTER_DELAY=2", took)
	assert.GreaterOrEqual(t, took, 1500*time.Millisecond)
	assert.Less(t, took, 4*time.Second)

	require.NoError(t, p.Replication().SetDelay(ctx, 0))
	assert.Equal(t, "0", replicaStatus(t, ctx, p)["SQL_Delay"])
}

func TestKillAndRestartReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.Replica().DSN())
	require.NoError(t, monitor.PingContext(ctx))
	oldPID := p.Replica().Server().PID

	require.NoError(t, p.Replica().Kill())
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := slaveStatus(qctx, monitor)
	cancel()
	require.Error(t, err, "the replica is gone")
	require.Error(t, p.Replica().Kill(), "nothing left to kill")
	require.Error(t, p.Replica().Freeze(), "nothing to freeze")

	t0 := time.Now()
	require.NoError(t, p.Replica().Restart(ctx))
	t.Logf("restart took %v", time.Since(t0))
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err, "the same *sql.DB works again")
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	loaded, err := testenv.Load(p.Dir)
	require.NoError(t, err)
	assert.NotEqual(t, oldPID, loaded.Replica().Server().PID, "the state file records the new PID")
	require.NoError(t, loaded.Healthy(ctx))
}

func TestFreezeAndThawReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.Replica().DSN())
	require.NoError(t, monitor.PingContext(ctx))

	require.NoError(t, p.Replica().Freeze())
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	t0 := time.Now()
	_, err := slaveStatus(qctx, monitor)
	cancel()
	require.Error(t, err, "a frozen replica does not answer")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(t0), 1500*time.Millisecond, "the deadline is honoured")

	require.NoError(t, p.Replica().Thaw())
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err)
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
}

func TestRevokeAndRestoreMonitorGrant(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.Replica().DSN())
	monitor.SetMaxIdleConns(4)
	_, err := slaveStatus(ctx, monitor) // leaves a pooled connection with the grant cached
	require.NoError(t, err)

	require.NoError(t, p.Replica().RevokeMonitorGrant(ctx))
	_, err = slaveStatus(ctx, monitor)
	var myErr *mysql.MySQLError
	require.ErrorAs(t, err, &myErr, "the pooled *sql.DB sees the revoke")
	assert.EqualValues(t, 1227, myErr.Number)

	require.NoError(t, p.Replica().RestoreMonitorGrant(ctx))
	_, err = slaveStatus(ctx, monitor)
	require.NoError(t, err, "and the restore")
}

func TestResetRepairsEveryFault(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.Replica().DSN())
	healthy := func() {
		t.Helper()
		st, err := slaveStatus(ctx, monitor)
		require.NoError(t, err)
		assert.Equal(t, "Yes", st["Slave_IO_Running"])
		assert.Equal(t, "Yes", st["Slave_SQL_Running"])
		assert.Equal(t, "0", st["SQL_Delay"])
		require.NoError(t, p.Healthy(ctx))
	}

	require.NoError(t, p.Replication().SetDelay(ctx, 3*time.Second))
	require.NoError(t, p.Replication().StopIOThread(ctx))
	require.NoError(t, p.Replication().StopSQLThread(ctx))
	require.NoError(t, p.Replica().RevokeMonitorGrant(ctx))
	require.NoError(t, p.Replica().Freeze())
	require.NoError(t, p.Reset(ctx))
	healthy()

	require.NoError(t, p.Replica().Kill())
	require.NoError(t, p.Reset(ctx))
	healthy()
}

func TestUpReusesTheRunningPair(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)

	// Two callers at once (as two test processes would be) are serialised
	// by the dir lock and both attach to the same servers.
	var wg sync.WaitGroup
	pairs := make([]*testenv.Pair, 2)
	errs := make([]error, 2)
	t0 := time.Now()
	for i := range pairs {
		wg.Go(func() { pairs[i], errs[i] = testenv.Up(ctx, p.Dir, t.Logf) })
	}
	wg.Wait()
	t.Logf("two concurrent Up calls on a running pair took %v", time.Since(t0))
	for i := range pairs {
		require.NoError(t, errs[i])
		assert.Equal(t, p.Primary().Server().PID, pairs[i].Primary().Server().PID)
		assert.Equal(t, p.Replica().Server().PID, pairs[i].Replica().Server().PID)
		assert.Equal(t, p.Replica().DSN(), pairs[i].Replica().DSN())
	}
	assert.Less(t, time.Since(t0), 5*time.Second)
}

func TestUpFromNothingAfterCrashAndDown(t *testing.T) {
	testenv.Require(t) // integration-only; also keeps other test processes off the machine's CPU
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	t.Cleanup(func() {
		assert.NoError(t, testenv.Purge(dir))
		_, err := os.Stat(dir)
		assert.ErrorIs(t, err, os.ErrNotExist, "Purge removed every instance, the second replica's too")
	})

	t0 := time.Now()
	p, err := testenv.Up(ctx, dir, t.Logf)
	require.NoError(t, err)
	t.Logf("up from nothing took %v", time.Since(t0))
	require.NoError(t, p.Healthy(ctx))
	assert.Empty(t, p.SecondReplicaDSN(), "no second replica until asked for")
	assert.Equal(t, map[int]slaveHost{p.Replica().ServerID(): {ServerID: p.Replica().ServerID(), Host: "127.0.0.1", Port: p.Replica().Port(), MasterID: p.Primary().ServerID()}},
		slaveHosts(t, ctx, p), "the primary lists the replica at its address")
	old2, err := p.SecondReplica(ctx)
	require.NoError(t, err)
	old2PID := old2.Server().PID

	// A crashed run leaves a stale state file behind; Up must start afresh,
	// and the second replica (of the dead primary) goes with the old pair.
	oldPrimaryPID := p.Primary().Server().PID
	for _, pid := range []int{oldPrimaryPID, p.Replica().Server().PID} {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	require.Eventually(t, func() bool { _, err := testenv.Load(dir); return err != nil }, 10*time.Second, 20*time.Millisecond)
	t0 = time.Now()
	q, err := testenv.Up(ctx, dir, t.Logf)
	require.NoError(t, err)
	t.Logf("up over a crashed pair took %v", time.Since(t0))
	assert.NotEqual(t, oldPrimaryPID, q.Primary().Server().PID)
	assert.Empty(t, q.SecondReplicaDSN(), "a fresh pair has no second replica")
	assert.False(t, pidAlive(old2PID), "the old second replica was stopped")
	require.NoError(t, q.Healthy(ctx))

	// Down stops all three servers.
	h, err := q.SecondReplica(ctx)
	require.NoError(t, err)
	require.NoError(t, q.Healthy(ctx))
	pids := []int{q.Primary().Server().PID, q.Replica().Server().PID, h.Server().PID}
	require.NoError(t, testenv.Down(dir))
	for _, pid := range pids {
		assert.False(t, pidAlive(pid), "pid %d still runs after Down", pid)
	}
	_, err = testenv.Load(dir)
	require.ErrorContains(t, err, "not running")
	require.NoError(t, testenv.Down(dir), "down is idempotent")
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// slaveHost is one row of SHOW SLAVE HOSTS on the primary.
type slaveHost struct {
	ServerID, Port, MasterID int
	Host                     string
}

func slaveHosts(t *testing.T, ctx context.Context, p *testenv.Pair) map[int]slaveHost {
	t.Helper()
	out, err := querySlaveHosts(ctx, openDB(t, p.Primary().AdminDSN()))
	require.NoError(t, err)
	return out
}

func querySlaveHosts(ctx context.Context, primary *sql.DB) (map[int]slaveHost, error) {
	rows, err := primary.QueryContext(ctx, "SHOW SLAVE HOSTS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if want := []string{"Server_id", "Host", "Port", "Master_id"}; !slices.Equal(cols, want) {
		return nil, fmt.Errorf("columns %q, want MariaDB 10.11's %q", cols, want)
	}
	out := map[int]slaveHost{}
	for rows.Next() {
		var h slaveHost
		if err := rows.Scan(&h.ServerID, &h.Host, &h.Port, &h.MasterID); err != nil {
			return nil, err
		}
		out[h.ServerID] = h
	}
	return out, rows.Err()
}

// secondReplica returns the pair's second replica, creating it if needed.
func secondReplica(t *testing.T, ctx context.Context, p *testenv.Pair) *testenv.Node {
	t.Helper()
	t0 := time.Now()
	h, err := p.SecondReplica(ctx)
	require.NoError(t, err)
	t.Logf("SecondReplica took %v", time.Since(t0).Round(time.Millisecond))
	return h
}

func TestSecondReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	h := secondReplica(t, ctx, p)
	first := p.Replica()

	assert.Equal(t, "replica2", h.Name())
	assert.Equal(t, 3, h.ServerID())
	assert.Equal(t, p.Replica().ServerID(), first.ServerID())
	assert.Equal(t, p.Replica().Port(), first.Port())
	assert.Equal(t, p.Replica().DSN(), first.DSN())
	assert.NotEqual(t, p.Replica().Port(), h.Port())
	assert.NotEqual(t, p.Primary().Port(), h.Port())
	assert.Equal(t, h.DSN(), p.SecondReplicaDSN())

	var readOnly, serverID, reportPort int
	var reportHost string
	require.NoError(t, openDB(t, h.AdminDSN()).QueryRowContext(ctx,
		"SELECT @@read_only, @@server_id, @@report_host, @@report_port").Scan(&readOnly, &serverID, &reportHost, &reportPort))
	assert.Equal(t, 1, readOnly)
	assert.Equal(t, 3, serverID)
	assert.Equal(t, "127.0.0.1", reportHost)
	assert.Equal(t, h.Port(), reportPort)

	// The monitoring user and its grants came over by replication.
	st, err := slaveStatus(ctx, openDB(t, h.DSN()))
	require.NoError(t, err)
	require.NotNil(t, st)
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
	assert.Equal(t, "Slave_Pos", st["Using_Gtid"], "GTID replication")
	assert.Equal(t, "127.0.0.1", st["Master_Host"])
	assert.Equal(t, strconv.Itoa(p.Primary().Port()), st["Master_Port"])

	// The primary lists both replicas at their addresses.
	hosts := slaveHosts(t, ctx, p)
	require.Len(t, hosts, 2, "%v", hosts)
	for _, r := range []*testenv.Node{first, h} {
		got := hosts[r.ServerID()]
		assert.Equal(t, slaveHost{ServerID: r.ServerID(), Host: "127.0.0.1", Port: r.Port(), MasterID: p.Primary().ServerID()}, got)
	}

	// Writes reach the second replica.
	stop, err := p.Primary().StartWriter(ctx, 20*time.Millisecond)
	require.NoError(t, err)
	defer stop()
	require.NoError(t, h.Replication().WaitCaughtUp(ctx))
	var ts string
	require.NoError(t, openDB(t, h.AdminDSN()).QueryRowContext(ctx,
		"SELECT ts FROM "+testenv.HeartbeatTable+" WHERE server_id = ?", p.Primary().ServerID()).Scan(&ts))
	assert.NotEmpty(t, ts)

	// A second call reuses the running replica, and the state file records it.
	pid := h.Server().PID
	t0 := time.Now()
	again := secondReplica(t, ctx, p)
	assert.Equal(t, pid, again.Server().PID)
	assert.Less(t, time.Since(t0), 5*time.Second)
	loaded, err := testenv.Load(p.Dir)
	require.NoError(t, err)
	require.NotNil(t, loaded.Instances["replica2"])
	assert.Equal(t, pid, loaded.Instances["replica2"].PID)
	require.NoError(t, loaded.Healthy(ctx))
}

func TestSecondReplicaHandles(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	h := secondReplica(t, ctx, p)
	monitor := openDB(t, h.DSN())
	status := func(r *testenv.Node) map[string]string {
		t.Helper()
		st, err := r.Replication().Status(ctx)
		require.NoError(t, err)
		require.NotNil(t, st)
		return st
	}

	// Delay acts on the second replica only.
	require.Error(t, h.Replication().SetDelay(ctx, -time.Second))
	require.NoError(t, h.Replication().SetDelay(ctx, 2*time.Second))
	assert.Equal(t, "2", status(h)["SQL_Delay"])
	assert.Equal(t, "0", status(p.Replica())["SQL_Delay"], "the first replica is untouched")
	require.NoError(t, h.Replication().SetDelay(ctx, 0))
	assert.Equal(t, "0", status(h)["SQL_Delay"])

	require.NoError(t, h.Replication().StopSQLThread(ctx))
	assert.Equal(t, "No", status(h)["Slave_SQL_Running"])
	assert.Equal(t, "Yes", status(p.Replica())["Slave_SQL_Running"])
	require.NoError(t, h.Replication().StartSQLThread(ctx))
	assert.Equal(t, "Yes", status(h)["Slave_SQL_Running"])

	// The primary unlists a replica whose IO thread stopped when it next
	// sends it something: with writes, at once; without, not for a while.
	stop, err := p.Primary().StartWriter(ctx, 20*time.Millisecond)
	require.NoError(t, err)
	primary := openDB(t, p.Primary().AdminDSN())
	listed := func() bool {
		hosts, err := querySlaveHosts(ctx, primary)
		_, ok := hosts[h.ServerID()]
		return err == nil && ok
	}
	require.NoError(t, h.Replication().StopIOThread(ctx))
	assert.Equal(t, "No", status(h)["Slave_IO_Running"])
	require.Eventually(t, func() bool { return !listed() }, 5*time.Second, 10*time.Millisecond,
		"a replica without an IO thread is not listed")
	require.NoError(t, h.Replication().StartIOThread(ctx))
	assert.True(t, listed(), "listed again once its IO thread runs")
	stop()

	require.NoError(t, h.Freeze())
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = slaveStatus(qctx, monitor)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "a frozen replica does not answer")
	require.NoError(t, h.Thaw())
	_, err = slaveStatus(ctx, monitor)
	require.NoError(t, err)

	require.NoError(t, h.RevokeMonitorGrant(ctx))
	_, err = slaveStatus(ctx, monitor)
	var myErr *mysql.MySQLError
	require.ErrorAs(t, err, &myErr)
	assert.EqualValues(t, 1227, myErr.Number)
	_, err = slaveStatus(ctx, openDB(t, p.Replica().DSN()))
	require.NoError(t, err, "the first replica keeps its grant")
	require.NoError(t, h.RestoreMonitorGrant(ctx))

	oldPID := h.Server().PID
	require.NoError(t, h.Kill())
	require.Error(t, h.Kill(), "nothing left to kill")
	require.NoError(t, p.Replication().WaitCaughtUp(ctx), "the first replica is unaffected")
	require.NoError(t, h.Restart(ctx))
	assert.NotEqual(t, oldPID, h.Server().PID)
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err, "the same *sql.DB works again")
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	// Reset repairs every fault on the second replica too.
	require.NoError(t, h.Replication().SetDelay(ctx, 3*time.Second))
	require.NoError(t, h.Replication().StopIOThread(ctx))
	require.NoError(t, h.RevokeMonitorGrant(ctx))
	require.NoError(t, h.Freeze())
	require.NoError(t, p.Reset(ctx))
	st = status(h)
	assert.Equal(t, "0", st["SQL_Delay"])
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	require.NoError(t, p.Healthy(ctx))
	require.NoError(t, h.Kill())
	require.NoError(t, p.Reset(ctx))
	require.NoError(t, p.Healthy(ctx))
}

func TestLoadAndDownLeaveForeignProcessesAlone(t *testing.T) {
	dir := t.TempDir()
	_, err := testenv.Load(dir)
	require.ErrorContains(t, err, "no pair state")
	require.NoError(t, testenv.Down(dir), "nothing to stop")

	// A state file whose PIDs now belong to another process (here: this
	// test) must neither load nor get that process signalled.
	fake := &testenv.Pair{Dir: dir, Instances: map[string]*testenv.Server{
		"primary": {Name: "primary", PID: os.Getpid(), DefaultsFile: filepath.Join(dir, "primary", "my.cnf")},
		"replica": {Name: "replica", PID: os.Getpid(), DefaultsFile: filepath.Join(dir, "replica", "my.cnf")},
	}}
	b, err := json.Marshal(fake)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600))
	_, err = testenv.Load(dir)
	require.ErrorContains(t, err, "not running", "the state loads (and is then refused for its dead primary)")
	require.NoError(t, testenv.Down(dir))
	require.Error(t, fake.Replica().Kill(), "a foreign PID is never killed")
	require.Error(t, fake.Replica().Freeze(), "nor stopped")

	// The same for a recorded second replica.
	fake.Instances["replica2"] = &testenv.Server{Name: "replica2", PID: os.Getpid(), DefaultsFile: filepath.Join(dir, "replica2", "my.cnf")}
	b, err = json.Marshal(fake)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600))
	require.NoError(t, testenv.Down(dir))
	require.NoError(t, testenv.Purge(dir))
}

func TestRequireSkipsWithoutAPair(t *testing.T) {
	t.Setenv(testenv.EnvDir, "")
	var skipped bool
	t.Run("no dir", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		testenv.Require(t)
	})
	assert.True(t, skipped)

	t.Setenv(testenv.EnvDir, t.TempDir())
	t.Setenv(testenv.EnvRequired, "0")
	t.Run("dir without a pair", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		testenv.Require(t)
	})
	assert.True(t, skipped)
}
