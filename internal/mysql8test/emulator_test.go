package mysql8test

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The emulator itself: the tables have MySQL 8.0's columns and types, and the
// emulated variables answer per emulator.

func TestEmulatorTables(t *testing.T) {
	e := Start(t)
	for table, want := range map[string]int{ConnectionStatusTable: 20, WorkerStatusTable: 24} {
		var n int
		require.NoError(t, e.DB.QueryRow(`SELECT COUNT(*) FROM information_schema.columns
			WHERE table_schema = 'performance_schema' AND table_name = ?`, table).Scan(&n))
		assert.Equal(t, want, n, table)
	}
	var typ string
	require.NoError(t, e.DB.QueryRow(`SELECT column_type FROM information_schema.columns
		WHERE table_schema = 'performance_schema' AND table_name = ? AND column_name = 'LAST_HEARTBEAT_TIMESTAMP'`,
		ConnectionStatusTable).Scan(&typ))
	assert.Equal(t, "timestamp(6)", typ)
}

func TestEmulatorTimestamps(t *testing.T) {
	e := Start(t)
	at := time.Now().Add(-1500 * time.Millisecond).Truncate(time.Microsecond)
	e.InsertConnection(t, Connection{LastHeartbeat: at}) // every other timestamp unset
	for _, params := range []string{"", "parseTime=true"} {
		db := e.Open(t, params)
		var hb, unset, now any
		require.NoError(t, db.QueryRow(`SELECT LAST_HEARTBEAT_TIMESTAMP, LAST_ERROR_TIMESTAMP, NOW(6)
			FROM performance_schema.replication_connection_status`).Scan(&hb, &unset, &now), params)
		switch params {
		case "":
			// MySQL prints all six digits; go-mysql-server drops trailing
			// zeros ("...39.21441"). Both parse to the same time.
			got, err := time.ParseInLocation("2006-01-02 15:04:05.999999", string(hb.([]byte)), time.Local)
			require.NoError(t, err)
			assert.True(t, at.Equal(got), "wrote %v, read %v", at, got)
			assert.Contains(t, string(unset.([]byte)), "0000-00-00 00:00:00")
		default:
			// The driver reads wall clocks as UTC; the difference to NOW(6)
			// is what the lag source uses.
			lag := now.(time.Time).Sub(hb.(time.Time))
			assert.GreaterOrEqual(t, lag, 1500*time.Millisecond)
			assert.Less(t, lag, 2*time.Second)
			assert.True(t, unset.(time.Time).IsZero())
		}
	}
}

func TestEmulatorVariables(t *testing.T) {
	a := Start(t)
	b := Start(t, WithVersion("10.11.6-MariaDB-0+deb12u1", "Debian 12"), WithPerformanceSchema(false))
	read := func(db *sql.DB) (ps int, version, comment string) {
		t.Helper()
		require.NoError(t, db.QueryRow("SELECT @@performance_schema, @@version, @@version_comment").Scan(&ps, &version, &comment))
		return
	}
	ps, v, c := read(a.DB)
	assert.Equal(t, 1, ps)
	assert.Equal(t, DefaultVersion, v)
	assert.Equal(t, DefaultVersionComment, c)
	ps, v, c = read(b.DB)
	assert.Equal(t, 0, ps)
	assert.Equal(t, "10.11.6-MariaDB-0+deb12u1", v)
	assert.Equal(t, "Debian 12", c)

	// A change shows on connections already open.
	a.SetPerformanceSchema(false)
	ps, _, _ = read(a.DB)
	assert.Equal(t, 0, ps)
	b.SetPerformanceSchema(true)
	ps, _, _ = read(b.DB)
	assert.Equal(t, 1, ps)
}

func TestEmulatorCloseIdempotent(t *testing.T) {
	e, err := New()
	require.NoError(t, err)
	db, err := sql.Open("mysql", e.DSN) // not tracked: Close must hang up on it
	require.NoError(t, err)
	require.NoError(t, db.Ping())
	require.NoError(t, e.Close())
	require.NoError(t, e.Close())
	require.NoError(t, db.Close())
}

