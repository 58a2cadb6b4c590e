package testenv_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
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
	st, err := p.ReplicaStatus(ctx)
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
	pr := probe{primary: openDB(t, p.PrimaryDSN()), replica: openDB(t, p.ReplicaAdminDSN())}
	_, err := pr.primary.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS testenv_probe (id INT PRIMARY KEY, token VARCHAR(32) NOT NULL)")
	require.NoError(t, err)
	require.NoError(t, p.WaitCaughtUp(ctx))
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
	require.NoError(t, openDB(t, p.PrimaryDSN()).QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName))
	assert.Equal(t, testenv.Database, dbName)

	var readOnly, serverID int
	require.NoError(t, openDB(t, p.ReplicaAdminDSN()).QueryRowContext(ctx, "SELECT @@read_only, @@server_id").Scan(&readOnly, &serverID))
	assert.Equal(t, 1, readOnly, "the replica is read-only, as in production")
	assert.Equal(t, p.Replica.ServerID, serverID)

	monitor := openDB(t, p.ReplicaDSN())
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err)
	require.NotNil(t, st)
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
	assert.Equal(t, "0", st["SQL_Delay"])

	var user string
	require.NoError(t, monitor.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user))
	assert.Equal(t, p.MonitorUser()+"@%", user)
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
	st, err = slaveStatus(ctx, openDB(t, p.PrimaryMonitorDSN()))
	require.NoError(t, err)
	assert.Nil(t, st)
}

func TestWriterAdvancesOnReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	replica := openDB(t, p.ReplicaAdminDSN())
	read := func() string {
		t.Helper()
		require.NoError(t, p.WaitCaughtUp(ctx))
		var ts string
		require.NoError(t, replica.QueryRowContext(ctx,
			"SELECT ts FROM "+testenv.HeartbeatTable+" WHERE server_id = ?", p.Primary.ServerID).Scan(&ts))
		return ts
	}

	stop, err := p.StartWriter(ctx, 20*time.Millisecond)
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

	require.NoError(t, p.StopSQLThread(ctx))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "No", st["Slave_SQL_Running"])
	assert.Equal(t, "Yes", st["Slave_IO_Running"], "the IO thread keeps fetching")
	assert.NotContains(t, st, "Seconds_Behind_Master", "NULL while a thread is stopped")

	token := pr.write(t, ctx)
	time.Sleep(300 * time.Millisecond)
	assert.False(t, pr.applied(t, ctx, token), "nothing is applied while the SQL thread is stopped")

	require.NoError(t, p.StartSQLThread(ctx))
	require.NoError(t, p.WaitCaughtUp(ctx))
	assert.True(t, pr.applied(t, ctx, token))
}

func TestStopStartIOThread(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	pr := newProbe(t, ctx, p)

	require.NoError(t, p.StopIOThread(ctx))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "No", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	token := pr.write(t, ctx)
	time.Sleep(300 * time.Millisecond)
	assert.False(t, pr.applied(t, ctx, token), "nothing arrives while the IO thread is stopped")

	require.NoError(t, p.StartIOThread(ctx))
	require.NoError(t, p.WaitCaughtUp(ctx))
	assert.True(t, pr.applied(t, ctx, token))
}

func TestSetDelay(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	pr := newProbe(t, ctx, p)

	require.Error(t, p.SetDelay(ctx, -time.Second))
	require.NoError(t, p.SetDelay(ctx, 2*time.Second))
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

	require.NoError(t, p.SetDelay(ctx, 0))
	assert.Equal(t, "0", replicaStatus(t, ctx, p)["SQL_Delay"])
}

func TestKillAndRestartReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.ReplicaDSN())
	require.NoError(t, monitor.PingContext(ctx))
	oldPID := p.Replica.PID

	require.NoError(t, p.KillReplica())
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := slaveStatus(qctx, monitor)
	cancel()
	require.Error(t, err, "the replica is gone")
	require.Error(t, p.KillReplica(), "nothing left to kill")
	require.Error(t, p.FreezeReplica(), "nothing to freeze")

	t0 := time.Now()
	require.NoError(t, p.RestartReplica(ctx))
	t.Logf("restart took %v", time.Since(t0))
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err, "the same *sql.DB works again")
	assert.Equal(t, "Yes", st["Slave_IO_Running"])
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])

	loaded, err := testenv.Load(p.Dir)
	require.NoError(t, err)
	assert.NotEqual(t, oldPID, loaded.Replica.PID, "the state file records the new PID")
	require.NoError(t, loaded.Healthy(ctx))
}

