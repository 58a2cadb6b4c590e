package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// TestMain fails the package if a run leaves a goroutine behind (the
// throttler's monitor, the heartbeat writer, the fault schedule, the status
// line, a database pool).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuickRunPausesAndVerifies is `copier -quick` against the local pair:
// the replica is made to lag, so the copy must pause at least once, resume,
// and end with a copy identical to its source.
func TestQuickRunPausesAndVerifies(t *testing.T) {
	p := testenv.Require(t)
	cfg, err := parseFlags([]string{"-quick"}, noEnv, io.Discard)
	require.NoError(t, err)
	cfg.Pair, cfg.PrimaryDSN, cfg.ReplicaDSN = p, p.Primary().AdminDSN(), p.Replica().DSN()
	cfg.Database = "throttler_demo_test" // not the demo's tables
	t.Cleanup(func() { dropDatabase(t, cfg.PrimaryDSN, cfg.Database) })

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	sum, err := run(ctx, cfg, &out)
	t.Logf("run took %v; its output:\n%s%s", time.Since(start).Round(time.Millisecond), out.String(), sum)
	require.NoError(t, err)

	assert.True(t, sum.Checked, "the copy was not verified")
	assert.True(t, sum.Verified, "the copy differs from its source")
	assert.EqualValues(t, cfg.Rows, sum.Rows)
	assert.EqualValues(t, cfg.Rows, sum.Copied)
	assert.Equal(t, len(quickSchedule), sum.Faults)
	// The summary is the throttler's Stats.
	assert.GreaterOrEqual(t, sum.Throttle.Waits, int64(1), "the replica lagged but the copier never paused")
	assert.Positive(t, sum.Throttle.WaitedTotal)
	assert.GreaterOrEqual(t, sum.Throttle.Episodes, int64(1))
	assert.Positive(t, sum.Throttle.ThrottledByKind["not flowing"], "the SQL thread was stopped")
	assert.Positive(t, sum.Throttle.Measurements)
	assert.Contains(t, out.String(), "throttled: replication not flowing")
	assert.Contains(t, out.String(), "throttler: resumed")

	// The run restored the replica it broke.
	st, err := p.Replication().Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
	assert.Equal(t, "0", st["SQL_Delay"])
}

// TestInterruptedRunStopsAndRestores cancels a run in the middle of its
// first fault: it must return promptly, with the summary so far, and leave
// the replica's SQL thread running.
func TestInterruptedRunStopsAndRestores(t *testing.T) {
	p := testenv.Require(t)
	cfg, err := parseFlags([]string{"-quick", "-rows", "20000", "-chunk", "500"}, noEnv, io.Discard)
	require.NoError(t, err)
	cfg.Pair, cfg.PrimaryDSN, cfg.ReplicaDSN = p, p.Primary().AdminDSN(), p.Replica().DSN()
	cfg.Database = "throttler_demo_test"
	cfg.Schedule = []fault{{After: 0, Kind: stopSQLThread, For: time.Minute}}
	t.Cleanup(func() { dropDatabase(t, cfg.PrimaryDSN, cfg.Database) })

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	out := &syncBuffer{}
	type result struct {
		sum summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := run(runCtx, cfg, out)
		done <- result{sum, err}
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "throttled: replication not flowing") },
		30*time.Second, 50*time.Millisecond, "the copier never paused:\n%s", out)
	interrupt()
	start := time.Now()
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not return within 5s of its context's end:\n%s", out)
	}
	t.Logf("run returned %v after its context ended; output:\n%s%s", time.Since(start).Round(time.Millisecond), out, res.sum)

	require.ErrorIs(t, res.err, context.Canceled)
	assert.False(t, res.sum.Checked)
	assert.Less(t, res.sum.Copied, res.sum.Rows)
	// Not Waits: a wait that the end of Open's context ends may not be
	// counted, as the throttler is released at the same moment.
	assert.GreaterOrEqual(t, res.sum.Throttle.Episodes, int64(1))
	assert.Positive(t, res.sum.Throttle.ThrottledByKind["not flowing"])
	assert.Contains(t, out.String(), "restoring the replica: starting its SQL thread")
	st, err := p.Replication().Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "Yes", st["Slave_SQL_Running"])
}

