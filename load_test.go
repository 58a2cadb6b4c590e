package throttler

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newFakeLoad returns an unopened Load on a fake server whose status
// variables are status, polling every hour unless opts say otherwise: tests
// drive it with UpdateLag.
func newFakeLoad(t *testing.T, cfg LoadConfig, status map[string]string, opts ...Option) (*Load, *fakedb) {
	t.Helper()
	db, f := newFakedb(t)
	f.setStatus(status)
	all := append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour)}, opts...)
	l, err := NewLoad(db, cfg, nil, all...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l, f
}

func loadRunning(n string) map[string]string { return map[string]string{"Threads_running": n} }

func TestNewLoadRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		nodb bool
		cfg  LoadConfig
		opts []Option
		want string
	}{
		{"nil db", true, LoadConfig{Threshold: 1}, nil, "db *sql.DB is nil"},
		{"zero threshold", false, LoadConfig{}, nil, "LoadConfig.Threshold 0 must be positive"},
		{"negative threshold", false, LoadConfig{Threshold: -3}, nil, "LoadConfig.Threshold -3 must be positive"},
		{"critical at threshold", false, LoadConfig{Threshold: 25, Critical: 25}, nil, "LoadConfig.Critical 25 must be above Threshold 25"},
		{"critical below threshold", false, LoadConfig{Threshold: 25, Critical: 10}, nil, "LoadConfig.Critical 10 must be above Threshold 25"},
		{"negative critical", false, LoadConfig{Threshold: 25, Critical: -1}, nil, "LoadConfig.Critical -1"},
		{"negative critical for", false, LoadConfig{Threshold: 25, Critical: 50, CriticalFor: -time.Second}, nil, "LoadConfig.CriticalFor -1s must not be negative"},
		{"critical for without critical", false, LoadConfig{Threshold: 25, CriticalFor: time.Second}, nil, "LoadConfig.CriticalFor 1s is set but no Critical level is"},
		{"injection", false, LoadConfig{Variable: "x' OR '1'='1", Threshold: 1}, nil, `LoadConfig.Variable "x' OR '1'='1" is not a status variable name`},
		{"pattern", false, LoadConfig{Variable: "Threads%", Threshold: 1}, nil, `LoadConfig.Variable "Threads%"`},
		{"space", false, LoadConfig{Variable: "Threads running", Threshold: 1}, nil, `LoadConfig.Variable "Threads running"`},
		{"too long", false, LoadConfig{Variable: strings.Repeat("a", 65), Threshold: 1}, nil, "is not a status variable name"},
		{"both forms", false, LoadConfig{Threshold: 5, Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}}}, nil, "Limits is set together with"},
		{"limit without name", false, LoadConfig{Limits: []LoadLimit{{Threshold: 5}}}, nil, "LoadConfig.Limits[0].Variable is empty"},
		{"limit bad threshold", false, LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}, {Variable: "Threads_connected"}}}, nil, "LoadConfig.Limits[1].Threshold 0 must be positive"},
		{"limit repeated", false, LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}, {Variable: "threads_RUNNING", Threshold: 9}}}, nil, `LoadConfig.Limits[1].Variable "threads_RUNNING" repeats Limits[0]`},
		{"bad option", false, LoadConfig{Threshold: 1}, []Option{WithInterval(0)}, "WithInterval(0s)"},
		{"two problems", true, LoadConfig{}, nil, "LoadConfig.Threshold 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, _ := newFakedb(t)
			if c.nodb {
				db = nil
			}
			l, err := NewLoad(db, c.cfg, nil, c.opts...)
			assert.Nil(t, l)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

func TestLoadStatement(t *testing.T) {
	l, _ := newFakeLoad(t, LoadConfig{Threshold: 25}, nil)
	assert.Equal(t, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_running')", l.stmt, "Threads_running by default; IN, not LIKE: _ is a wildcard")
	m, _ := newFakeLoad(t, LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 25}, {Variable: "Threads_connected", Threshold: 500}}}, nil)
	assert.Equal(t, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_running', 'Threads_connected')", m.stmt)
	assert.Equal(t, "load", l.String())
}

