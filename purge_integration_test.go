package throttler_test

// Integration tests: PurgeLag against the real MariaDB primary started by
// internal/testenv, with a real read view holding purge back. Without the
// pair they skip and say how to run them.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// TestIntegrationPurgeLag: an open REPEATABLE READ snapshot keeps purge from
// removing the undo of every transaction committed after it, so each
// autocommit UPDATE adds one to the history list length; the throttler
// throttles once it crosses the threshold, and clears by itself once the
// snapshot ends and purge catches up.
func TestIntegrationPurgeLag(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	ctx := loadITCtx(t, 120*time.Second)
	table := "purge_it_" + loadITTag()
	_, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+table) })
	_, err = db.ExecContext(ctx, "INSERT INTO "+table+" SELECT seq, 0 FROM seq_1_to_100")
	require.NoError(t, err)

	const threshold = 500
	l, err := throttler.NewPurgeLag(db, threshold, nil, loadITOptions...)
	require.NoError(t, err)
	require.NoError(t, l.Open(ctx))
	defer l.Close()
	// What earlier tests left is purged within a second or so.
	require.Eventually(t, func() bool { return !l.IsThrottled() && l.Length() < 100 }, 30*time.Second, 10*time.Millisecond,
		"at rest: %d, %s", l.Length(), l.ThrottleReason())
	t.Logf("history list length at rest: %d", l.Length())

	// The snapshot: a read view opened and used, held on one connection.
	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	defer holder.Close()
	_, err = holder.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
	require.NoError(t, err)
	_, err = holder.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
	require.NoError(t, err)
	var n int
	require.NoError(t, holder.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n))
	require.Equal(t, 100, n)

	const updates = 2 * threshold
	start := time.Now()
	for i := range updates {
		_, err := db.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET v = v + 1 WHERE id = %d", table, i%100+1))
		require.NoError(t, err)
	}
	wrote := time.Since(start)
	require.Eventually(t, l.IsThrottled, 10*time.Second, 10*time.Millisecond, "history list length %d after %d updates", l.Length(), updates)
	t.Logf("%d autocommit updates in %v; throttled %v after the first: %s", updates, wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), l.ThrottleReason())
	assert.Regexp(t, `^history list length \d+ >= 500$`, l.ThrottleReason())
	assert.GreaterOrEqual(t, l.Length(), int64(threshold))

	// Held back: it stays throttled while the snapshot is open.
	time.Sleep(2 * time.Second)
	require.True(t, l.IsThrottled(), "purge held back by the snapshot: %d", l.Length())
	peak := l.Length()

	waited := make(chan struct{})
	go func() { l.BlockWait(context.Background()); close(waited) }()
	_, err = holder.ExecContext(ctx, "COMMIT")
	require.NoError(t, err)
	committed := time.Now()
	select {
	case <-waited:
		t.Logf("cleared %v after the snapshot ended (peak %d, now %d)", time.Since(committed).Round(time.Millisecond), peak, l.Length())
	case <-time.After(60 * time.Second):
		t.Fatalf("still throttled 60s after the snapshot ended: %s", l.ThrottleReason())
	}
	assert.Less(t, l.Length(), int64(threshold))
}

// TestIntegrationPurgeLagDisabledCounter: a counter disabled with
// innodb_monitor_disable keeps its last value, so it is not a reading: Open
// fails saying how to enable it, and an open throttler throttles at once.
func TestIntegrationPurgeLagDisabledCounter(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	ctx := loadITCtx(t, 30*time.Second)
	var enabled int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT ENABLED FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len'").Scan(&enabled))
	require.Equal(t, 1, enabled, "enabled by default on MariaDB 10.11")

	opened, err := throttler.NewPurgeLag(db, 1_000_000, nil, loadITOptions...)
	require.NoError(t, err)
	require.NoError(t, opened.Open(ctx))
	defer opened.Close()
	require.False(t, opened.IsThrottled(), opened.ThrottleReason())

	_, err = db.ExecContext(ctx, "SET GLOBAL innodb_monitor_disable = 'trx_rseg_history_len'")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := db.ExecContext(context.Background(), "SET GLOBAL innodb_monitor_enable = 'trx_rseg_history_len'")
		assert.NoError(t, err)
	})
	const how = "SET GLOBAL innodb_monitor_enable = 'trx_rseg_history_len'"
	require.Eventually(t, opened.IsThrottled, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, opened.ThrottleReason(), "the InnoDB monitor counter trx_rseg_history_len is disabled")

	l, err := throttler.NewPurgeLag(db, 1_000_000, nil, loadITOptions...)
	require.NoError(t, err)
	err = l.Open(ctx)
	assert.ErrorContains(t, err, how)
	t.Logf("Open with the counter disabled: %v", err)
	assert.False(t, l.IsThrottled())

	_, err = db.ExecContext(ctx, how)
	require.NoError(t, err)
	require.NoError(t, l.Open(ctx), "a failed Open may be retried")
	defer l.Close()
	assert.False(t, l.IsThrottled(), l.ThrottleReason())
	require.Eventually(t, func() bool { return !opened.IsThrottled() }, 5*time.Second, 10*time.Millisecond, "clears once enabled: %s", opened.ThrottleReason())
}

// TestIntegrationPurgeLagNeedsProcess: INNODB_METRICS needs the PROCESS
// privilege; without it Open says which grant is missing.
func TestIntegrationPurgeLagNeedsProcess(t *testing.T) {
	p := testenv.Require(t)
	admin := loadITOpen(t, p.Primary().AdminDSN())
	ctx := loadITCtx(t, 10*time.Second)
	db, user := loadITUser(t, p.Primary().AdminDSN(), "throttler_purge_")

	l, err := throttler.NewPurgeLag(db, 1000, nil, loadITOptions...)
	require.NoError(t, err)
	err = l.Open(ctx)
	require.ErrorIs(t, err, throttler.ErrAccessDenied)
	assert.True(t, strings.Contains(err.Error(), "grant PROCESS"), err.Error())
	t.Logf("without PROCESS: %v", err)

	_, err = admin.ExecContext(ctx, fmt.Sprintf("GRANT PROCESS ON *.* TO '%s'@'%%'", user))
	require.NoError(t, err)
	require.NoError(t, l.Open(ctx), "the grant reaches the next session")
	require.NoError(t, l.Close())
}
