package mysql8test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
)

// The rows below are what MySQL 8.0 shows in each situation (checked against
// the reference manual's descriptions of the two tables): commit timestamps
// come from the source, so a direct replica's ORIGINAL and IMMEDIATE commit
// timestamps are equal; a stopped thread keeps its last transaction's columns
// and has a NULL THREAD_ID; an idle worker has APPLYING_TRANSACTION '' and
// unset APPLYING_* timestamps; a worker that has applied nothing since the
// applier started has '' and unset LAST_APPLIED_* columns; the source sends a
// heartbeat every replica_net_timeout/2 (30s) only while it has nothing else
// to send.

const sourceUUID = "5d3b2a1c-0e0f-11ef-9a3b-0242ac120002"

func gtid(n int) string { return fmt.Sprintf("%s:%d", sourceUUID, n) }

// receiver is a connected receiver (IO) thread whose last queued transaction
// trx committed on the source at commit and was queued just after; hb is its
// last heartbeat (zero: none since it started).
func receiver(channel, trx string, commit, hb time.Time) Connection {
	c := Connection{
		Channel:                 channel,
		SourceUUID:              sourceUUID,
		ServiceState:            "ON",
		CountReceivedHeartbeats: 17,
		LastHeartbeat:           hb,
		LastQueued:              trx,
	}
	if hb.IsZero() {
		c.CountReceivedHeartbeats = 0
	}
	if i := strings.LastIndexByte(trx, ':'); i > 0 {
		c.ReceivedTransactionSet = trx[:i] + ":1-" + trx[i+1:]
	}
	if trx != "" {
		c.LastQueuedOriginalCommit = commit
		c.LastQueuedImmediateCommit = commit
		c.LastQueuedStartQueue = commit.Add(300 * time.Microsecond)
		c.LastQueuedEndQueue = commit.Add(500 * time.Microsecond)
	}
	return c
}

// queueing is c while it receives trx, committed on the source at commit:
// the transaction has not been queued in full yet.
func (c Connection) queueing(trx string, commit time.Time) Connection {
	c.Queueing = trx
	c.QueueingOriginalCommit = commit
	c.QueueingImmediateCommit = commit
	c.QueueingStartQueue = commit.Add(300 * time.Microsecond)
	return c
}

// stoppedReceiver is receiver after STOP REPLICA IO_THREAD.
func stoppedReceiver(channel, trx string, commit, hb time.Time) Connection {
	c := receiver(channel, trx, commit, hb)
	c.ServiceState = "OFF"
	return c
}

// worker is an idle, running applier worker whose last applied transaction
// trx committed on the source at commit ("" and zero: none since the
// applier started).
func worker(channel string, id uint64, trx string, commit time.Time) Worker {
	w := Worker{Channel: channel, WorkerID: id, ServiceState: "ON", LastApplied: trx}
	if trx != "" {
		w.LastAppliedOriginalCommit = commit
		w.LastAppliedImmediateCommit = commit
		w.LastAppliedStartApply = commit.Add(time.Millisecond)
		w.LastAppliedEndApply = commit.Add(3 * time.Millisecond)
	}
	return w
}

// applying is w busy applying trx, committed on the source at commit.
func (w Worker) applying(trx string, commit, started time.Time) Worker {
	w.Applying = trx
	w.ApplyingOriginalCommit = commit
	w.ApplyingImmediateCommit = commit
	w.ApplyingStartApply = started
	return w
}

// stopped is w after its applier stopped, with an error or (errno 0) not.
func (w Worker) stopped(errno int, msg string, at time.Time) Worker {
	w.ServiceState = "OFF"
	w.LastErrorNumber, w.LastErrorMessage, w.LastErrorTime = errno, msg, at
	return w
}

type scenario struct {
	name    string
	rows    func(now time.Time) ([]Connection, []Worker)
	prepare func(t *testing.T, e *Emulator)    // after the rows are written
	zone    func(now time.Time) *time.Location // the server's system time zone; nil: local

	lag        time.Duration // the expected lag, as of now, when flowing
	channel    string        // the expected Measurement.Channel
	notFlowing []string      // when set: NotFlowing must contain each
	err        error         // when set: errors.Is(err, this)
}

