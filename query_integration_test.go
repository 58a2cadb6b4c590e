package throttler_test

// Integration tests: Query against the real MariaDB primary started by
// internal/testenv, reading a table the test changes. Without the pair they
// skip and say how to run them.

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// queryITKnob creates a one-row table throttler_test.query_knob_<tag> (v INT)
// holding v, dropped when the test ends, and returns its name and a setter.
func queryITKnob(t *testing.T, db *sql.DB, v int) (table string, set func(v any)) {
	t.Helper()
	table = testenv.Database + ".query_knob_" + loadITTag()
	ctx := loadITCtx(t, 10*time.Second)
	_, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (v INT NULL)")
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
	})
	_, err = db.ExecContext(ctx, "INSERT INTO "+table+" VALUES (?)", v)
	require.NoError(t, err)
	return table, func(v any) {
		t.Helper()
		_, err := db.ExecContext(loadITCtx(t, 10*time.Second), "UPDATE "+table+" SET v = ?", v)
		require.NoError(t, err)
	}
}

func queryITNew(t *testing.T, db *sql.DB, cfg throttler.QueryConfig) *throttler.Query {
	t.Helper()
	q, err := throttler.NewQuery(db, cfg, nil, loadITOptions...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func TestIntegrationQueryKnob(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	table, set := queryITKnob(t, db, 0)
	q := queryITNew(t, db, throttler.QueryConfig{SQL: "SELECT v FROM " + table, Threshold: 1})
	require.NoError(t, q.Open(context.Background()))
	require.False(t, q.IsThrottled(), q.ThrottleReason())

	set(3)
	require.NoError(t, q.UpdateLag(loadITCtx(t, 5*time.Second)))
	require.True(t, q.IsThrottled())
	assert.Equal(t, "throttle query value 3 >= 1", q.ThrottleReason())
	assert.Equal(t, 3.0, q.Value())

	waited := make(chan struct{})
	go func() { q.BlockWait(context.Background()); close(waited) }()
	select {
	case <-waited:
		t.Fatal("BlockWait returned while the knob is set: " + q.ThrottleReason())
	case <-time.After(200 * time.Millisecond): // four polls
	}
	set(0)
	select {
	case <-waited: // the monitor saw the knob go down and woke the waiter
	case <-time.After(5 * time.Second):
		t.Fatal("BlockWait still blocked 5s after the knob was cleared: " + q.ThrottleReason())
	}
	assert.False(t, q.IsThrottled())

	// NULL while open: an unknown value throttles at once.
	set(nil)
	assert.ErrorContains(t, q.UpdateLag(loadITCtx(t, 5*time.Second)), "throttle query returned NULL")
	assert.True(t, q.IsThrottled())
	assert.Equal(t, "throttle query returned NULL: the value is unknown", q.ThrottleReason())
	set(0)
	require.Eventually(t, func() bool { return !q.IsThrottled() }, 5*time.Second, 10*time.Millisecond)

	// The table goes away: the query fails, the last value stands for the
	// stale window, then the throttler throttles with the error.
	_, err := db.ExecContext(loadITCtx(t, 5*time.Second), "DROP TABLE "+table)
	require.NoError(t, err)
	require.Eventually(t, q.IsThrottled, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, q.ThrottleReason(), "no throttle query result for")
	assert.Contains(t, q.ThrottleReason(), "Error 1146")
	t.Logf("reason: %s", q.ThrottleReason())
}

// TestIntegrationQueryArgs: with arguments the driver prepares the query on
// the server.
func TestIntegrationQueryArgs(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	table, set := queryITKnob(t, db, 5)
	q := queryITNew(t, db, throttler.QueryConfig{SQL: "SELECT COUNT(*) FROM " + table + " WHERE v >= ?", Args: []any{4}, Threshold: 1})
	require.NoError(t, q.Open(loadITCtx(t, 5*time.Second)))
	assert.True(t, q.IsThrottled())
	assert.Equal(t, "throttle query value 1 >= 1", q.ThrottleReason())
	set(2)
	require.NoError(t, q.UpdateLag(loadITCtx(t, 5*time.Second)))
	assert.False(t, q.IsThrottled(), q.ThrottleReason())
}

func TestIntegrationQueryAnswers(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	table, _ := queryITKnob(t, db, 0)
	cases := []struct {
		name, sql string
		want      string  // Open's error; "" means Open succeeds
		value     float64 // when Open succeeds
	}{
		{"bad SQL", "SELEC 1", "Error 1064", 0},
		{"unknown table", "SELECT v FROM " + testenv.Database + ".no_such_table", "Error 1146", 0},
		{"zero rows", "SELECT v FROM " + table + " WHERE 1 = 0", "throttle query returned no rows", 0},
		{"two rows", "SELECT 1 UNION ALL SELECT 2", "throttle query returned more than one row", 0},
		{"two columns", "SELECT 1 AS a, 2 AS b", "throttle query returned 2 columns (a, b)", 0},
		{"NULL", "SELECT NULL", "throttle query returned NULL", 0},
		{"text", "SELECT 'busy'", `throttle query returned "busy", not a number`, 0},
		{"date", "SELECT DATE('2026-01-02')", `throttle query returned "2026-01-02", not a number`, 0},
		{"decimal", "SELECT 0.50", "", 0.5},
		{"float", "SELECT 1.5e3", "", 1500},
		{"numeric text", "SELECT '7'", "", 7},
		{"big unsigned", "SELECT CAST(18446744073709551615 AS UNSIGNED)", "", 18446744073709551615},
		{"negative", "SELECT -2", "", -2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := queryITNew(t, db, throttler.QueryConfig{SQL: c.sql, Threshold: 1000})
			err := q.Open(loadITCtx(t, 5*time.Second))
			if c.want != "" {
				assert.ErrorContains(t, err, c.want)
				assert.False(t, q.IsThrottled())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.value, q.Value())
		})
	}
}

// TestIntegrationQueryHang: a query that hangs fails closed after the stale
// window, one run at a time: no pile-up of client connections, and none on
// the server either, because each timed-out run is killed there.
func TestIntegrationQueryHang(t *testing.T) {
	p := testenv.Require(t)
	admin := loadITOpen(t, p.Primary().AdminDSN())
	table, set := queryITKnob(t, admin, 0)
	tag := loadITTag()
	db := loadITOpen(t, p.Primary().AdminDSN())
	// SLEEP(5) only while the knob is 1: Open's first run answers.
	q := queryITNew(t, db, throttler.QueryConfig{
		SQL:       fmt.Sprintf("SELECT IF(v = 1, SLEEP(5), 0) FROM %s /* hang %s */", table, tag),
		Threshold: 1,
	})
	require.NoError(t, q.Open(context.Background()))
	require.False(t, q.IsThrottled())
	baseGoroutines := runtime.NumGoroutine()

	set(1)
	start := time.Now()
	require.Eventually(t, q.IsThrottled, 5*time.Second, 10*time.Millisecond)
	t.Logf("throttled %v after the query started hanging: %s", time.Since(start).Round(time.Millisecond), q.ThrottleReason())
	assert.Contains(t, q.ThrottleReason(), "no throttle query result for")
	assert.Contains(t, q.ThrottleReason(), "context deadline exceeded")

	// Stay hung for many polls: nothing may pile up, here or on the server.
	countSQL := fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%hang %s%%' AND ID <> CONNECTION_ID()", tag)
	maxConns, maxGoroutines, maxServer := 0, 0, 0
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		var n int
		require.NoError(t, admin.QueryRowContext(loadITCtx(t, 5*time.Second), countSQL).Scan(&n))
		maxServer = max(maxServer, n)
		maxConns = max(maxConns, db.Stats().OpenConnections)
		maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
	}
	t.Logf("while hung: at most %d client connections, %d statements on the server, %d goroutines (%d before)", maxConns, maxServer, maxGoroutines, baseGoroutines)
	assert.LessOrEqual(t, maxConns, 2, "one run in flight: one connection, plus one being torn down")
	assert.LessOrEqual(t, maxServer, 2, "timed-out runs are killed on the server, not left sleeping")
	assert.LessOrEqual(t, maxGoroutines, baseGoroutines+6, "no goroutine per poll")
	assert.True(t, q.IsThrottled())

	set(0)
	require.Eventually(t, func() bool { return !q.IsThrottled() }, 5*time.Second, 10*time.Millisecond, q.ThrottleReason())
}
