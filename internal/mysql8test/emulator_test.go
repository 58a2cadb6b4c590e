package mysql8test

import (
	"database/sql"
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