// TestEmulatorTimeZone checks the emulated system time zone across a
// daylight-saving switch: UNIX_TIMESTAMP of a TIMESTAMP(6) column is the
// instant written, on either side of the switch (go-mysql-server's own
// converts with the current offset: an hour off on the other side), and
// UNIX_TIMESTAMP() with MICROSECOND(NOW(6)) is the statement's start.
func TestEmulatorTimeZone(t *testing.T) {
	now := time.Now()
	zone := TransitionZone("fall back 5m ago", now.Add(-5*time.Minute), EDT, EST)
	e := Start(t, WithTimeZone(zone))
	before := now.Add(-3 * time.Hour).Truncate(time.Microsecond) // EDT, an unambiguous wall clock
	after := now.Add(2 * time.Hour).Truncate(time.Microsecond)   // EST
	repeated := now.Add(-11 * time.Minute).Truncate(time.Microsecond)
	e.InsertConnection(t, Connection{LastHeartbeat: before, LastErrorTime: after, LastQueuedOriginalCommit: repeated})
	assert.Equal(t, before.In(zone).Format("2006-01-02 15:04:05.000000"), e.Timestamp(before))

	for _, params := range []string{"", "parseTime=true"} {
		db := e.Open(t, params)
		var hb, errAt, commit, unset, wall string
		var nowMicros, ambiguousNow int64
		start := time.Now()
		require.NoError(t, db.QueryRow(`SELECT UNIX_TIMESTAMP(LAST_HEARTBEAT_TIMESTAMP), UNIX_TIMESTAMP(LAST_ERROR_TIMESTAMP),
			UNIX_TIMESTAMP(LAST_QUEUED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP), UNIX_TIMESTAMP(LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP),
			UNIX_TIMESTAMP() * 1000000 + MICROSECOND(NOW(6)), CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED),
			DATE_FORMAT(NOW(6), '%Y-%m-%d %H:%i:%s.%f')
			FROM performance_schema.replication_connection_status`).
			Scan(&hb, &errAt, &commit, &unset, &nowMicros, &ambiguousNow, &wall), params)
		end := time.Now()
		micros := func(t time.Time) string { return fmt.Sprintf("%d.%06d", t.Unix(), t.Nanosecond()/1000) }
		assert.Equal(t, micros(before), hb, "%s: the other side of the switch", params)
		assert.Equal(t, micros(after), errAt, params)
		assert.Equal(t, micros(repeated), commit, "%s: the repeated hour reads as its first pass", params)
		assert.Equal(t, "0.000000", unset, params)

		got := time.UnixMicro(nowMicros)
		assert.False(t, got.Before(start.Truncate(time.Microsecond)) || got.After(end), "%s: now %v not in [%v, %v]", params, got, start, end)
		// NOW(6) shows the wall clock in the zone (EST now).
		assert.Equal(t, got.In(zone).Format("2006-01-02 15:04:05.000000"), wall, params)
		// Converting that wall clock back through the zone cannot tell the
		// repeated hour's two passes apart: the emulator takes the first,
		// an hour early. The lag source therefore never uses it.
		assert.Equal(t, nowMicros-time.Hour.Microseconds(), ambiguousNow, params)
	}
}

// TestEmulatorConcurrentWrites checks that a write is not lost while another
// connection polls, as a throttler does (go-mysql-server's in-memory
// database, unserialized, loses some).
func TestEmulatorConcurrentWrites(t *testing.T) {
	e := Start(t)
	e.InsertConnection(t, Connection{})
	poller := e.Open(t, "")
	done := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		var err error
		defer func() { polled <- err }()
		for {
			select {
			case <-done:
				return
			default:
			}
			var n uint64
			if err = poller.QueryRow("SELECT COUNT_RECEIVED_HEARTBEATS FROM performance_schema.replication_connection_status").Scan(&n); err != nil {
				return
			}
		}
	}()
	for i := 1; i <= 200; i++ {
		e.Exec(t, "UPDATE replication_connection_status SET COUNT_RECEIVED_HEARTBEATS = ? WHERE CHANNEL_NAME = ''", i)
		var n int
		require.NoError(t, e.DB.QueryRow("SELECT COUNT_RECEIVED_HEARTBEATS FROM replication_connection_status").Scan(&n))
		require.Equal(t, i, n, "write %d lost", i)
	}
	close(done)
	require.NoError(t, <-polled)
}
