package throttler_test

// Integration tests: the replication throttler against a real MariaDB primary
// and replica started by internal/testenv (`make test` starts them), with
// real lag made by real replication and real faults. Without the pair they
// skip and say how to run them.

import (
	"context"
	"database/sql"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// Integration settings: poll every 100ms, trust a measurement for 600ms.
const (
	itInterval     = 100 * time.Millisecond
	itStaleAfter   = 600 * time.Millisecond
	itQueryTimeout = 300 * time.Millisecond
)

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// openReplication opens a throttler on the pair's replica, as the monitoring
// user, with the default (detected) source, and closes it at cleanup.
func openReplication(t *testing.T, p *testenv.Pair, tolerance time.Duration, opts ...throttler.Option) (*throttler.Replication, *sql.DB) {
	t.Helper()
	db := openDB(t, p.Replica().DSN())
	all := append([]throttler.Option{
		throttler.WithInterval(itInterval),
		throttler.WithStaleAfter(itStaleAfter),
		throttler.WithQueryTimeout(itQueryTimeout),
	}, opts...)
	r, err := throttler.NewReplicationThrottler(db, tolerance, nil, all...)
	require.NoError(t, err)
	// Open's context bounds the monitor's life: not a timeout.
	require.NoError(t, r.Open(context.Background()))
	t.Cleanup(func() { _ = r.Close() })
	return r, db
}

// writer keeps the primary writing, so replica lag is visible.
func writer(t *testing.T, p *testenv.Pair) {
	t.Helper()
	stop, err := p.Primary().StartWriter(context.Background(), 100*time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(stop)
}

// eventually waits for cond and logs how long it took.
func eventually(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	require.Eventually(t, cond, within, 10*time.Millisecond, what)
	took := time.Since(start)
	t.Logf("%s: after %v", what, took.Round(time.Millisecond))
	return took
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestIntegrationHealthyReplica(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second)
	assert.Equal(t, "replica status", r.Source().String(), "MariaDB gets the replica status source")
	// Several polls, all healthy.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		require.False(t, r.IsThrottled(), r.ThrottleReason())
		time.Sleep(50 * time.Millisecond)
	}
	assert.Less(t, r.Lag(), 2*time.Second)
	t.Logf("healthy: lag %v", r.Lag())
}

func TestIntegrationDelayedReplica(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second)
	require.False(t, r.IsThrottled(), r.ThrottleReason())

	require.NoError(t, p.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 5*time.Second))
	eventually(t, "throttled by a 5s MASTER_DELAY", 15*time.Second, r.IsThrottled)
	eventually(t, "reason names the lag", 5*time.Second, func() bool { return strings.HasPrefix(r.ThrottleReason(), "replica lag ") })
	t.Logf("reason: %s", r.ThrottleReason())
	assert.GreaterOrEqual(t, r.Lag(), 2*time.Second)

	require.NoError(t, p.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0))
	eventually(t, "clear after the delay is removed", 15*time.Second, func() bool { return !r.IsThrottled() })
}

func TestIntegrationStoppedSQLThread(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second, throttler.WithMaxWait(0))

	require.NoError(t, p.Replication().StopSQLThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, "throttled by a stopped SQL thread", 5*time.Second, r.IsThrottled)
	assert.Contains(t, r.ThrottleReason(), "applier (SQL) thread not running")

	waited := make(chan time.Time)
	go func() {
		r.BlockWait(context.Background())
		waited <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	started := time.Now()
	require.NoError(t, p.Replication().StartSQLThread(ctxTimeout(t, 10*time.Second)))
	select {
	case at := <-waited:
		t.Logf("BlockWait returned %v after START SLAVE SQL_THREAD", at.Sub(started).Round(time.Millisecond))
		assert.Less(t, at.Sub(started), 5*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("BlockWait still blocked 10s after the SQL thread restarted: " + r.ThrottleReason())
	}
}

func TestIntegrationStoppedIOThread(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second)
	require.NoError(t, p.Replication().StopIOThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, "throttled by a stopped IO thread", 5*time.Second, r.IsThrottled)
	assert.Contains(t, r.ThrottleReason(), "receiver (IO) thread not running")
	require.NoError(t, p.Replication().StartIOThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, "clear after START SLAVE IO_THREAD", 10*time.Second, func() bool { return !r.IsThrottled() })
}