func scenarios() []scenario {
	return []scenario{
		{
			name: "idle replica: source quiet for minutes, receiver hears heartbeats, last queued applied",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-5 * time.Minute)
				return []Connection{receiver("", gtid(1000), last, now.Add(-12*time.Second))},
					[]Worker{worker("", 0, gtid(1000), last)}
			},
			lag: 0,
		},
		{
			name: "single-threaded applier busy with a long transaction committed 12.5s ago",
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-12500 * time.Millisecond)
				// A busy source sends no heartbeat: the last is old.
				return []Connection{receiver("", gtid(2000), commit, now.Add(-20*time.Minute))},
					[]Worker{worker("", 0, gtid(1999), now.Add(-13*time.Second)).
						applying(gtid(2000), commit, now.Add(-12*time.Second))}
			},
			lag: 12500 * time.Millisecond,
		},
		{
			name: "transactions queued but not applied, workers idle, newest applied committed 7s ago",
			rows: func(now time.Time) ([]Connection, []Worker) {
				return []Connection{receiver("", gtid(3005), now.Add(-500*time.Millisecond), now.Add(-20*time.Minute))},
					[]Worker{
						worker("", 1, gtid(3000), now.Add(-7*time.Second)),
						worker("", 2, gtid(2999), now.Add(-7100*time.Millisecond)),
						worker("", 3, gtid(2998), now.Add(-7200*time.Millisecond)),
						worker("", 4, gtid(2997), now.Add(-7300*time.Millisecond)),
					}
			},
			lag: 7 * time.Second, // Spirit's query reads 0: no worker is applying
		},
		{
			name: "multi-threaded applier caught up: one worker applied the last queued, the others idle with old timestamps",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-2 * time.Second)
				return []Connection{receiver("", gtid(4000), last, now.Add(-20*time.Minute))},
					[]Worker{
						worker("", 1, gtid(3990), now.Add(-40*time.Second)),
						worker("", 2, gtid(3700), now.Add(-3*time.Minute)),
						worker("", 3, gtid(4000), last),
						worker("", 4, "", time.Time{}), // nothing since the applier started
					}
			},
			lag: 0,
		},
		{
			name: "gtid_mode=OFF: applying an ANONYMOUS transaction committed 3s ago",
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-3 * time.Second)
				return []Connection{receiver("", "ANONYMOUS", commit, now.Add(-10*time.Minute))},
					[]Worker{worker("", 0, "ANONYMOUS", now.Add(-3200*time.Millisecond)).
						applying("ANONYMOUS", commit, now.Add(-2900*time.Millisecond))}
			},
			lag: 3 * time.Second,
		},
		{
			name: "gtid_mode=OFF: idle",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-4 * time.Minute)
				return []Connection{receiver("", "ANONYMOUS", last, now.Add(-25*time.Second))},
					[]Worker{worker("", 0, "ANONYMOUS", last)}
			},
			lag: 0,
		},
		{
			name: "gtid_mode=OFF: ANONYMOUS transactions queued, workers idle, newest applied committed 7s ago",
			rows: func(now time.Time) ([]Connection, []Worker) {
				return []Connection{receiver("", "ANONYMOUS", now.Add(-500*time.Millisecond), now.Add(-20*time.Minute))},
					[]Worker{
						worker("", 1, "ANONYMOUS", now.Add(-7*time.Second)),
						worker("", 2, "ANONYMOUS", now.Add(-7100*time.Millisecond)),
					}
			},
			lag: 7 * time.Second, // ANONYMOUS cannot be matched by id: read 0 before
		},
		{
			name: "idle for 10 minutes, then one transaction committed 2ms ago: queued, not yet picked up",
			rows: func(now time.Time) ([]Connection, []Worker) {
				return []Connection{receiver("", gtid(1001), now.Add(-2*time.Millisecond), now.Add(-20*time.Second))},
					[]Worker{
						worker("", 1, gtid(1000), now.Add(-10*time.Minute)),
						worker("", 2, gtid(999), now.Add(-11*time.Minute)),
					}
			},
			lag: 2 * time.Millisecond, // only :1001 is pending: exact (read 10m before)
		},
		{
			name: "MySQL 8.4 tagged GTIDs: one transaction pending after an idle period",
			rows: func(now time.Time) ([]Connection, []Worker) {
				tagged := func(n int) string { return fmt.Sprintf("%s:batch:%d", sourceUUID, n) }
				return []Connection{receiver("", tagged(1001), now.Add(-2*time.Millisecond), now.Add(-20*time.Second))},
					[]Worker{
						worker("", 1, tagged(1000), now.Add(-10*time.Minute)),
						worker("", 2, gtid(5000), now.Add(-9*time.Minute)), // untagged: another sequence
					}
			},
			lag: 2 * time.Millisecond,
		},
		{
			name: "idle, then two transactions queued: the first cannot be dated, upper bound",
			rows: func(now time.Time) ([]Connection, []Worker) {
				return []Connection{receiver("", gtid(1002), now.Add(-2*time.Millisecond), now.Add(-20*time.Second))},
					[]Worker{
						worker("", 1, gtid(1000), now.Add(-10*time.Minute)),
						worker("", 2, gtid(999), now.Add(-11*time.Minute)),
					}
			},
			lag: 10 * time.Minute,
		},
		{
			name: "a huge transaction committed 40s ago still being received, the last queued one applied",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-45 * time.Second)
				return []Connection{receiver("", gtid(100), last, now.Add(-3*time.Minute)).
						queueing(gtid(101), now.Add(-40*time.Second))},
					[]Worker{
						worker("", 1, gtid(100), last),
						worker("", 2, gtid(99), last.Add(-time.Second)),
					}
			},
			lag: 40 * time.Second, // QUEUEING_TRANSACTION was not read before: 0
		},
		{
			name: "daylight saving, spring forward: applying a transaction committed at 01:59:59 EST, now 03:00:01 EDT",
			zone: func(now time.Time) *time.Location {
				return TransitionZone("America/New_York (spring forward 1s ago)", now.Add(-time.Second), EST, EDT)
			},
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-2 * time.Second)
				return []Connection{receiver("", gtid(9001), commit, now.Add(-20*time.Minute))},
					[]Worker{worker("", 1, gtid(9000), commit.Add(-time.Second)).applying(gtid(9001), commit, commit.Add(time.Millisecond))}
			},
			lag: 2 * time.Second, // wall clocks: 1h0m2s
		},
		{
			name: "daylight saving, fall back: applying a transaction committed 11 minutes ago in EDT, now in EST",
			zone: func(now time.Time) *time.Location {
				return TransitionZone("America/New_York (fall back 5m ago)", now.Add(-5*time.Minute), EDT, EST)
			},
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-11 * time.Minute)
				return []Connection{receiver("", gtid(9101), commit, now.Add(-20*time.Minute))},
					[]Worker{worker("", 1, gtid(9100), commit.Add(-time.Second)).applying(gtid(9101), commit, commit.Add(time.Millisecond))}
			},
			lag: 11 * time.Minute, // wall clocks run backwards: 0
		},
		{
			name: "SQL thread stopped (STOP REPLICA SQL_THREAD) while the receiver queues",
			rows: func(now time.Time) ([]Connection, []Worker) {
				var ws []Worker
				for i := 1; i <= 4; i++ {
					ws = append(ws, worker("", uint64(i), gtid(6000-i), now.Add(-30*time.Second-time.Duration(i)*time.Millisecond)).
						stopped(0, "", time.Time{}))
				}
				return []Connection{receiver("", gtid(6100), now.Add(-time.Second), now.Add(-20*time.Minute))}, ws
			},
			notFlowing: []string{"applier"},
		},
		{
			name: "SQL thread stopped by an error on one worker",
			rows: func(now time.Time) ([]Connection, []Worker) {
				msg := "Worker 2 failed executing transaction '" + gtid(6001) + "' at source log binlog.000003, end_log_pos 5321; " +
					"Could not execute Write_rows event on table app.t; Duplicate entry '42' for key 't.PRIMARY', Error_code: 1062; " +
					"handler error HA_ERR_FOUND_DUPP_KEY; the event's source log binlog.000003, end_log_pos 5321"
				return []Connection{receiver("", gtid(6100), now.Add(-time.Second), now.Add(-20*time.Minute))},
					[]Worker{
						worker("", 1, gtid(6000), now.Add(-30*time.Second)).stopped(0, "", time.Time{}),
						worker("", 2, gtid(5999), now.Add(-30*time.Second)).stopped(1062, msg, now.Add(-29*time.Second)),
						worker("", 3, gtid(5998), now.Add(-31*time.Second)).stopped(0, "", time.Time{}),
						worker("", 4, "", time.Time{}).stopped(0, "", time.Time{}),
					}
			},
			notFlowing: []string{"applier", "1062"},
		},
		{
			name: "receiver stopped (STOP REPLICA IO_THREAD) while the source writes: relay log drained",
			rows: func(now time.Time) ([]Connection, []Worker) {
				stoppedAt := now.Add(-90 * time.Second)
				return []Connection{stoppedReceiver("", gtid(7000), stoppedAt, now.Add(-100*time.Second))},
					[]Worker{worker("", 0, gtid(7000), stoppedAt)}
			},
			notFlowing: []string{"receiver"}, // Spirit's query reads 0
		},
		{
			name: "receiver cannot reach the source: CONNECTING with error 2003",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-3 * time.Minute)
				c := receiver("", gtid(7100), last, last)
				c.ServiceState = "CONNECTING"
				c.LastErrorNumber = 2003
				c.LastErrorMessage = "error connecting to source 'repl@source.example:3306' - retry-time: 60 retries: 3 " +
					"message: Can't connect to MySQL server on 'source.example:3306' (111)"
				c.LastErrorTime = now.Add(-10 * time.Second)
				return []Connection{c}, []Worker{worker("", 0, gtid(7100), last)}
			},
			notFlowing: []string{"receiver", "2003"},
		},
		{
			name: "receiver ON but silent for 3 minutes: no heartbeat, nothing queued",
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-10 * time.Minute)
				return []Connection{receiver("", gtid(8000), last, now.Add(-3*time.Minute))},
					[]Worker{worker("", 0, gtid(8000), last)}
			},
			notFlowing: []string{"receiver", "heard nothing"},
		},
		{
			name: "two channels, the second lagging 30s",
			rows: func(now time.Time) ([]Connection, []Worker) {
				idle := now.Add(-2 * time.Minute)
				commit := now.Add(-30 * time.Second)
				return []Connection{
						receiver("shard_a", gtid(100), idle, now.Add(-5*time.Second)),
						receiver("shard_b", gtid(900), commit, now.Add(-20*time.Minute)),
					}, []Worker{
						worker("shard_a", 1, gtid(100), idle),
						worker("shard_a", 2, gtid(99), idle.Add(-time.Second)),
						worker("shard_b", 1, gtid(899), commit.Add(-time.Second)).applying(gtid(900), commit, commit.Add(time.Second)),
						worker("shard_b", 2, gtid(898), commit.Add(-2*time.Second)),
					}
			},
			lag:     30 * time.Second,
			channel: "shard_b",
		},
		{
			name: "two channels, the second's receiver stopped",
			rows: func(now time.Time) ([]Connection, []Worker) {
				idle := now.Add(-2 * time.Minute)
				return []Connection{
						receiver("shard_a", gtid(100), idle, now.Add(-5*time.Second)),
						stoppedReceiver("shard_b", gtid(900), idle, idle),
					}, []Worker{
						worker("shard_a", 1, gtid(100), idle),
						worker("shard_b", 1, gtid(900), idle),
					}
			},
			channel:    "shard_b",
			notFlowing: []string{"receiver"},
		},
		{
			name: "not a replica: no rows",
			rows: func(time.Time) ([]Connection, []Worker) { return nil, nil },
			err:  throttler.ErrNotReplica,
		},
		{
			name:    "performance_schema=OFF: no rows",
			rows:    func(time.Time) ([]Connection, []Worker) { return nil, nil },
			prepare: func(_ *testing.T, e *Emulator) { e.SetPerformanceSchema(false) },
			err:     throttler.ErrUnavailable,
		},
		{
			name: "replication_connection_status missing, as on MariaDB",
			rows: func(time.Time) ([]Connection, []Worker) { return nil, nil },
			prepare: func(t *testing.T, e *Emulator) {
				e.DropTable(t, ConnectionStatusTable)
			},
			err: throttler.ErrUnavailable,
		},
	}
}