func TestFreezeAndThawReplica(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.ReplicaDSN())
	require.NoError(t, monitor.PingContext(ctx))

	require.NoError(t, p.FreezeReplica())
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	t0 := time.Now()
	_, err := slaveStatus(qctx, monitor)
	cancel()
	require.Error(t, err, "a frozen replica does not answer")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(t0), 1500*time.Millisecond, "the deadline is honoured")

	require.NoError(t, p.ThawReplica())
	st, err := slaveStatus(ctx, monitor)
	require.NoError(t, err)
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
}

func TestRevokeAndRestoreMonitorGrant(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.ReplicaDSN())
	monitor.SetMaxIdleConns(4)
	_, err := slaveStatus(ctx, monitor) // leaves a pooled connection with the grant cached
	require.NoError(t, err)

	require.NoError(t, p.RevokeMonitorGrant(ctx))
	_, err = slaveStatus(ctx, monitor)
	var myErr *mysql.MySQLError
	require.ErrorAs(t, err, &myErr, "the pooled *sql.DB sees the revoke")
	assert.EqualValues(t, 1227, myErr.Number)

	require.NoError(t, p.RestoreMonitorGrant(ctx))
	_, err = slaveStatus(ctx, monitor)
	require.NoError(t, err, "and the restore")
}

func TestResetRepairsEveryFault(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)
	monitor := openDB(t, p.ReplicaDSN())
	healthy := func() {
		t.Helper()
		st, err := slaveStatus(ctx, monitor)
		require.NoError(t, err)
		assert.Equal(t, "Yes", st["Slave_IO_Running"])
		assert.Equal(t, "Yes", st["Slave_SQL_Running"])
		assert.Equal(t, "0", st["SQL_Delay"])
		require.NoError(t, p.Healthy(ctx))
	}

	require.NoError(t, p.SetDelay(ctx, 3*time.Second))
	require.NoError(t, p.StopIOThread(ctx))
	require.NoError(t, p.StopSQLThread(ctx))
	require.NoError(t, p.RevokeMonitorGrant(ctx))
	require.NoError(t, p.FreezeReplica())
	require.NoError(t, p.Reset(ctx))
	healthy()

	require.NoError(t, p.KillReplica())
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
		assert.Equal(t, p.Primary.PID, pairs[i].Primary.PID)
		assert.Equal(t, p.Replica.PID, pairs[i].Replica.PID)
		assert.Equal(t, p.ReplicaDSN(), pairs[i].ReplicaDSN())
	}
	assert.Less(t, time.Since(t0), 5*time.Second)
}

func TestUpFromNothingAfterCrashAndDown(t *testing.T) {
	testenv.Require(t) // integration-only; also keeps other test processes off the machine's CPU
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	t.Cleanup(func() { assert.NoError(t, testenv.Purge(dir)) })

	t0 := time.Now()
	p, err := testenv.Up(ctx, dir, t.Logf)
	require.NoError(t, err)
	t.Logf("up from nothing took %v", time.Since(t0))
	require.NoError(t, p.Healthy(ctx))

	// A crashed run leaves a stale state file behind; Up must start afresh.
	for _, pid := range []int{p.Primary.PID, p.Replica.PID} {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	require.Eventually(t, func() bool { _, err := testenv.Load(dir); return err != nil }, 10*time.Second, 20*time.Millisecond)
	t0 = time.Now()
	q, err := testenv.Up(ctx, dir, t.Logf)
	require.NoError(t, err)
	t.Logf("up over a crashed pair took %v", time.Since(t0))
	assert.NotEqual(t, p.Primary.PID, q.Primary.PID)
	require.NoError(t, q.Healthy(ctx))

	require.NoError(t, testenv.Down(dir))
	_, err = testenv.Load(dir)
	require.ErrorContains(t, err, "not running")
	require.NoError(t, testenv.Down(dir), "down is idempotent")
}

func TestLoadAndDownLeaveForeignProcessesAlone(t *testing.T) {
	dir := t.TempDir()
	_, err := testenv.Load(dir)
	require.ErrorContains(t, err, "no pair state")
	require.NoError(t, testenv.Down(dir), "nothing to stop")

	// A state file whose PIDs now belong to another process (here: this
	// test) must neither load nor get that process signalled.
	fake := &testenv.Pair{
		Dir:     dir,
		Primary: testenv.Server{Name: "primary", PID: os.Getpid(), DefaultsFile: filepath.Join(dir, "primary", "my.cnf")},
		Replica: testenv.Server{Name: "replica", PID: os.Getpid(), DefaultsFile: filepath.Join(dir, "replica", "my.cnf")},
	}
	b, err := json.Marshal(fake)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600))
	_, err = testenv.Load(dir)
	require.ErrorContains(t, err, "not running")
	require.NoError(t, testenv.Down(dir))
	require.Error(t, fake.KillReplica(), "a foreign PID is never killed")
	require.Error(t, fake.FreezeReplica(), "nor stopped")
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