func TestIntegrationKilledReplica(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second)
	require.False(t, r.IsThrottled())

	killed := time.Now()
	require.NoError(t, p.Replica().Kill())
	took := eventually(t, "fails closed after the replica is killed", 5*time.Second, r.IsThrottled)
	assert.Less(t, took, itStaleAfter+time.Second, "within the stale window (plus a poll)")
	assert.Contains(t, r.ThrottleReason(), "no lag measurement")
	t.Logf("reason: %s", r.ThrottleReason())

	require.NoError(t, p.Replica().Restart(ctxTimeout(t, 30*time.Second)))
	eventually(t, "recovers by itself when the replica returns", 30*time.Second, func() bool { return !r.IsThrottled() })
	t.Logf("killed to recovered: %v", time.Since(killed).Round(time.Millisecond))
}

func TestIntegrationHungReplica(t *testing.T) {
	p := testenv.Require(t)
	r, db := openReplication(t, p, 2*time.Second)
	require.False(t, r.IsThrottled())
	baseGoroutines := runtime.NumGoroutine()

	require.NoError(t, p.Replica().Freeze())
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = p.Replica().Thaw()
		}
	})
	eventually(t, "fails closed on a frozen replica", 5*time.Second, r.IsThrottled)
	assert.Contains(t, r.ThrottleReason(), "no lag measurement")

	// Let it stay hung for many poll intervals: nothing may pile up.
	maxConns, maxGoroutines := 0, 0
	for range 20 {
		time.Sleep(itInterval)
		maxConns = max(maxConns, db.Stats().OpenConnections)
		maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
	}
	t.Logf("while hung: at most %d open connections, %d goroutines (%d before)", maxConns, maxGoroutines, baseGoroutines)
	assert.LessOrEqual(t, maxConns, 2, "one poll in flight: at most one connection, plus one being torn down")
	assert.LessOrEqual(t, maxGoroutines, baseGoroutines+6, "no goroutine per poll")
	assert.True(t, r.IsThrottled())

	require.NoError(t, p.Replica().Thaw())
	thawed = true
	eventually(t, "recovers after the replica is thawed", 15*time.Second, func() bool { return !r.IsThrottled() })
}

func TestIntegrationRevokedGrant(t *testing.T) {
	p := testenv.Require(t)
	r, _ := openReplication(t, p, 2*time.Second)
	require.NoError(t, p.Replica().RevokeMonitorGrant(ctxTimeout(t, 10*time.Second)))
	eventually(t, "fails closed when the grant is revoked", 5*time.Second, r.IsThrottled)
	assert.Contains(t, r.ThrottleReason(), "SLAVE MONITOR", "the reason names the missing grant")
	t.Logf("reason: %s", r.ThrottleReason())

	err := r.UpdateLag(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, throttler.ErrAccessDenied)

	// A throttler opened without the grant fails at Open, naming it.
	db := openDB(t, p.Replica().DSN())
	fresh, err := throttler.NewReplicationThrottler(db, time.Second, nil)
	require.NoError(t, err)
	err = fresh.Open(ctxTimeout(t, 10*time.Second))
	require.ErrorIs(t, err, throttler.ErrAccessDenied)
	assert.Contains(t, err.Error(), "SLAVE MONITOR")
	require.NoError(t, fresh.Close())

	require.NoError(t, p.Replica().RestoreMonitorGrant(ctxTimeout(t, 10*time.Second)))
	eventually(t, "clear once the grant is back", 10*time.Second, func() bool { return !r.IsThrottled() })
}

// A privilege given back with GRANT alone (no session killed) is noticed
// within a few polls: the session that was denied is not reused, since it
// would stay denied for ever.
func TestIntegrationGrantGivenBack(t *testing.T) {
	p := testenv.Require(t)
	r, _ := openReplication(t, p, 2*time.Second)
	t.Cleanup(func() { _ = p.Replica().RestoreMonitorGrant(ctxTimeout(t, 10*time.Second)) }) // even if we fail

	// The kill makes the pool reconnect without the privilege.
	require.NoError(t, p.Replica().RevokeMonitorGrant(ctxTimeout(t, 10*time.Second)))
	eventually(t, "fails closed naming the grant", 5*time.Second, func() bool {
		return r.IsThrottled() && strings.Contains(r.ThrottleReason(), "SLAVE MONITOR")
	})
	t.Logf("reason: %s", r.ThrottleReason())

	require.NoError(t, p.Replica().GrantMonitorKeepSessions(ctxTimeout(t, 10*time.Second)))
	took := eventually(t, "clear once the grant is back", 5*time.Second, func() bool { return !r.IsThrottled() })
	assert.Less(t, took, 10*itInterval, "within a few polls of the GRANT")
	require.NoError(t, r.UpdateLag(ctxTimeout(t, 5*time.Second)))
}