// TestPerformanceSchemaScenarios runs the real PerformanceSchemaSource().Measure
// through go-sql-driver/mysql, with and without parseTime, on each scenario.
func TestPerformanceSchemaScenarios(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			now := time.Now()
			var opts []Option
			if sc.zone != nil {
				opts = append(opts, WithTimeZone(sc.zone(now)))
			}
			e := Start(t, opts...)
			conns, workers := sc.rows(now)
			for _, c := range conns {
				e.InsertConnection(t, c)
			}
			for _, w := range workers {
				e.InsertWorker(t, w)
			}
			if sc.prepare != nil {
				sc.prepare(t, e)
			}
			for _, params := range []string{"", "parseTime=true"} {
				db := e.Open(t, params)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				m, err := throttler.PerformanceSchemaSource().Measure(ctx, db)
				elapsed := time.Since(now)
				cancel()
				mode := "DSN without parseTime"
				if params != "" {
					mode = "DSN with " + params
				}

				if sc.err != nil {
					assert.ErrorIs(t, err, sc.err, mode)
					continue
				}
				if !assert.NoError(t, err, mode) {
					continue
				}
				assert.Equal(t, sc.channel, m.Channel, mode)
				if len(sc.notFlowing) > 0 {
					assert.NotEmpty(t, m.NotFlowing, "%s: %+v", mode, m)
					for _, s := range sc.notFlowing {
						assert.Contains(t, m.NotFlowing, s, mode)
					}
					continue
				}
				assert.Empty(t, m.NotFlowing, mode)
				assertLag(t, m.Lag, sc.lag, elapsed, mode)
			}
		})
	}
}