func TestLoadParseValue(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"31", 31, true},
		{"-2", -2, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"18446744073709551615", math.MaxInt64, true}, // an unsigned counter past int64: saturates
		{"99999999999999999999999", math.MaxInt64, true},
		{"", 0, false},
		{"AUTH_MASTER", 0, false},
		{"749.408802", 0, false},
		{" 3", 0, false},
		{"-99999999999999999999999", 0, false},
	}
	for _, c := range cases {
		v, err := loadParseValue(c.in)
		if c.ok {
			assert.NoError(t, err, c.in)
			assert.Equal(t, c.want, v, c.in)
		} else {
			assert.Error(t, err, c.in)
		}
	}
}

func TestLoadVerdicts(t *testing.T) {
	cases := []struct {
		name     string
		value    string
		reason   string // "" means clear
		critical string // "" means not critical
	}{
		{"below", "24", "", ""},
		{"at threshold", "25", "Threads_running 25 >= 25", ""},
		{"above threshold", "31", "Threads_running 31 >= 25", ""},
		{"at critical", "100", "Threads_running 100 >= 25", "Threads_running 100 >= 100"},
		{"above critical", "120", "Threads_running 120 >= 25", "Threads_running 120 >= 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, _ := newFakeLoad(t, LoadConfig{Threshold: 25, Critical: 100}, loadRunning(c.value))
			require.NoError(t, l.Open(context.Background()))
			assert.Equal(t, c.reason != "", l.IsThrottled())
			assert.Equal(t, c.reason, l.ThrottleReason())
			assert.Equal(t, c.critical != "", l.IsCritical())
			assert.Equal(t, c.critical, l.CriticalReason())
		})
	}
}

func TestLoadValues(t *testing.T) {
	l, f := newFakeLoad(t, LoadConfig{Limits: []LoadLimit{
		{Variable: "Threads_running", Threshold: 25, Critical: 50},
		{Variable: "Threads_connected", Threshold: 500},
	}}, map[string]string{"Threads_running": "3", "Threads_connected": "12", "Other": "x"})
	assert.Zero(t, l.Value(), "0 before the first reading")
	require.NoError(t, l.Open(context.Background()))
	assert.EqualValues(t, 3, l.Value(), "the first variable's")
	v, ok := l.ValueOf("threads_CONNECTED")
	assert.True(t, ok)
	assert.EqualValues(t, 12, v)
	_, ok = l.ValueOf("Uptime")
	assert.False(t, ok)
	assert.False(t, l.IsThrottled())

	f.setStatus(map[string]string{"Threads_running": "3", "Threads_connected": "700"})
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.Equal(t, "Threads_connected 700 >= 500", l.ThrottleReason(), "any variable throttles")
	assert.False(t, l.IsCritical())

	f.setStatus(map[string]string{"Threads_running": "60", "Threads_connected": "700"})
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.Equal(t, "Threads_running 60 >= 25, Threads_connected 700 >= 500", l.ThrottleReason(), "every variable over its threshold is named")
	assert.Equal(t, "Threads_running 60 >= 50", l.CriticalReason())

	// The server matches names case-insensitively; so does the reading.
	f.setStatus(map[string]string{"THREADS_RUNNING": "1", "threads_connected": "1"})
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.False(t, l.IsThrottled(), l.ThrottleReason())
	assert.False(t, l.IsCritical())
}

