package throttler_test

// Integration tests: Load against the real MariaDB primary started by
// internal/testenv, with real running threads. Without the pair they skip
// and say how to run them.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
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

// Load and Query integration settings: poll every 50ms, trust a reading for
// 600ms.
var loadITOptions = []throttler.Option{
	throttler.WithInterval(50 * time.Millisecond),
	throttler.WithStaleAfter(600 * time.Millisecond),
	throttler.WithQueryTimeout(200 * time.Millisecond),
	throttler.WithMaxWait(0),
}

func loadITOpen(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func loadITTag() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func loadITCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// loadITRunning reads Threads_running as the throttler does.
func loadITRunning(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var name string
	var v int64
	require.NoError(t, db.QueryRowContext(loadITCtx(t, 5*time.Second), "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_running')").Scan(&name, &v))
	return v
}

// loadITSleepers runs n `SELECT SLEEP(secs)` statements on n connections of
// their own and returns once the server shows all n running. The returned
// channel is closed when every statement has returned to its client, and
// running counts those the server still shows; the test's end cancels them
// and waits for them.
func loadITSleepers(t *testing.T, dsn string, n int, secs int) (done <-chan struct{}, running func() int) {
	t.Helper()
	db := loadITOpen(t, dsn)
	db.SetMaxIdleConns(0)
	tag := loadITTag()
	stmt := fmt.Sprintf("SELECT SLEEP(%d) /* sleeper %s */", secs, tag)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+5)*time.Second)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = db.ExecContext(ctx, stmt)
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })

	count := fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = '%s'", stmt)
	running = func() int {
		got := -1
		_ = db.QueryRowContext(ctx, count).Scan(&got)
		return got
	}
	require.Eventually(t, func() bool { return running() == n }, time.Duration(secs)*time.Second, 5*time.Millisecond, "%d sleepers running", n)
	return finished, running
}

