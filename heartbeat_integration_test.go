package throttler_test

// Integration tests of the heartbeat writer and source, and of the Aurora
// source's answer on a server that is not Aurora, against the real MariaDB
// primary and replica of internal/testenv. Without the pair they skip and say
// how to run them.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

func hbOpenDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// hbTable creates nothing: it names a table of its own in the pair's test
// database and drops it (on the primary, so the drop replicates) when the
// test ends.
func hbTable(t *testing.T, primary *sql.DB, what string) string {
	t.Helper()
	name := fmt.Sprintf("%s.hb_%s_%d_%d", testenv.Database, what, os.Getpid(), time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := primary.ExecContext(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return name
}

func hbMeasure(t *testing.T, ctx context.Context, src throttler.LagSource, db *sql.DB) time.Duration {
	t.Helper()
	m, err := src.Measure(ctx, db)
	require.NoError(t, err)
	require.Empty(t, m.NotFlowing)
	return m.Lag
}

// The writer beats on the primary; the source reads the replicated row with
// sub-second lag; a stalled applier reads as a growing lag, which throttles a
// Replication throttler until the replica catches up.
func TestHeartbeatIntegration(t *testing.T) {
	p := testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	primary := hbOpenDB(t, p.Primary().AdminDSN())
	table := hbTable(t, primary, "it")

	w, err := throttler.NewHeartbeat(primary, throttler.HeartbeatWriterConfig{Table: table, Interval: 50 * time.Millisecond, Create: true}, nil)
	require.NoError(t, err)
	require.NoError(t, w.Open(context.Background()))
	t.Cleanup(func() { _ = w.Close() })
	assert.EqualValues(t, p.Primary().ServerID(), w.ServerID(), "the primary's @@server_id")
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))

	// The monitoring user has no SELECT on user tables: the error says
	// which grant is missing.
	src, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: table, SourceServerID: w.ServerID()})
	require.NoError(t, err)
	_, err = src.Measure(ctx, hbOpenDB(t, p.Replica().DSN()))
	require.ErrorIs(t, err, throttler.ErrAccessDenied)
	assert.ErrorContains(t, err, "grant SELECT ON "+table)

	// What replicated is pt-heartbeat's format, from the primary's clock.
	replica := hbOpenDB(t, p.Replica().AdminDSN())
	var ts string
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT ts FROM "+table+" WHERE server_id = ?", w.ServerID()).Scan(&ts))
	_, err = time.Parse("2006-01-02T15:04:05.000000", ts)
	require.NoError(t, err, "ts %q", ts)
	assert.Len(t, ts, 26)

	// Healthy: sub-second, from the replica's own clock.
	var worst time.Duration
	for range 10 {
		worst = max(worst, hbMeasure(t, ctx, src, replica))
		time.Sleep(30 * time.Millisecond)
	}
	t.Logf("healthy replica: worst heartbeat lag of 10 readings %v", worst)
	assert.Less(t, worst, 500*time.Millisecond)

	thr, err := throttler.NewReplicationThrottler(replica, time.Second, nil,
		throttler.WithLagSource(src),
		throttler.WithInterval(100*time.Millisecond),
		throttler.WithStaleAfter(600*time.Millisecond),
		throttler.WithQueryTimeout(300*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, thr.Open(context.Background()))
	t.Cleanup(func() { _ = thr.Close() })
	assert.False(t, thr.IsThrottled(), thr.ThrottleReason())

	// Stall the applier: the writer keeps writing, the row on the replica
	// stays, and the lag grows with the replica's clock.
	require.NoError(t, p.Replication().StopSQLThread(ctx))
	stalled := time.Now()
	require.Eventually(t, thr.IsThrottled, 5*time.Second, 5*time.Millisecond, "the throttler throttles on the heartbeat lag")
	assert.Contains(t, thr.ThrottleReason(), "replica lag")
	assert.Contains(t, thr.ThrottleReason(), ">= 1s")
	t.Logf("throttled %v after the applier stopped: %s", time.Since(stalled).Round(time.Millisecond), thr.ThrottleReason())
	time.Sleep(time.Until(stalled.Add(1500 * time.Millisecond)))
	first := hbMeasure(t, ctx, src, replica)
	t.Logf("applier stopped %v ago: heartbeat lag %v", time.Since(stalled).Round(time.Millisecond), first)
	assert.Greater(t, first, time.Second)
	assert.True(t, thr.IsThrottled(), "still throttled while the stall lasts")
	time.Sleep(200 * time.Millisecond)
	second := hbMeasure(t, ctx, src, replica)
	t.Logf("applier stopped %v ago: heartbeat lag %v", time.Since(stalled).Round(time.Millisecond), second)
	assert.Greater(t, second, first, "a stalled replica's lag grows, it does not freeze")
	assert.Greater(t, w.Beats(), int64(30), "the writer kept beating on the primary")
	assert.NoError(t, w.LastError())

	// A copier waiting on the throttler is released when the replica has
	// caught up.
	waited := make(chan error, 1)
	go func() { waited <- thr.Wait(ctx) }()
	require.NoError(t, p.Replication().StartSQLThread(ctx))
	restarted := time.Now()
	select {
	case err := <-waited:
		require.NoError(t, err, "the waiter is released by the throttle clearing")
	case <-time.After(15 * time.Second):
		t.Fatalf("still throttled 15s after the applier restarted: %s", thr.ThrottleReason())
	}
	t.Logf("throttle cleared %v after the applier restarted", time.Since(restarted).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		m, err := src.Measure(ctx, replica)
		return err == nil && m.Lag < 500*time.Millisecond
	}, 10*time.Second, 20*time.Millisecond)
	t.Logf("caught up: heartbeat lag %v, %v after the restart", hbMeasure(t, ctx, src, replica), time.Since(restarted).Round(time.Millisecond))

	// The newest-row form reads the same row (it is the only writer).
	newest, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: table})
	require.NoError(t, err)
	assert.Less(t, hbMeasure(t, ctx, newest, replica), 500*time.Millisecond)
}