func TestLoadOpenFailsOnAnUnusableVariable(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		l, _ := newFakeLoad(t, LoadConfig{Variable: "Threads_runing", Threshold: 5}, loadRunning("1"))
		err := l.Open(context.Background())
		require.ErrorIs(t, err, ErrUnavailable)
		assert.ErrorContains(t, err, `the server has no global status variable "Threads_runing"`)
		assert.NotContains(t, err.Error(), "lag source", "the sentinel's text is about lag")
		assert.False(t, l.IsThrottled())
		assert.False(t, l.IsCritical())
	})
	t.Run("one of several missing", func(t *testing.T) {
		l, _ := newFakeLoad(t, LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}, {Variable: "Nope", Threshold: 5}}}, loadRunning("1"))
		assert.ErrorContains(t, l.Open(context.Background()), `"Nope"`)
	})
	t.Run("not a number", func(t *testing.T) {
		l, _ := newFakeLoad(t, LoadConfig{Variable: "Rpl_status", Threshold: 5}, map[string]string{"Rpl_status": "AUTH_MASTER"})
		assert.ErrorContains(t, l.Open(context.Background()), `status variable Rpl_status = "AUTH_MASTER": not an integer`)
	})
	t.Run("query error", func(t *testing.T) {
		l, f := newFakeLoad(t, LoadConfig{Threshold: 5}, nil)
		f.setResult(fakedbResult{err: errBoom})
		err := l.Open(context.Background())
		assert.ErrorIs(t, err, errBoom)
		assert.ErrorContains(t, err, "SHOW GLOBAL STATUS: boom")
	})
}

// TestLoadFailsClosed: a reading that fails keeps the last verdict for the
// stale window, then throttles with the error; a reading that comes back
// unusable throttles at once.
func TestLoadFailsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the stale window passes on a fake clock
		l, f := newFakeLoad(t, LoadConfig{Threshold: 25, Critical: 50}, loadRunning("60"))
		require.NoError(t, l.Open(context.Background()))
		require.True(t, l.IsCritical())
		f.setStatus(loadRunning("1"))
		require.NoError(t, l.UpdateLag(context.Background()))
		require.False(t, l.IsThrottled())

		f.setResult(fakedbResult{err: errBoom})
		assert.ErrorIs(t, l.UpdateLag(context.Background()), errBoom)
		assert.False(t, l.IsThrottled(), "one failed reading inside the stale window keeps the last verdict")
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.True(t, l.IsThrottled())
		assert.Contains(t, l.ThrottleReason(), "no status reading for")
		assert.Contains(t, l.ThrottleReason(), "boom")
		assert.False(t, l.IsCritical(), "a failed reading never raises the critical level")

		f.setStatus(loadRunning("1"))
		require.NoError(t, l.UpdateLag(context.Background()))
		assert.False(t, l.IsThrottled())

		f.setStatus(map[string]string{"Threads_running": "many"})
		assert.ErrorContains(t, l.UpdateLag(context.Background()), "not an integer")
		assert.True(t, l.IsThrottled(), "an answer that cannot be read is a reading of 'unknown': throttle now")
		assert.Contains(t, l.ThrottleReason(), `load unknown: status variable Threads_running = "many"`)
	})
}

func TestLoadCritical(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	db, f := newFakedb(t)
	f.setStatus(loadRunning("1"))
	l, err := NewLoad(db, LoadConfig{Threshold: 10, Critical: 20}, logger, WithInterval(time.Hour), WithName("primary-1"))
	require.NoError(t, err)
	assert.False(t, l.IsCritical(), "false before Open")
	require.NoError(t, l.Open(context.Background()))
	for _, v := range []string{"25", "30", "21", "15", "5", "40"} {
		f.setStatus(loadRunning(v))
		require.NoError(t, l.UpdateLag(context.Background()))
	}
	assert.True(t, l.IsCritical())
	assert.Equal(t, "Threads_running 40 >= 20", l.CriticalReason())
	assert.ErrorIs(t, l.Open(context.Background()), ErrAlreadyOpen)
	assert.True(t, l.IsCritical(), "a second Open changes nothing")
	require.NoError(t, l.Close())
	assert.False(t, l.IsCritical(), "a closed throttler is never critical")
	assert.Equal(t, "", l.CriticalReason())

	out := buf.String()
	assert.Equal(t, 2, strings.Count(out, "throttler: load critical"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: load no longer critical"), out)
	assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: open"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: closed"), out)
	assert.Equal(t, 8, strings.Count(out, "\n"), "one line per change, none per reading:\n"+out)
	assert.Equal(t, 8, strings.Count(out, "throttler=primary-1"), out)
}

