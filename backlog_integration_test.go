package throttler_test

// Integration test of the backlog on the real pair: what the replica has
// received but not applied, read by ReplicaStatusSource from MariaDB's
// Gtid_IO_Pos and Gtid_Slave_Pos (transactions) and the binary log positions
// (bytes).

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

func TestIntegrationBacklogStoppedApplier(t *testing.T) {
	p := testenv.Require(t)
	primary := openDB(t, p.Primary().AdminDSN())
	monitor := openDB(t, p.Replica().DSN())
	src := throttler.ReplicaStatusSource()
	measure := func() throttler.Measurement {
		t.Helper()
		m, err := src.Measure(ctxTimeout(t, 5*time.Second), monitor)
		require.NoError(t, err)
		return m
	}

	_, err := primary.ExecContext(ctxTimeout(t, 5*time.Second),
		"CREATE TABLE IF NOT EXISTS backlog_probe (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
	require.NoError(t, p.Replication().WaitCaughtUp(ctxTimeout(t, 5*time.Second)))
	m := measure()
	require.True(t, m.Backlog.Known, "caught up: %+v", m)
	require.Equal(t, int64(0), m.Backlog.Transactions, "caught up")
	require.Equal(t, int64(0), m.Backlog.Bytes, "caught up")

	// Nothing but this test writes to the primary (no heartbeat writer), so
	// the count is exact.
	const n = 25
	require.NoError(t, p.Replication().StopSQLThread(ctxTimeout(t, 10*time.Second)))
	for i := 0; i < n; i++ {
		_, err := primary.ExecContext(ctxTimeout(t, 5*time.Second), "INSERT INTO backlog_probe (v) VALUES (?)", "queued while the applier is stopped")
		require.NoError(t, err)
	}
	var binlogPos string
	require.NoError(t, primary.QueryRowContext(ctxTimeout(t, 5*time.Second), "SELECT @@gtid_binlog_pos").Scan(&binlogPos))
	eventually(t, "the receiver has every transaction", 5*time.Second, func() bool {
		st, err := p.Replication().Status(ctxTimeout(t, 5*time.Second))
		require.NoError(t, err)
		return gtidListContains(st["Gtid_IO_Pos"], binlogPos)
	})

	m = measure()
	assert.Contains(t, m.NotFlowing, "applier (SQL) thread not running")
	assert.True(t, m.Backlog.Known, "%+v", m.Backlog)
	assert.Equal(t, int64(n), m.Backlog.Transactions, "every transaction received is queued")
	assert.Positive(t, m.Backlog.Bytes)
	t.Logf("stopped applier, %d transactions committed: backlog %d transactions, %d bytes", n, m.Backlog.Transactions, m.Backlog.Bytes)

	require.NoError(t, p.Replication().StartSQLThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, "the backlog reads 0 once applied", 10*time.Second, func() bool {
		m := measure()
		return m.Backlog.Known && m.Backlog.Transactions == 0 && m.Backlog.Bytes == 0
	})
	assert.Empty(t, measure().NotFlowing)
}

// TestIntegrationBacklogMultiSource queues transactions on the named
// connection "east" (GTID domain 1) only: the backlog counts them, and the
// default connection's domain 0, which east's Gtid_IO_Pos also lists at the
// position it started from, adds nothing.
func TestIntegrationBacklogMultiSource(t *testing.T) {
	p := testenv.Require(t)
	src2, err := p.SecondSource(ctxTimeout(t, 30*time.Second))
	require.NoError(t, err)
	require.NoError(t, p.Replica().AddChannel(ctxTimeout(t, 10*time.Second), eastChannel, src2))
	primary := openDB(t, p.Primary().AdminDSN())
	east := openDB(t, src2.AdminDSN())
	monitor := openDB(t, p.Replica().DSN())

	require.NoError(t, p.Replica().Channel(eastChannel).StopSQLThread(ctxTimeout(t, 10*time.Second)))
	const n = 7
	for i := 0; i < n; i++ {
		_, err := east.ExecContext(ctxTimeout(t, 5*time.Second),
			"INSERT INTO "+testenv.Source2HeartbeatTable+" (ts, server_id) VALUES (?, 4) ON DUPLICATE KEY UPDATE ts = VALUES(ts)",
			time.Now().UTC().Format("2006-01-02T15:04:05.000000"))
		require.NoError(t, err)
	}
	// The default connection keeps applying the primary's writes meanwhile.
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS backlog_probe (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64) NOT NULL)",
		"INSERT INTO backlog_probe (v) VALUES ('applied on the default connection')",
	} {
		_, err := primary.ExecContext(ctxTimeout(t, 5*time.Second), stmt)
		require.NoError(t, err)
	}
	require.NoError(t, p.Replication().WaitCaughtUp(ctxTimeout(t, 5*time.Second)))
	eastPos, err := src2.BinlogPos(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	eventually(t, "east's receiver has every transaction", 5*time.Second, func() bool {
		st, err := p.Replica().Channel(eastChannel).Status(ctxTimeout(t, 5*time.Second))
		require.NoError(t, err)
		return gtidListContains(st["Gtid_IO_Pos"], eastPos)
	})

	m, err := throttler.ReplicaStatusSource().Measure(ctxTimeout(t, 5*time.Second), monitor)
	require.NoError(t, err)
	assert.Equal(t, eastChannel, m.Channel)
	assert.True(t, m.Backlog.Known, "%+v", m.Backlog)
	assert.Equal(t, int64(n), m.Backlog.Transactions, "east's queue only")
	assert.Positive(t, m.Backlog.Bytes)

	require.NoError(t, p.Replica().Channel(eastChannel).StartSQLThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, "the backlog reads 0 once east applied", 10*time.Second, func() bool {
		m, err := throttler.ReplicaStatusSource().Measure(ctxTimeout(t, 5*time.Second), monitor)
		require.NoError(t, err)
		return m.Backlog.Known && m.Backlog.Transactions == 0 && m.Backlog.Bytes == 0
	})
}

// gtidListContains reports whether the MariaDB GTID position list has every
// entry ("domain-server-seq") of want. A connection's Gtid_IO_Pos may list
// other domains too (those it started from).
func gtidListContains(list, want string) bool {
	have := strings.Split(list, ",")
	for _, w := range strings.Split(want, ",") {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