// The errors a misconfigured heartbeat gives on a real server.
func TestHeartbeatErrorsIntegration(t *testing.T) {
	p := testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	primary := hbOpenDB(t, p.Primary().AdminDSN())
	replica := hbOpenDB(t, p.Replica().AdminDSN())

	// No table: the writer fails at Open unless asked to create it, and
	// the source is unavailable.
	missing := hbTable(t, primary, "missing")
	w, err := throttler.NewHeartbeat(primary, throttler.HeartbeatWriterConfig{Table: missing}, nil)
	require.NoError(t, err)
	err = w.Open(context.Background())
	require.ErrorIs(t, err, throttler.ErrUnavailable)
	assert.ErrorContains(t, err, "heartbeat table "+missing+" does not exist on the primary")
	assert.Zero(t, w.Beats())
	require.NoError(t, w.Close())

	src, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: missing})
	require.NoError(t, err)
	_, err = src.Measure(ctx, replica)
	require.ErrorIs(t, err, throttler.ErrUnavailable)
	assert.ErrorContains(t, err, "heartbeat table "+missing+" does not exist on this server")

	// A table nobody writes: an error naming the table and the server id.
	empty := hbTable(t, primary, "empty")
	w, err = throttler.NewHeartbeat(primary, throttler.HeartbeatWriterConfig{Table: empty, Create: true, ServerID: 4242}, nil)
	require.NoError(t, err)
	require.NoError(t, w.Open(context.Background()))
	require.NoError(t, w.Close())
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	for _, c := range []struct {
		id   uint32
		want string
	}{
		{7, "heartbeat table " + empty + " has no row for server_id 7"},
		{4242, ""}, // the row the writer left
	} {
		src, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: empty, SourceServerID: c.id})
		require.NoError(t, err)
		m, err := src.Measure(ctx, replica)
		if c.want != "" {
			assert.ErrorContains(t, err, c.want)
			assert.NotErrorIs(t, err, throttler.ErrNotReplica)
			continue
		}
		require.NoError(t, err, "server_id %d", c.id)
		assert.Greater(t, m.Lag, time.Duration(0), "a closed writer's row ages")
	}
	_, err = primary.ExecContext(ctx, "DELETE FROM "+empty)
	require.NoError(t, err)
	require.NoError(t, p.Replication().WaitCaughtUp(ctx))
	newest, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: empty})
	require.NoError(t, err)
	_, err = newest.Measure(ctx, replica)
	assert.ErrorContains(t, err, "heartbeat table "+empty+" has no row: no heartbeat was ever written")
}

// MariaDB has no information_schema.replica_host_status: the Aurora source
// fails at Open with ErrUnavailable naming the table, and detection does not
// mistake the server for Aurora.
func TestAuroraSourceOnMariaDB(t *testing.T) {
	p := testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replica := hbOpenDB(t, p.Replica().DSN())

	aurora, err := throttler.AuroraSource(throttler.AuroraConfig{})
	require.NoError(t, err)
	thr, err := throttler.NewReplicationThrottler(replica, time.Second, nil,
		throttler.WithLagSource(aurora),
		throttler.WithInterval(100*time.Millisecond))
	require.NoError(t, err)
	err = thr.Open(ctx)
	require.ErrorIs(t, err, throttler.ErrUnavailable)
	assert.ErrorContains(t, err, "information_schema.replica_host_status")
	var me *mysql.MySQLError
	require.True(t, errors.As(err, &me), "%v", err)
	t.Logf("MariaDB's answer: error %d: %s", me.Number, me.Message)
	assert.Contains(t, []uint16{1109, 1146}, me.Number)
	assert.False(t, thr.IsThrottled())
	require.NoError(t, thr.Close())

	f, err := throttler.DetectFlavor(ctx, replica)
	require.NoError(t, err)
	assert.True(t, f.MariaDB)
	assert.False(t, f.Aurora)
	assert.NotEqual(t, aurora.String(), throttler.DefaultLagSource(f).String())

	// What DetectFlavor relies on for MySQL servers: a server without the
	// variable answers with error 1193.
	var v sql.NullString
	err = replica.QueryRowContext(ctx, "SELECT @@aurora_version").Scan(&v)
	require.True(t, errors.As(err, &me), "%v", err)
	assert.EqualValues(t, 1193, me.Number)
}
