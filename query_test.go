package throttler

import (
	"context"
	"database/sql/driver"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newFakeQuery returns an unopened Query on a fake server answering v,
// polling every hour unless opts say otherwise: tests drive it with
// UpdateLag.
func newFakeQuery(t *testing.T, cfg QueryConfig, v driver.Value, opts ...Option) (*Query, *fakedb) {
	t.Helper()
	db, f := newFakedb(t)
	f.setValue(v)
	if cfg.SQL == "" {
		cfg.SQL = "SELECT v FROM knob"
	}
	all := append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour)}, opts...)
	q, err := NewQuery(db, cfg, nil, all...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	return q, f
}

func TestNewQueryRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		nodb bool
		cfg  QueryConfig
		opts []Option
		want string
	}{
		{"nil db", true, QueryConfig{SQL: "SELECT 1", Threshold: 1}, nil, "db *sql.DB is nil"},
		{"no SQL", false, QueryConfig{Threshold: 1}, nil, `QueryConfig.SQL "" is empty`},
		{"blank SQL", false, QueryConfig{SQL: " \n\t", Threshold: 1}, nil, "QueryConfig.SQL"},
		{"zero threshold", false, QueryConfig{SQL: "SELECT 1"}, nil, "QueryConfig.Threshold 0 must be a positive number"},
		{"negative threshold", false, QueryConfig{SQL: "SELECT 1", Threshold: -1}, nil, "QueryConfig.Threshold -1"},
		{"NaN threshold", false, QueryConfig{SQL: "SELECT 1", Threshold: math.NaN()}, nil, "QueryConfig.Threshold NaN"},
		{"infinite threshold", false, QueryConfig{SQL: "SELECT 1", Threshold: math.Inf(1)}, nil, "QueryConfig.Threshold +Inf"},
		{"bad option", false, QueryConfig{SQL: "SELECT 1", Threshold: 1}, []Option{WithQueryTimeout(-1)}, "WithQueryTimeout(-1ns)"},
		{"two problems", true, QueryConfig{}, nil, "QueryConfig.SQL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, _ := newFakedb(t)
			if c.nodb {
				db = nil
			}
			q, err := NewQuery(db, c.cfg, nil, c.opts...)
			assert.Nil(t, q)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

func TestQueryNumber(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want float64
		err  string // "" means a number
	}{
		{"int", int64(3), 3, ""},
		{"negative int", int64(-4), -4, ""},
		{"unsigned", uint64(math.MaxUint64), math.MaxUint64, ""},
		{"float", 0.25, 0.25, ""},
		{"float32", float32(0.5), 0.5, ""},
		{"decimal text", []byte("3.50"), 3.5, ""},
		{"negative decimal", []byte("-0.001"), -0.001, ""},
		{"exponent", []byte("1.5e3"), 1500, ""},
		{"text with spaces", " 7 ", 7, ""},
		{"NULL", nil, 0, "throttle query returned NULL: the value is unknown"},
		{"word", []byte("abc"), 0, `throttle query returned "abc", not a number`},
		{"empty", []byte(""), 0, `returned "", not a number`},
		{"NaN text", []byte("NaN"), 0, `returned "NaN", not a number`},
		{"Inf text", "Inf", 0, `returned "Inf", not a number`},
		{"hex text", []byte("0x10"), 0, `returned "0x10", not a number`},
		{"overflow text", []byte("1e999"), 0, `returned "1e999", not a number`},
		{"two dots", []byte("1.2.3"), 0, "not a number"},
		{"NaN float", math.NaN(), 0, "want a finite number"},
		{"time", time.Unix(0, 0).UTC(), 0, "(time.Time), not a number"},
		{"bool", true, 0, "(bool), not a number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := queryNumber(c.in)
			if c.err == "" {
				assert.NoError(t, err)
				assert.Equal(t, c.want, v)
				return
			}
			assert.ErrorContains(t, err, c.err)
			var bad *queryAnswerError
			assert.ErrorAs(t, err, &bad, "an answer, not a failed run")
		})
	}
}