// assertLag checks a lag measured elapsed after the rows were written as of
// now: NOW(6) was read between the two, and timestamps have microseconds.
func assertLag(t *testing.T, got, want, elapsed time.Duration, mode string) {
	t.Helper()
	if want == 0 {
		assert.Zero(t, got, mode)
		return
	}
	assert.GreaterOrEqual(t, got, want-time.Microsecond, mode)
	assert.LessOrEqual(t, got, want+elapsed+time.Microsecond, mode)
}

// TestPerformanceSchemaThrottlerEndToEnd drives a ReplicationThrottler from
// the emulated tables: caught up, then a worker applying a 10s-old
// transaction, then caught up again.
func TestPerformanceSchemaThrottlerEndToEnd(t *testing.T) {
	e := Start(t)
	now := time.Now()
	idle := now.Add(-3 * time.Minute)
	e.InsertConnection(t, receiver("", gtid(500), idle, now.Add(-10*time.Second)))
	for id := uint64(1); id <= 4; id++ {
		e.InsertWorker(t, worker("", id, gtid(500-int(id)+1), idle.Add(-time.Duration(id-1)*time.Second)))
	}
	db := e.Open(t, "parseTime=true")

	thr, err := throttler.NewReplicationThrottler(db, 5*time.Second, nil,
		throttler.WithInterval(20*time.Millisecond),
		throttler.WithLagSource(throttler.PerformanceSchemaSource()))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, thr.Open(ctx))
	defer thr.Close()
	assert.False(t, thr.IsThrottled(), thr.ThrottleReason())
	assert.Empty(t, thr.ThrottleReason())

	// The source commits a big transaction 10s ago; worker 2 applies it.
	commit := time.Now().Add(-10 * time.Second)
	e.Exec(t, `UPDATE replication_connection_status SET LAST_QUEUED_TRANSACTION = ?,
		LAST_QUEUED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP = ?, LAST_QUEUED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP = ?,
		LAST_QUEUED_TRANSACTION_START_QUEUE_TIMESTAMP = ?, LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP = ?
		WHERE CHANNEL_NAME = ''`,
		gtid(501), e.Timestamp(commit), e.Timestamp(commit), e.Timestamp(commit.Add(time.Second)), e.Timestamp(commit.Add(9*time.Second)))
	e.Exec(t, `UPDATE replication_applier_status_by_worker SET APPLYING_TRANSACTION = ?,
		APPLYING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP = ?, APPLYING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP = ?,
		APPLYING_TRANSACTION_START_APPLY_TIMESTAMP = ?
		WHERE CHANNEL_NAME = '' AND WORKER_ID = 2`,
		gtid(501), e.Timestamp(commit), e.Timestamp(commit), e.Timestamp(commit.Add(9*time.Second)))
	require.Eventually(t, func() bool {
		return thr.IsThrottled() && strings.Contains(thr.ThrottleReason(), "replica lag")
	}, 5*time.Second, 5*time.Millisecond, "last reason: %q", thr.ThrottleReason())
	assert.GreaterOrEqual(t, thr.Lag(), 10*time.Second)

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		thr.BlockWait(ctx)
	}()
	select {
	case <-returned:
		t.Fatalf("BlockWait returned while throttled (reason %q)", thr.ThrottleReason())
	case <-time.After(100 * time.Millisecond):
	}

	// Worker 2 commits it.
	applied := time.Now()
	e.Exec(t, `UPDATE replication_applier_status_by_worker SET LAST_APPLIED_TRANSACTION = ?,
		LAST_APPLIED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP = ?, LAST_APPLIED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP = ?,
		LAST_APPLIED_TRANSACTION_START_APPLY_TIMESTAMP = ?, LAST_APPLIED_TRANSACTION_END_APPLY_TIMESTAMP = ?,
		APPLYING_TRANSACTION = '', APPLYING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP = ?,
		APPLYING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP = ?, APPLYING_TRANSACTION_START_APPLY_TIMESTAMP = ?
		WHERE CHANNEL_NAME = '' AND WORKER_ID = 2`,
		gtid(501), e.Timestamp(commit), e.Timestamp(commit), e.Timestamp(commit.Add(9*time.Second)), e.Timestamp(applied),
		ZeroTimestamp, ZeroTimestamp, ZeroTimestamp)
	select {
	case <-returned:
		assert.Less(t, time.Since(applied), time.Second, "BlockWait returned late")
	case <-time.After(5 * time.Second):
		t.Fatalf("BlockWait still blocked 5s after the lag cleared (reason %q)", thr.ThrottleReason())
	}
	assert.False(t, thr.IsThrottled())
	assert.Empty(t, thr.ThrottleReason())
	require.NoError(t, thr.Close())
}