// TestLoadCriticalFor: with CriticalFor, a critical reading counts only once
// the level has held that long, over consecutive successful readings; a
// reading below it starts over.
func TestLoadCriticalFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f := newFakeLoad(t, LoadConfig{Threshold: 10, Critical: 20, CriticalFor: time.Second}, loadRunning("50"))
		read := func(v string) {
			t.Helper()
			f.setStatus(loadRunning(v))
			require.NoError(t, l.UpdateLag(context.Background()))
		}
		require.NoError(t, l.Open(context.Background()))
		assert.False(t, l.IsCritical(), "one reading is a burst, not yet a level")
		assert.True(t, l.IsThrottled(), "the threshold needs no confirmation")
		time.Sleep(500 * time.Millisecond)
		read("30")
		assert.False(t, l.IsCritical(), "held for 0.5s < 1s")
		time.Sleep(500 * time.Millisecond)
		read("15") // below critical: the run starts over
		time.Sleep(500 * time.Millisecond)
		read("30")
		time.Sleep(900 * time.Millisecond)
		read("30")
		assert.False(t, l.IsCritical(), "held for 0.9s since the run restarted")
		time.Sleep(100 * time.Millisecond)
		read("40")
		assert.True(t, l.IsCritical(), "held for 1s")
		assert.Equal(t, "Threads_running 40 >= 20", l.CriticalReason())
		read("15")
		assert.False(t, l.IsCritical(), "clears at once")
		require.NoError(t, l.Close())
	})
}

func TestLoadCriticalEndsWithOpenContext(t *testing.T) {
	l, _ := newFakeLoad(t, LoadConfig{Threshold: 10, Critical: 20}, loadRunning("50"))
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, l.Open(ctx))
	require.True(t, l.IsCritical())
	cancel()
	assert.False(t, l.IsCritical(), "not critical the moment cancel returns")
	assert.False(t, l.IsThrottled())
	assert.ErrorIs(t, l.UpdateLag(context.Background()), ErrClosed)
	assert.False(t, l.IsCritical(), "nothing raises it again")
}

func TestLoadHotPathDoesNotAllocate(t *testing.T) {
	l, _ := newFakeLoad(t, LoadConfig{Threshold: 10, Critical: 20}, loadRunning("1"))
	require.NoError(t, l.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = l.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = l.IsCritical() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { l.BlockWait(ctx) }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = l.Value() }))
}

func TestLoadContract(t *testing.T) {
	dbContract(t, func(t *testing.T, maxWait time.Duration) (Throttler, func(bool)) {
		l, f := newFakeLoad(t, LoadConfig{Threshold: 10}, loadRunning("1"), WithMaxWait(maxWait))
		return l, func(on bool) {
			v := "1"
			if on {
				v = "10"
			}
			f.setStatus(loadRunning(v))
			_ = l.UpdateLag(context.Background())
		}
	})
}

// TestLoadMonitorPolls: the monitor, not only UpdateLag, follows the server.
func TestLoadMonitorPolls(t *testing.T) {
	l, f := newFakeLoad(t, LoadConfig{Threshold: 10}, loadRunning("1"), WithInterval(minPeriod))
	require.NoError(t, l.Open(context.Background()))
	f.setStatus(loadRunning("11"))
	require.Eventually(t, l.IsThrottled, 5*time.Second, time.Millisecond)
	f.setStatus(loadRunning("2"))
	require.Eventually(t, func() bool { return !l.IsThrottled() }, 5*time.Second, time.Millisecond)
	assert.EqualValues(t, 1, f.maxSeen.Load(), "one reading in flight at a time")
}