func TestQueryVerdicts(t *testing.T) {
	cases := []struct {
		name      string
		threshold float64
		v         driver.Value
		reason    string // "" means clear
	}{
		{"below", 1, int64(0), ""},
		{"at", 1, int64(1), "throttle query value 1 >= 1"},
		{"above", 1, int64(3), "throttle query value 3 >= 1"},
		{"decimal", 0.5, []byte("0.75"), "throttle query value 0.75 >= 0.5"},
		{"large", 1e6, int64(2000000), "throttle query value 2000000 >= 1000000"},
		{"negative", 1, int64(-5), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, _ := newFakeQuery(t, QueryConfig{Threshold: c.threshold}, c.v)
			require.NoError(t, q.Open(context.Background()))
			assert.Equal(t, c.reason != "", q.IsThrottled())
			assert.Equal(t, c.reason, q.ThrottleReason())
		})
	}
}

func TestQueryValueAndArgs(t *testing.T) {
	q, f := newFakeQuery(t, QueryConfig{SQL: "SELECT v FROM knob WHERE k = ?", Threshold: 10, Args: []any{"copy"}}, []byte("2.5"))
	assert.Zero(t, q.Value())
	var got []driver.NamedValue
	f.set(func(_ string, args []driver.NamedValue) fakedbResult {
		got = args
		return fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{[]byte("2.5")}}}
	})
	require.NoError(t, q.Open(context.Background()))
	assert.Equal(t, 2.5, q.Value())
	require.Len(t, got, 1)
	assert.Equal(t, "copy", got[0].Value)
	assert.Equal(t, "SELECT v FROM knob WHERE k = ?", f.lastQuery())
	assert.Equal(t, "query", q.String())
}

// TestQueryUnusableAnswers: an answer that is not one number fails Open, and
// while open throttles at once, with the problem as the reason.
func TestQueryUnusableAnswers(t *testing.T) {
	cases := []struct {
		name   string
		result fakedbResult
		want   string
	}{
		{"zero rows", fakedbResult{cols: []string{"v"}}, "throttle query returned no rows; want exactly one"},
		{"two rows", fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{int64(1)}, {int64(2)}}}, "throttle query returned more than one row; want exactly one"},
		{"two columns", fakedbResult{cols: []string{"a", "b"}, rows: [][]driver.Value{{int64(1), int64(2)}}}, "throttle query returned 2 columns (a, b); want one numeric column"},
		{"NULL", fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{nil}}}, "throttle query returned NULL: the value is unknown"},
		{"not a number", fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{[]byte("busy")}}}, `throttle query returned "busy", not a number`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0))
			f.setResult(c.result)
			assert.ErrorContains(t, q.Open(context.Background()), c.want)
			assert.False(t, q.IsThrottled(), "false after a failed Open")

			f.setValue(int64(0))
			require.NoError(t, q.Open(context.Background()), "a failed Open may be retried")
			require.False(t, q.IsThrottled())
			f.setResult(c.result)
			assert.ErrorContains(t, q.UpdateLag(context.Background()), c.want)
			assert.True(t, q.IsThrottled(), "unknown throttles at once, not after the stale window")
			assert.Equal(t, c.want, q.ThrottleReason())
			assert.Zero(t, q.Value(), "the last number stays")

			f.setValue(int64(0))
			require.NoError(t, q.UpdateLag(context.Background()))
			assert.False(t, q.IsThrottled())
		})
	}
}