// TestDefaultLagSourceMySQL8 checks that a server reporting @@version 8.0.36
// gets the performance_schema source, from DetectFlavor and from Open.
func TestDefaultLagSourceMySQL8(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := Start(t, WithVersion("8.0.36", "MySQL Community Server - GPL"))
	now := time.Now()
	e.InsertConnection(t, receiver("", gtid(10), now.Add(-time.Minute), now.Add(-time.Second)))
	e.InsertWorker(t, worker("", 0, gtid(10), now.Add(-time.Minute)))
	db := e.Open(t, "")

	f, err := throttler.DetectFlavor(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, "8.0.36", f.Version)
	assert.Equal(t, 8, f.Major)
	assert.Equal(t, 0, f.Minor)
	assert.False(t, f.MariaDB)
	assert.Equal(t, throttler.PerformanceSchemaSource().String(), throttler.DefaultLagSource(f).String())

	thr, err := throttler.NewReplicationThrottler(db, 5*time.Second, nil, throttler.WithInterval(50*time.Millisecond),
		// Open detects the flavor and measures within one query timeout: give
		// the emulator, under -race on a busy machine, more than 50ms.
		throttler.WithStaleAfter(5*time.Second), throttler.WithQueryTimeout(2*time.Second))
	require.NoError(t, err)
	require.NoError(t, thr.Open(ctx))
	defer thr.Close()
	assert.Equal(t, throttler.PerformanceSchemaSource().String(), thr.Source().String())
	assert.False(t, thr.IsThrottled(), thr.ThrottleReason())
	require.NoError(t, thr.Close())

	// And a MariaDB version string does not get it.
	m := Start(t, WithVersion("10.11.6-MariaDB-0+deb12u1", "Debian 12"))
	f, err = throttler.DetectFlavor(ctx, m.DB)
	require.NoError(t, err)
	assert.True(t, f.MariaDB)
	assert.NotEqual(t, throttler.PerformanceSchemaSource().String(), throttler.DefaultLagSource(f).String())
}