func TestIntegrationPrimaryIsRefused(t *testing.T) {
	p := testenv.Require(t)
	for _, src := range []throttler.LagSource{nil, throttler.ReplicaStatusSource()} {
		db := openDB(t, p.Primary().DSN())
		var opts []throttler.Option
		if src != nil {
			opts = append(opts, throttler.WithLagSource(src))
		}
		r, err := throttler.NewReplicationThrottler(db, time.Second, nil, opts...)
		require.NoError(t, err)
		err = r.Open(ctxTimeout(t, 10*time.Second))
		assert.ErrorIs(t, err, throttler.ErrNotReplica)
		assert.False(t, r.IsThrottled())
		require.NoError(t, r.Close())
	}
}

// TestIntegrationPerformanceSchemaOnMariaDB: forcing MySQL 8's source onto
// MariaDB fails at Open with an error that says what is missing.
func TestIntegrationPerformanceSchemaOnMariaDB(t *testing.T) {
	p := testenv.Require(t)
	db := openDB(t, p.Replica().DSN())
	r, err := throttler.NewReplicationThrottler(db, time.Second, nil, throttler.WithLagSource(throttler.PerformanceSchemaSource()))
	require.NoError(t, err)
	err = r.Open(ctxTimeout(t, 10*time.Second))
	require.Error(t, err)
	assert.ErrorIs(t, err, throttler.ErrUnavailable)
	t.Logf("error: %v", err)
	require.NoError(t, r.Close())
}

func TestIntegrationCloseAndCancelReleaseWaiters(t *testing.T) {
	p := testenv.Require(t)
	for _, how := range []string{"close", "cancel"} {
		t.Run(how, func(t *testing.T) {
			require.NoError(t, p.Replication().StopSQLThread(ctxTimeout(t, 10*time.Second)))
			db := openDB(t, p.Replica().DSN())
			r, err := throttler.NewReplicationThrottler(db, time.Second, nil,
				throttler.WithInterval(itInterval), throttler.WithMaxWait(0))
			require.NoError(t, err)
			openCtx, cancel := context.WithCancel(context.Background())
			defer cancel()
			require.NoError(t, r.Open(openCtx))
			require.True(t, r.IsThrottled(), "a stopped SQL thread throttles from Open on")

			var wg sync.WaitGroup
			for range 100 {
				wg.Add(1)
				go func() { defer wg.Done(); r.BlockWait(context.Background()) }()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			if how == "close" {
				require.NoError(t, r.Close())
			} else {
				cancel()
			}
			select {
			case <-done:
				t.Logf("100 waiters released %v after %s", time.Since(start).Round(time.Microsecond), how)
			case <-time.After(2 * time.Second):
				t.Fatalf("waiters still blocked 2s after %s", how)
			}
			assert.False(t, r.IsThrottled())
			require.NoError(t, r.Close())
			require.NoError(t, p.Replication().StartSQLThread(ctxTimeout(t, 10*time.Second)))
		})
	}
}

// Callers of UpdateLag queued behind a measurement hung on a frozen replica
// return ErrClosed at once on Close, and no connection is dialed after it.
func TestIntegrationUpdateLagAfterCloseOnFrozenReplica(t *testing.T) {
	p := testenv.Require(t)
	cfg, err := mysql.ParseDSN(p.Replica().DSN())
	require.NoError(t, err)
	var dials atomic.Int64
	var nd net.Dialer
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return nd.DialContext(ctx, network, addr)
	}
	conn, err := mysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	// A long query timeout: a caller that waited for it would show.
	r, err := throttler.NewReplicationThrottler(db, 2*time.Second, nil,
		throttler.WithInterval(5*time.Second), throttler.WithQueryTimeout(5*time.Second))
	require.NoError(t, err)
	require.NoError(t, r.Open(context.Background()))
	t.Cleanup(func() { _ = r.Close() })

	require.NoError(t, p.Replica().Freeze())
	t.Cleanup(func() { _ = p.Replica().Thaw() })
	const callers = 8
	errs := make(chan error, callers)
	for range callers {
		go func() { errs <- r.UpdateLag(context.Background()) }()
	}
	eventually(t, "a measurement hangs on the frozen replica", 5*time.Second, func() bool { return db.Stats().InUse == 1 })
	time.Sleep(100 * time.Millisecond) // let every caller queue behind it

	before, closed := dials.Load(), time.Now()
	require.NoError(t, r.Close())
	for range callers {
		assert.ErrorIs(t, <-errs, throttler.ErrClosed)
	}
	took := time.Since(closed)
	t.Logf("all %d callers returned %v after Close", callers, took.Round(time.Millisecond))
	assert.Less(t, took, time.Second, "at once, not a query timeout per caller")
	assert.Equal(t, before, dials.Load(), "no connection dialed after Close")
}