func TestParseFlags(t *testing.T) {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	cfg, err := parseFlags(nil, noEnv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, defaultRows, cfg.Rows)
	assert.Equal(t, defaultChunk, cfg.Chunk)
	assert.Equal(t, time.Second, cfg.Tolerance)
	assert.True(t, cfg.Faults)
	assert.Equal(t, fullSchedule, cfg.Schedule)

	cfg, err = parseFlags([]string{"-quick"}, noEnv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, quickRows, cfg.Rows)
	assert.Equal(t, quickSchedule, cfg.Schedule)

	cfg, err = parseFlags([]string{"-quick", "-rows", "5000"}, noEnv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 5000, cfg.Rows, "an explicit -rows wins over -quick")

	dsns := env(map[string]string{"PRIMARY_DSN": "p", "REPLICA_DSN": "r"})
	cfg, err = parseFlags(nil, dsns, io.Discard)
	require.NoError(t, err)
	assert.False(t, cfg.Faults, "faults are off by default on one's own servers")
	assert.Equal(t, "p", cfg.PrimaryDSN)

	for _, tc := range []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{"-faults"}, dsns, "-faults needs the local pair"},
		{nil, env(map[string]string{"PRIMARY_DSN": "p"}), "set both"},
		{[]string{"-rows", "0"}, noEnv, "-rows 0"},
		{[]string{"-chunk", "-1"}, noEnv, "-chunk -1"},
		{[]string{"-tolerance", "0s"}, noEnv, "-tolerance 0s"},
		{[]string{"-pace", "-1s"}, noEnv, "-pace -1s"},
		{[]string{"extra"}, noEnv, "unexpected arguments"},
	} {
		_, err := parseFlags(tc.args, tc.env, io.Discard)
		assert.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}

func TestConsole(t *testing.T) {
	var b bytes.Buffer
	c := newConsole(&b, false, time.Now())
	c.Status("1 / 2 rows")
	c.Printf("demo: %s", "event")
	c.EndStatus()
	assert.Equal(t, "  0.0s 1 / 2 rows\n  0.0s demo: event\n", b.String())

	b.Reset()
	c = newConsole(&b, true, time.Now())
	c.Status("1 / 2 rows")
	c.Printf("demo: event")
	c.Status("2 / 2 rows")
	c.EndStatus()
	assert.Equal(t, "\r\x1b[K  0.0s 1 / 2 rows"+
		"\r\x1b[K  0.0s demo: event\n  0.0s 1 / 2 rows"+
		"\r\x1b[K  0.0s 2 / 2 rows\n", b.String())
}

func TestOnlyCanceled(t *testing.T) {
	restore := errors.New("restore the replica: boom")
	assert.True(t, onlyCanceled(nil))
	assert.True(t, onlyCanceled(context.Canceled))
	assert.True(t, onlyCanceled(fmt.Errorf("copy the chunk after id 8: %w", context.Canceled)))
	assert.True(t, onlyCanceled(errors.Join(context.Canceled, nil)))
	assert.False(t, onlyCanceled(errors.Join(context.Canceled, restore)), "a failed restore must be reported")
	assert.False(t, onlyCanceled(restore))
}

func TestSummary(t *testing.T) {
	byKind := map[string]time.Duration{"lag": 4960 * time.Millisecond, "not flowing": 4080 * time.Millisecond}
	s := summary{Rows: 300000, Copied: 300000, Checked: true, Verified: true, Checksum: "300,000 rows, CRC32 sum 42",
		Elapsed: 25 * time.Second, CopyTime: 23 * time.Second, WorstLag: 3 * time.Second, Tolerance: time.Second, Faults: 2,
		Throttle: throttler.Stats{Episodes: 2, ThrottledTotal: 9040 * time.Millisecond, ThrottledByKind: byKind,
			Waits: 1, WaitedTotal: 8990 * time.Millisecond, Measurements: 251}}
	assert.Equal(t, `summary: 300,000 of 300,000 rows copied and verified (300,000 rows, CRC32 sum 42 in both tables)
  elapsed    25s (copy 23s)
  throttled  9s in 2 episodes: lag 5s, not flowing 4.1s
  blocked    9s in 1 BlockWait call
  measured   251 lag readings, 0 errors
  worst lag  3s (tolerance 1s)
  faults     2 injected
`, s.String())
	s = summary{Rows: 300000, Copied: 70000, Tolerance: time.Second,
		Throttle: throttler.Stats{Episodes: 1, ThrottledTotal: time.Second, ThrottledByKind: map[string]time.Duration{"not flowing": time.Second},
			Waits: 3, Measurements: 1234, Errors: 1}}
	assert.Contains(t, s.String(), "70,000 of 300,000 rows copied; not verified (the copy did not finish)")
	assert.Contains(t, s.String(), "throttled  1s in 1 episode (not flowing)\n")
	assert.Contains(t, s.String(), "in 3 BlockWait calls")
	assert.Contains(t, s.String(), "1,234 lag readings, 1 error\n")
	assert.NotContains(t, s.String(), "faults")
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 300000: "300,000", 1234567: "1,234,567", -4500: "-4,500"} {
		assert.Equal(t, want, thousands(n))
	}
}

func noEnv(string) string { return "" }

func dropDatabase(t *testing.T, dsn, name string) {
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quote(name))
	assert.NoError(t, err)
}

// syncBuffer is a bytes.Buffer that a run may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
