package mysql8test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcmysql "github.com/testcontainers/testcontainers-go/modules/mysql"
	"github.com/testcontainers/testcontainers-go/network"

	"github.com/throttlekit/throttler"
)

// The same situations as the emulated scenarios, on real MySQL 8.0 source and
// replica containers, where a Docker engine is reachable.

const realMySQLImage = "mysql:8.0.36"

// requireDocker skips the test unless a Docker engine answers a ping within
// a few seconds: the docker client binary alone is not enough.
func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: real MySQL 8 tests start containers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pingDocker(ctx); err != nil {
		t.Skipf("no Docker engine: real MySQL 8 tests run where Docker is available (%v)", err)
	}
}

func pingDocker(ctx context.Context) (err error) {
	defer func() {
		// testcontainers panics when it finds no Docker host at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Ping(ctx, client.PingOptions{})
	return err
}

// startMySQL8 starts one MySQL 8.0 server with GTIDs on, reachable from the
// other containers of nw as alias, and returns a pool on it (parseTime=true).
func startMySQL8(ctx context.Context, t *testing.T, nw *testcontainers.DockerNetwork, alias string, serverID int) *sql.DB {
	t.Helper()
	c, err := tcmysql.Run(ctx, realMySQLImage,
		tcmysql.WithUsername("root"), tcmysql.WithPassword("root"),
		network.WithNetwork([]string{alias}, nw),
		testcontainers.WithCmdArgs(
			fmt.Sprintf("--server-id=%d", serverID),
			"--log-bin=binlog",
			"--gtid-mode=ON",
			"--enforce-gtid-consistency=ON",
			"--replica-parallel-workers=4",
		),
	)
	testcontainers.CleanupContainer(t, c)
	require.NoError(t, err, "start %s", alias)
	dsn, err := c.ConnectionString(ctx, "parseTime=true")
	require.NoError(t, err)
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	require.NoError(t, db.PingContext(ctx))
	return db
}

func mustExec(ctx context.Context, t *testing.T, db *sql.DB, queries ...string) {
	t.Helper()
	for _, q := range queries {
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
}

func TestRealMySQL8Replication(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	require.NoError(t, err)
	source := startMySQL8(ctx, t, nw, "source", 1)
	replica := startMySQL8(ctx, t, nw, "replica", 2)

	// Forget what the image's initialisation wrote to the binary log, so
	// the replica does not replay CREATE DATABASE test.
	mustExec(ctx, t, source,
		"RESET MASTER",
		"CREATE USER 'repl'@'%' IDENTIFIED BY 'repl'",
		"GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'",
		"CREATE TABLE test.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64) NOT NULL)",
	)
	mustExec(ctx, t, replica,
		"RESET MASTER",
		"CHANGE REPLICATION SOURCE TO SOURCE_HOST='source', SOURCE_PORT=3306, SOURCE_USER='repl', "+
			"SOURCE_PASSWORD='repl', SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1, SOURCE_HEARTBEAT_PERIOD=1",
		"START REPLICA",
	)

	// The source keeps writing for the whole test.
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
				_, _ = source.ExecContext(wctx, "INSERT INTO test.t (v) VALUES (REPEAT('x', 64))")
			}
		}
	}()
	defer func() { stopWriter(); wg.Wait() }()

	// The default source for this server is performance_schema.
	f, err := throttler.DetectFlavor(ctx, replica)
	require.NoError(t, err)
	assert.Equal(t, throttler.PerformanceSchemaSource().String(), throttler.DefaultLagSource(f).String(), "%+v", f)

	ps := throttler.PerformanceSchemaSource()
	require.Eventually(t, func() bool {
		m, err := ps.Measure(ctx, replica)
		return err == nil && m.NotFlowing == "" && m.Lag < time.Second
	}, 60*time.Second, 200*time.Millisecond, "replica never caught up")

	thr, err := throttler.NewReplicationThrottler(replica, 5*time.Second, nil,
		throttler.WithInterval(100*time.Millisecond), throttler.WithLagSource(ps))
	require.NoError(t, err)
	require.NoError(t, thr.Open(ctx))
	defer thr.Close()

	notThrottled := func() bool { return !thr.IsThrottled() }
	throttledFor := func(want string) func() bool {
		return func() bool { return thr.IsThrottled() && strings.Contains(thr.ThrottleReason(), want) }
	}

	// Healthy.
	require.Eventually(t, notThrottled, 10*time.Second, 50*time.Millisecond, "healthy: %q", thr.ThrottleReason())

	// Applier stopped.
	mustExec(ctx, t, replica, "STOP REPLICA SQL_THREAD")
	require.Eventually(t, throttledFor("not flowing"), 10*time.Second, 50*time.Millisecond,
		"SQL thread stopped: %q", thr.ThrottleReason())
	assert.Contains(t, thr.ThrottleReason(), "applier")
	mustExec(ctx, t, replica, "START REPLICA SQL_THREAD")
	require.Eventually(t, notThrottled, 30*time.Second, 50*time.Millisecond, "SQL thread restarted: %q", thr.ThrottleReason())

	// Receiver stopped while the source writes: never lag 0.
	mustExec(ctx, t, replica, "STOP REPLICA IO_THREAD")
	require.Eventually(t, throttledFor("not flowing"), 10*time.Second, 50*time.Millisecond,
		"IO thread stopped: %q", thr.ThrottleReason())
	assert.Contains(t, thr.ThrottleReason(), "receiver")
	time.Sleep(500 * time.Millisecond) // the relay log drains; still throttled
	assert.True(t, thr.IsThrottled(), "IO thread stopped, relay log drained")
	mustExec(ctx, t, replica, "START REPLICA IO_THREAD")
	require.Eventually(t, notThrottled, 30*time.Second, 50*time.Millisecond, "IO thread restarted: %q", thr.ThrottleReason())

	require.NoError(t, thr.Close())
}