// TestQueryErrorFailsClosedAfterStaleWindow: a query that fails is not an
// answer: the last value stands for the stale window, then the throttler
// throttles with the error as its reason.
func TestQueryErrorFailsClosedAfterStaleWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the stale window passes on a fake clock
		q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0))
		f.setResult(fakedbResult{err: errBoom})
		err := q.Open(context.Background())
		require.ErrorIs(t, err, errBoom, "Open reports a failing query")
		assert.ErrorContains(t, err, "throttle query: boom")

		f.setValue(int64(0))
		require.NoError(t, q.Open(context.Background()))
		f.setResult(fakedbResult{err: errBoom})
		require.ErrorIs(t, q.UpdateLag(context.Background()), errBoom)
		assert.False(t, q.IsThrottled(), "one failed run inside the stale window keeps the last verdict")
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.True(t, q.IsThrottled())
		assert.Contains(t, q.ThrottleReason(), "no throttle query result for")
		assert.Contains(t, q.ThrottleReason(), "throttle query: boom")
	})
}

func TestQueryStaleTimerFires(t *testing.T) {
	q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0), WithInterval(minPeriod), WithStaleAfter(20*time.Millisecond))
	require.NoError(t, q.Open(context.Background()))
	f.setResult(fakedbResult{err: errBoom})
	require.Eventually(t, q.IsThrottled, 5*time.Second, time.Millisecond)
	assert.Contains(t, q.ThrottleReason(), "boom")
	f.setValue(int64(0))
	require.Eventually(t, func() bool { return !q.IsThrottled() }, 5*time.Second, time.Millisecond)
}

// TestQueryHangIsKilled: a run that outlives the query timeout fails closed
// after the stale window, one run at a time, and each timed-out run is
// killed on the server by its connection id.
func TestQueryHangIsKilled(t *testing.T) {
	q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0),
		WithInterval(minPeriod), WithQueryTimeout(5*time.Millisecond), WithStaleAfter(20*time.Millisecond))
	require.NoError(t, q.Open(context.Background()))
	f.setHang(true)
	var wg sync.WaitGroup
	for range 5 { // callers pile in alongside the monitor
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			_ = q.UpdateLag(ctx)
		}()
	}
	require.Eventually(t, q.IsThrottled, 5*time.Second, time.Millisecond)
	wg.Wait()
	assert.Contains(t, q.ThrottleReason(), "no throttle query result")
	assert.Contains(t, q.ThrottleReason(), "context deadline exceeded")
	require.Eventually(t, func() bool { return len(f.killed()) >= 2 }, 5*time.Second, time.Millisecond)
	assert.EqualValues(t, 1, f.maxSeen.Load(), "never more than one run in flight")
	hung := f.hung()
	for _, id := range f.killed() {
		assert.Contains(t, hung, id, "KILL QUERY names a hung run's connection")
	}

	f.setHang(false)
	require.Eventually(t, func() bool { return !q.IsThrottled() }, 5*time.Second, time.Millisecond)
}

// TestQueryCloseKillsTheRunInFlight: Close does not leave a hung run behind
// on the server.
func TestQueryCloseKillsTheRunInFlight(t *testing.T) {
	q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0),
		WithInterval(minPeriod), WithQueryTimeout(time.Hour), WithStaleAfter(time.Hour))
	require.NoError(t, q.Open(context.Background()))
	f.setHang(true)
	require.Eventually(t, func() bool { return f.inFlight.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, q.Close())
	assert.Zero(t, f.inFlight.Load())
	hung := f.hung()
	require.Len(t, hung, 1, "only Close ends a run with an hour's timeout")
	assert.Equal(t, hung, f.killed(), "the run Close cut short is killed, once")
}

func TestQueryHotPathDoesNotAllocate(t *testing.T) {
	q, _ := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0))
	require.NoError(t, q.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = q.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { q.BlockWait(ctx) }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = q.Value() }))
}

func TestQueryContract(t *testing.T) {
	dbContract(t, func(t *testing.T, maxWait time.Duration) (Throttler, func(bool)) {
		q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0), WithMaxWait(maxWait))
		return q, func(on bool) {
			v := int64(0)
			if on {
				v = 1
			}
			f.setValue(v)
			_ = q.UpdateLag(context.Background())
		}
	})
}