func TestIntegrationLoadRunningThreads(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	base := int64(0)
	for range 3 {
		base = max(base, loadITRunning(t, db))
	}
	n := base + 3 // N sleepers take Threads_running to at least N + 1 (the reading itself runs)
	t.Logf("Threads_running at rest: %d; threshold %d, critical %d", base, n, n+1)

	l, err := throttler.NewLoad(db, throttler.LoadConfig{Threshold: float64(n), Critical: float64(n + 1)}, nil, loadITOptions...)
	require.NoError(t, err)
	require.NoError(t, l.Open(context.Background()))
	t.Cleanup(func() { _ = l.Close() })
	require.False(t, l.IsThrottled(), l.ThrottleReason())
	require.False(t, l.IsCritical())

	done, running := loadITSleepers(t, p.Primary().AdminDSN(), int(n), 2)
	require.NoError(t, l.UpdateLag(loadITCtx(t, 5*time.Second)))
	require.True(t, l.IsThrottled(), "value %d", l.Value())
	assert.GreaterOrEqual(t, l.Value(), float64(n+1))
	assert.Equal(t, fmt.Sprintf("Threads_running %v >= %d", l.Value(), n), l.ThrottleReason())
	assert.True(t, l.IsCritical())
	assert.Equal(t, fmt.Sprintf("Threads_running %v >= %d", l.Value(), n+1), l.CriticalReason())
	t.Logf("while sleeping: %s; critical: %s", l.ThrottleReason(), l.CriticalReason())

	waited := make(chan struct{})
	go func() { l.BlockWait(context.Background()); close(waited) }()
	select {
	case <-waited:
		// The server ends the sleeps a moment before their clients see it:
		// only a wait that ends while all of them still run is wrong.
		if left := running(); left == int(n) {
			t.Fatalf("BlockWait returned while all %d sleepers run: %s", left, l.ThrottleReason())
		}
		<-done
	case <-done:
	}
	start := time.Now()
	select {
	case <-waited:
		t.Logf("BlockWait returned %v after the sleepers finished", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("BlockWait still blocked 5s after the sleepers finished: " + l.ThrottleReason())
	}
	assert.False(t, l.IsCritical(), "the reading that cleared the throttle is below the critical level too")
	assert.Less(t, l.Value(), float64(n))
}

func TestIntegrationLoadUnusableVariable(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	for _, c := range []struct{ variable, want string }{
		{"Threads_runing", `the server has no global status variable "Threads_runing"`},
		{"Rpl_status", `status variable Rpl_status = "AUTH_MASTER": not a finite decimal number`},
	} {
		l, err := throttler.NewLoad(db, throttler.LoadConfig{Variable: c.variable, Threshold: 10}, nil, loadITOptions...)
		require.NoError(t, err)
		err = l.Open(loadITCtx(t, 5*time.Second))
		assert.ErrorContains(t, err, c.want)
		if c.variable == "Threads_runing" {
			assert.ErrorIs(t, err, throttler.ErrUnavailable)
		}
		assert.False(t, l.IsThrottled())
		require.NoError(t, l.Close())
	}
}

// TestIntegrationLoadNeedsNoPrivilege: SHOW GLOBAL STATUS works for an
// account with no grant at all (USAGE only), so the load throttler can run as
// the least-privileged user there is.
func TestIntegrationLoadNeedsNoPrivilege(t *testing.T) {
	p := testenv.Require(t)
	ctx := loadITCtx(t, 10*time.Second)
	db, _ := loadITUser(t, p.Primary().AdminDSN(), "throttler_load_")
	var grants []string
	rows, err := db.QueryContext(ctx, "SHOW GRANTS")
	require.NoError(t, err)
	for rows.Next() {
		var g string
		require.NoError(t, rows.Scan(&g))
		grants = append(grants, g)
	}
	require.NoError(t, rows.Err())
	require.Len(t, grants, 1, "USAGE only: %v", grants)
	t.Logf("grants: %v", grants)

	l, err := throttler.NewLoad(db, throttler.LoadConfig{Threshold: 1000}, nil, loadITOptions...)
	require.NoError(t, err)
	require.NoError(t, l.Open(ctx))
	defer l.Close()
	assert.Positive(t, l.Value(), "the reading counts itself")
	assert.False(t, l.IsThrottled())
}

// TestIntegrationLoadFractional: Query_time, MariaDB's seconds spent in
// statements ("8.088772"), is a fractional value: it reads as a number and
// throttles once a SLEEP(1) took it past a threshold just above it.
func TestIntegrationLoadFractional(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	var name, raw string
	require.NoError(t, db.QueryRowContext(loadITCtx(t, 5*time.Second), "SHOW GLOBAL STATUS WHERE Variable_name IN ('Query_time')").Scan(&name, &raw))
	require.Contains(t, raw, ".", "MariaDB writes Query_time with a fraction")
	base, err := strconv.ParseFloat(raw, 64)
	require.NoError(t, err)
	threshold := base + 0.75
	l, err := throttler.NewLoad(db, throttler.LoadConfig{Variable: "Query_time", Threshold: threshold}, nil, loadITOptions...)
	require.NoError(t, err)
	require.NoError(t, l.Open(loadITCtx(t, 5*time.Second)))
	defer l.Close()
	assert.False(t, l.IsThrottled(), l.ThrottleReason())
	assert.GreaterOrEqual(t, l.Value(), base)

	_, err = db.ExecContext(loadITCtx(t, 5*time.Second), "SELECT SLEEP(1)")
	require.NoError(t, err)
	require.NoError(t, l.UpdateLag(loadITCtx(t, 5*time.Second)))
	require.True(t, l.IsThrottled(), "Query_time %v", l.Value())
	assert.Regexp(t, `^Query_time \d+\.\d{6} >= `+regexp.QuoteMeta(strconv.FormatFloat(threshold, 'f', -1, 64))+`$`, l.ThrottleReason())
	t.Logf("Query_time %v at Open, threshold %v: %s", base, threshold, l.ThrottleReason())
}

// TestIntegrationLoadRate: rows written per second as a rate. MariaDB 10.11
// has no Innodb_rows_inserted (MySQL's); Handler_write, which both have,
// counts the rows written through any engine (and stands still at rest: SHOW
// STATUS does not add to it). A writer inserts as fast as it can; the rate
// crosses the threshold within a few readings, and clears within a few
// readings of the writer stopping.
func TestIntegrationLoadRate(t *testing.T) {
	p := testenv.Require(t)
	db := loadITOpen(t, p.Primary().AdminDSN())
	table := "load_rate_" + loadITTag()
	ctx := loadITCtx(t, 60*time.Second)
	_, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+table) })

	const threshold = 2000 // rows per second
	opts := append(append([]throttler.Option(nil), loadITOptions...), throttler.WithInterval(200*time.Millisecond))
	l, err := throttler.NewLoad(db, throttler.LoadConfig{Variable: "Handler_write", Rate: true, Threshold: threshold}, nil, opts...)
	require.NoError(t, err)
	require.NoError(t, l.Open(ctx))
	defer l.Close()
	assert.False(t, l.IsThrottled(), "no rate from Open's one reading")
	require.Eventually(t, func() bool { return !l.IsThrottled() }, 5*time.Second, 10*time.Millisecond, "at rest: %s", l.ThrottleReason())

	// 100 rows a statement, as fast as one connection goes.
	values := strings.TrimSuffix(strings.Repeat("(NULL, 1),", 100), ",")
	wctx, stop := context.WithCancel(ctx)
	var inserted atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for wctx.Err() == nil {
			if _, err := db.ExecContext(wctx, "INSERT INTO "+table+" VALUES "+values); err == nil {
				inserted.Add(100)
			}
		}
	}()
	t.Cleanup(func() { stop(); <-writerDone })
	start := time.Now()
	require.Eventually(t, l.IsThrottled, 10*time.Second, 5*time.Millisecond, "rate %v/s", l.Value())
	t.Logf("throttled %v after the writer started: %s", time.Since(start).Round(time.Millisecond), l.ThrottleReason())
	assert.Regexp(t, `^Handler_write \d+/s >= 2000/s$`, l.ThrottleReason())
	assert.GreaterOrEqual(t, l.Value(), float64(threshold))
	time.Sleep(time.Second)
	assert.True(t, l.IsThrottled(), "still writing: %v/s", l.Value())
	ran := time.Since(start)

	stop()
	<-writerDone
	stopped := time.Now()
	waited := make(chan struct{})
	go func() { l.BlockWait(context.Background()); close(waited) }()
	select {
	case <-waited:
		t.Logf("cleared %v after the writer stopped (%d rows in %v, about %.0f/s); rate now %v/s",
			time.Since(stopped).Round(time.Millisecond), inserted.Load(), ran.Round(time.Millisecond), float64(inserted.Load())/ran.Seconds(), l.Value())
	case <-time.After(5 * time.Second):
		t.Fatal("still throttled 5s after the writer stopped: " + l.ThrottleReason())
	}
	assert.Less(t, l.Value(), float64(threshold))
}

// loadITUser creates a user with no grant at all on the server of adminDSN,
// dropped at the test's end, and returns a DB that logs in as it, and its
// name.
func loadITUser(t *testing.T, adminDSN, prefix string) (*sql.DB, string) {
	t.Helper()
	admin := loadITOpen(t, adminDSN)
	user, password := prefix+loadITTag(), loadITTag()
	_, err := admin.ExecContext(loadITCtx(t, 10*time.Second), fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user))
	})
	cfg, err := mysql.ParseDSN(adminDSN)
	require.NoError(t, err)
	cfg.User, cfg.Passwd, cfg.DBName = user, password, ""
	return loadITOpen(t, cfg.FormatDSN()), user
}