// dbContract runs the throttler contract on a polling throttler. mk returns
// an unopened throttler with WithMaxWait(maxWait), and a lever that makes
// its next reading throttled or clear and publishes it.
func dbContract(t *testing.T, mk func(t *testing.T, maxWait time.Duration) (Throttler, func(bool))) {
	t.Run("clear BlockWait returns at once", func(t *testing.T) {
		th, _ := mk(t, 0)
		require.NoError(t, th.Open(context.Background()))
		requireReturns(t, waiters(context.Background(), th, 10), 5*time.Second, "clear")
	})
	t.Run("throttled waiters block, clear wakes them all", func(t *testing.T) {
		th, throttle := mk(t, 0)
		require.NoError(t, th.Open(context.Background()))
		throttle(true)
		require.True(t, th.IsThrottled())
		done := waiters(context.Background(), th, 50)
		requireBlocked(t, done, "throttled")
		throttle(false)
		requireReturns(t, done, 5*time.Second, "cleared")
	})
	t.Run("Close releases waiters and IsThrottled", func(t *testing.T) {
		th, throttle := mk(t, 0)
		require.NoError(t, th.Open(context.Background()))
		throttle(true)
		done := waiters(context.Background(), th, 50)
		requireBlocked(t, done, "throttled")
		require.NoError(t, th.Close())
		requireReturns(t, done, 5*time.Second, "Close")
		assert.False(t, th.IsThrottled())
		throttle(true) // a late reading after Close changes nothing
		assert.False(t, th.IsThrottled())
		require.NoError(t, th.Close(), "Close is idempotent")
	})
	t.Run("end of Open's context releases", func(t *testing.T) {
		th, throttle := mk(t, 0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		require.NoError(t, th.Open(ctx))
		throttle(true)
		done := waiters(context.Background(), th, 50)
		requireBlocked(t, done, "throttled")
		cancel()
		requireReturns(t, done, 5*time.Second, "Open's context cancelled")
		assert.False(t, th.IsThrottled())
		assert.ErrorIs(t, th.UpdateLag(context.Background()), ErrClosed)
	})
	t.Run("caller context ends the wait", func(t *testing.T) {
		th, throttle := mk(t, 0)
		require.NoError(t, th.Open(context.Background()))
		throttle(true)
		ctx, cancel := context.WithCancel(context.Background())
		done := waiters(ctx, th, 10)
		requireBlocked(t, done, "throttled")
		cancel()
		requireReturns(t, done, 5*time.Second, "caller cancel")
		assert.True(t, th.IsThrottled())
	})
	t.Run("WithMaxWait caps the wait", func(t *testing.T) {
		th, throttle := mk(t, 10*time.Millisecond)
		require.NoError(t, th.Open(context.Background()))
		throttle(true)
		requireReturns(t, waiters(context.Background(), th, 10), 5*time.Second, "max wait")
		w := th.(Waiter)
		err := w.Wait(context.Background())
		assert.ErrorIs(t, err, ErrMaxWait)
		assert.ErrorContains(t, err, th.(Reasoner).ThrottleReason())
	})
	t.Run("lifecycle errors", func(t *testing.T) {
		th, _ := mk(t, 0)
		assert.False(t, th.IsThrottled(), "false before Open")
		assert.ErrorIs(t, th.UpdateLag(context.Background()), ErrNotOpen)
		require.NoError(t, th.Open(context.Background()))
		assert.ErrorIs(t, th.Open(context.Background()), ErrAlreadyOpen)
		require.NoError(t, th.Close())
		require.NoError(t, th.Close())
		assert.ErrorIs(t, th.Open(context.Background()), ErrClosed)
		assert.ErrorIs(t, th.UpdateLag(context.Background()), ErrClosed)
		assert.ErrorIs(t, th.(Waiter).Wait(context.Background()), ErrClosed)

		never, _ := mk(t, 0)
		require.NoError(t, never.Close(), "Close before Open")
		assert.ErrorIs(t, never.Open(context.Background()), ErrClosed)
	})
}
