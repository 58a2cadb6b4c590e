package testenv_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler/internal/testenv"
)

func TestSecondSourceNamedConnection(t *testing.T) {
	p := testenv.Require(t)
	ctx := testContext(t)

	t0 := time.Now()
	src, err := p.SecondSource(ctx)
	require.NoError(t, err)
	t.Logf("SecondSource took %v", time.Since(t0))
	pid := src.Server().PID
	again, err := p.SecondSource(ctx)
	require.NoError(t, err)
	assert.Equal(t, pid, again.Server().PID, "reused")
	assert.Equal(t, 4, src.ServerID())
	assert.Equal(t, 1, src.GTIDDomainID())
	require.NoError(t, p.Healthy(ctx), "Healthy covers the second source")

	stop, err := src.StartWriter(ctx, 50*time.Millisecond)
	require.NoError(t, err)
	defer stop()
	stopPrimary, err := p.Primary().StartWriter(ctx, 50*time.Millisecond)
	require.NoError(t, err)
	defer stopPrimary()

	require.ErrorContains(t, p.Replica().AddChannel(ctx, "", src), "connection name")
	require.ErrorContains(t, p.Replica().AddChannel(ctx, "x'y", src), "connection name")
	require.NoError(t, p.Replica().AddChannel(ctx, "east", src))
	require.NoError(t, p.Replica().AddChannel(ctx, "east", src), "adding again replaces it")

	rows, err := p.Replica().AllChannelsStatus(ctx)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, "", rows[0]["Connection_name"], "the default connection comes first")
	assert.Equal(t, "east", rows[1]["Connection_name"])
	for _, r := range rows {
		assert.Equal(t, "Yes", r["Slave_IO_Running"])
		assert.Equal(t, "Yes", r["Slave_SQL_Running"])
		assert.Equal(t, "Slave_Pos", r["Using_Gtid"])
		assert.Contains(t, r["Gtid_Slave_Pos"], "1-4-", "the shared position has the second source's domain")
		assert.Contains(t, r["Gtid_Slave_Pos"], "0-1-", "and the primary's")
	}
	assert.Equal(t, src.Port(), atoi(t, rows[1]["Master_Port"]))

	// Each source's heartbeat arrives in its own database on the replica.
	require.NoError(t, p.Replica().Channel("east").WaitCaughtUp(ctx))
	replica := openDB(t, p.Replica().AdminDSN())
	var n int
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+testenv.Source2HeartbeatTable+" WHERE server_id = 4").Scan(&n))
	assert.Equal(t, 1, n)
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+testenv.HeartbeatTable+" WHERE server_id = 4").Scan(&n))
	assert.Equal(t, 0, n, "no clash with the primary's heartbeat table")

	// Per-connection faults leave the default connection alone.
	require.NoError(t, p.Replica().Channel("east").SetDelay(ctx, 3*time.Second))
	east, err := p.Replica().Channel("east").Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "3", east["SQL_Delay"])
	def := replicaStatus(t, ctx, p)
	assert.Equal(t, "0", def["SQL_Delay"])
	require.NoError(t, p.Replica().Channel("east").SetDelay(ctx, 0))

	require.NoError(t, p.Replica().Channel("east").StopSQLThread(ctx))
	east, err = p.Replica().Channel("east").Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "No", east["Slave_SQL_Running"])
	assert.Equal(t, "Yes", replicaStatus(t, ctx, p)["Slave_SQL_Running"])
	require.NoError(t, p.Replica().Channel("east").StartSQLThread(ctx))
	require.NoError(t, p.Replica().Channel("east").StopIOThread(ctx))
	east, err = p.Replica().Channel("east").Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "No", east["Slave_IO_Running"])
	assert.Equal(t, "Yes", replicaStatus(t, ctx, p)["Slave_IO_Running"])
	require.NoError(t, p.Replica().Channel("east").StartIOThread(ctx))

	// The second source's death shows on its connection only.
	require.NoError(t, src.Kill())
	require.Eventually(t, func() bool {
		st, err := p.Replica().Channel("east").Status(ctx)
		return err == nil && st["Slave_IO_Running"] == "Connecting"
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))

	// Reset removes the named connection and restarts the dead source.
	require.NoError(t, p.Reset(ctx))
	rows, err = p.Replica().AllChannelsStatus(ctx)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, "", rows[0]["Connection_name"])
	assert.NotEqual(t, pid, src.Server().PID, "restarted")
	require.NoError(t, p.Healthy(ctx))
	_, err = p.Replica().Channel("east").Status(ctx)
	require.Error(t, err, "no such connection any more")
	require.NoError(t, p.Replica().RemoveChannel(ctx, "east"), "removing a missing connection is fine")

	// Domain 1 stays in gtid_slave_pos, and the default connection still
	// reconnects to the primary, which never logged that domain.
	require.NoError(t, p.Replication().StopIOThread(ctx))
	require.NoError(t, p.Replication().StartIOThread(ctx))
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	st := replicaStatus(t, ctx, p)
	assert.Equal(t, "Yes", st["Slave_IO_Running"], "default connection: %v", st["Last_IO_Error"])
	var pos string
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT @@gtid_slave_pos").Scan(&pos))
	assert.Contains(t, pos, "1-4-")

	// And the connection comes back where it left off.
	require.NoError(t, p.Replica().AddChannel(ctx, "east", src))
	require.NoError(t, p.Replica().RemoveChannel(ctx, "east"))

	// A second source beyond repair is rebuilt, its binlog starts again at
	// 1-4-1, and the replica forgets the old domain 1 so that the
	// connection still works.
	stop()
	require.NoError(t, src.Kill())
	require.NoError(t, os.RemoveAll(src.Server().DataDir))
	t0 = time.Now()
	rebuilt, err := p.SecondSource(ctx)
	require.NoError(t, err)
	t.Logf("rebuilding the second source took %v", time.Since(t0))
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT @@gtid_slave_pos").Scan(&pos))
	assert.NotContains(t, pos, "1-4-")
	stop, err = rebuilt.StartWriter(ctx, 50*time.Millisecond)
	require.NoError(t, err)
	defer stop()
	require.NoError(t, p.Replica().AddChannel(ctx, "east", rebuilt))
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+testenv.Source2HeartbeatTable+" WHERE server_id = 4").Scan(&n))
	assert.Equal(t, 1, n)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
