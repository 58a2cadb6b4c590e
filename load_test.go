package throttler

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
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
		{"zero threshold", false, LoadConfig{}, nil, "LoadConfig.Threshold 0 must be a positive finite number"},
		{"negative threshold", false, LoadConfig{Threshold: -3}, nil, "LoadConfig.Threshold -3 must be a positive finite number"},
		{"negative fractional threshold", false, LoadConfig{Threshold: -0.5}, nil, "LoadConfig.Threshold -0.5 must be a positive finite number"},
		{"NaN threshold", false, LoadConfig{Threshold: math.NaN()}, nil, "LoadConfig.Threshold NaN must be a positive finite number"},
		{"infinite threshold", false, LoadConfig{Threshold: math.Inf(1)}, nil, "LoadConfig.Threshold +Inf must be a positive finite number"},
		{"negative rate threshold", false, LoadConfig{Variable: "Innodb_rows_inserted", Rate: true, Threshold: -100}, nil, "LoadConfig.Threshold -100 must be a positive finite number"},
		{"critical at threshold", false, LoadConfig{Threshold: 25, Critical: 25}, nil, "LoadConfig.Critical 25 must be a finite number above Threshold 25"},
		{"critical below threshold", false, LoadConfig{Threshold: 25, Critical: 10}, nil, "LoadConfig.Critical 10 must be a finite number above Threshold 25"},
		{"negative critical", false, LoadConfig{Threshold: 25, Critical: -1}, nil, "LoadConfig.Critical -1"},
		{"NaN critical", false, LoadConfig{Threshold: 25, Critical: math.NaN()}, nil, "LoadConfig.Critical NaN"},
		{"infinite critical", false, LoadConfig{Threshold: 25, Critical: math.Inf(1)}, nil, "LoadConfig.Critical +Inf"},
		{"negative critical for", false, LoadConfig{Threshold: 25, Critical: 50, CriticalFor: -time.Second}, nil, "LoadConfig.CriticalFor -1s must not be negative"},
		{"critical for without critical", false, LoadConfig{Threshold: 25, CriticalFor: time.Second}, nil, "LoadConfig.CriticalFor 1s is set but no Critical level is"},
		{"injection", false, LoadConfig{Variable: "x' OR '1'='1", Threshold: 1}, nil, `LoadConfig.Variable "x' OR '1'='1" is not a status variable name`},
		{"pattern", false, LoadConfig{Variable: "Threads%", Threshold: 1}, nil, `LoadConfig.Variable "Threads%"`},
		{"space", false, LoadConfig{Variable: "Threads running", Threshold: 1}, nil, `LoadConfig.Variable "Threads running"`},
		{"too long", false, LoadConfig{Variable: strings.Repeat("a", 65), Threshold: 1}, nil, "is not a status variable name"},
		{"both forms", false, LoadConfig{Threshold: 5, Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}}}, nil, "Limits is set together with"},
		{"rate beside limits", false, LoadConfig{Rate: true, Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}}}, nil, "Limits is set together with"},
		{"limit without name", false, LoadConfig{Limits: []LoadLimit{{Threshold: 5}}}, nil, "LoadConfig.Limits[0].Variable is empty"},
		{"limit bad threshold", false, LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}, {Variable: "Threads_connected"}}}, nil, "LoadConfig.Limits[1].Threshold 0 must be a positive finite number"},
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
		in    string
		want  float64
		exact bool // read exactly as a uint64 too
		ok    bool
	}{
		{"0", 0, true, true},
		{"31", 31, true, true},
		{"-2", -2, false, true},
		{"0.250000", 0.25, false, true}, // wsrep_flow_control_paused
		{"749.408802", 749.408802, false, true},
		{"1.5e3", 1500, false, true},
		{"18446744073709551615", 18446744073709551615, true, true}, // an unsigned counter past int64
		{"99999999999999999999999", 1e23, false, true},
		{"", 0, false, false},
		{"AUTH_MASTER", 0, false, false},
		{" 3", 0, false, false},
		{"NaN", 0, false, false},
		{"Inf", 0, false, false},
		{"1e999", 0, false, false}, // past float64: not a value to compare (so it throttles)
		{"0x10", 0, false, false},
		{"1_000", 0, false, false},
	}
	for _, c := range cases {
		v, err := loadParseValue(c.in)
		if !c.ok {
			assert.Error(t, err, c.in)
			continue
		}
		if assert.NoError(t, err, c.in) {
			assert.Equal(t, c.want, v.f, c.in)
			assert.Equal(t, c.exact, v.exact, c.in)
		}
	}
	v, err := loadParseValue("18446744073709551615")
	require.NoError(t, err)
	assert.Equal(t, uint64(math.MaxUint64), v.u, "exact past 2^53")
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
		assert.ErrorContains(t, l.Open(context.Background()), `status variable Rpl_status = "AUTH_MASTER": not a finite decimal number`)
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
	synctest.Test(t, func(t *testing.T) {
		l, f := newFakeLoad(t, LoadConfig{Threshold: 25, Critical: 50}, loadRunning("60"))
		require.NoError(t, l.Open(context.Background()))
		require.True(t, l.IsCritical())
		f.setStatus(loadRunning("1"))
		require.NoError(t, l.UpdateLag(context.Background()))
		require.False(t, l.IsThrottled())

		f.setResult(fakedbResult{err: errBoom})
		assert.ErrorIs(t, l.UpdateLag(context.Background()), errBoom)
		assert.False(t, l.IsThrottled(), "one failed reading inside the stale window keeps the last verdict")
		time.Sleep(time.Hour) // the stale window ends
		synctest.Wait()
		assert.True(t, l.IsThrottled())
		assert.Contains(t, l.ThrottleReason(), "no status reading for")
		assert.Contains(t, l.ThrottleReason(), "boom")
		assert.False(t, l.IsCritical(), "a failed reading never raises the critical level")

		f.setStatus(loadRunning("1"))
		require.NoError(t, l.UpdateLag(context.Background()))
		assert.False(t, l.IsThrottled())

		f.setStatus(map[string]string{"Threads_running": "many"})
		assert.ErrorContains(t, l.UpdateLag(context.Background()), "not a finite decimal number")
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

// TestLoadMonitorPolls: the monitor, not only UpdateLag, follows the server.
func TestLoadMonitorPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f := newFakeLoad(t, LoadConfig{Threshold: 10}, loadRunning("1"), WithInterval(minPeriod))
		require.NoError(t, l.Open(context.Background()))
		f.setStatus(loadRunning("11"))
		time.Sleep(minPeriod) // the next reading
		synctest.Wait()
		require.True(t, l.IsThrottled())
		f.setStatus(loadRunning("2"))
		time.Sleep(minPeriod)
		synctest.Wait()
		require.False(t, l.IsThrottled())
		assert.EqualValues(t, 1, f.maxSeen.Load(), "one reading in flight at a time")
	})
}

// TestLoadFractional: a status value with a fraction is a value like any
// other (it used to read as "not an integer", which throttled for good).
func TestLoadFractional(t *testing.T) {
	paused := func(v string) map[string]string { return map[string]string{"wsrep_flow_control_paused": v} }
	l, f := newFakeLoad(t, LoadConfig{Variable: "wsrep_flow_control_paused", Threshold: 0.5, Critical: 0.9}, paused("0.250000"))
	require.NoError(t, l.Open(context.Background()))
	assert.False(t, l.IsThrottled(), l.ThrottleReason())
	assert.Equal(t, 0.25, l.Value())

	f.setStatus(paused("0.500000"))
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.Equal(t, "wsrep_flow_control_paused 0.500000 >= 0.5", l.ThrottleReason(), "the value as the server wrote it")
	assert.False(t, l.IsCritical())
	f.setStatus(paused("0.95"))
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.Equal(t, "wsrep_flow_control_paused 0.95 >= 0.9", l.CriticalReason())
}

// TestLoadBigCounters: a counter past int64 and 2^53 still compares at or
// above its threshold, and its reason shows the server's digits.
func TestLoadBigCounters(t *testing.T) {
	l, f := newFakeLoad(t, LoadConfig{Variable: "Bytes_sent", Threshold: 1e19}, map[string]string{"Bytes_sent": "9999999999999000000"})
	require.NoError(t, l.Open(context.Background()))
	assert.False(t, l.IsThrottled(), l.ThrottleReason())
	f.setStatus(map[string]string{"Bytes_sent": "18446744073709551615"})
	require.NoError(t, l.UpdateLag(context.Background()))
	assert.Equal(t, "Bytes_sent 18446744073709551615 >= 10000000000000000000", l.ThrottleReason())

	// 2^53+1 rounds to 2^53: the one way rounding can err is toward
	// throttled, a hair early.
	e, g := newFakeLoad(t, LoadConfig{Variable: "Bytes_sent", Threshold: 1 << 53}, map[string]string{"Bytes_sent": "9007199254740991"})
	require.NoError(t, e.Open(context.Background()))
	assert.False(t, e.IsThrottled(), "2^53-1 < 2^53")
	g.setStatus(map[string]string{"Bytes_sent": "9007199254740993"})
	require.NoError(t, e.UpdateLag(context.Background()))
	assert.True(t, e.IsThrottled())
}

// TestLoadRate: a Rate limit compares the increase per second between two
// monitor readings; none after Open's first reading or across a reset.
func TestLoadRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rows atomic.Int64
		db, f := newFakedb(t)
		f.setStatusFunc(func() map[string]string {
			return map[string]string{"Innodb_rows_inserted": strconv.FormatInt(rows.Load(), 10)}
		})
		l, err := NewLoad(db, LoadConfig{Variable: "Innodb_rows_inserted", Rate: true, Threshold: 1000, Critical: 5000}, nil,
			WithInterval(time.Second), WithStaleAfter(time.Hour))
		require.NoError(t, err)
		defer l.Close()
		rows.Store(1_000_000) // whatever the counter holds at start is no rate
		require.NoError(t, l.Open(context.Background()))
		assert.False(t, l.IsThrottled(), "no rate from one reading")
		assert.Zero(t, l.Value())

		// poll sets the counter and lets one monitor reading (every 1s)
		// see it.
		poll := func(v int64) {
			t.Helper()
			rows.Store(v)
			time.Sleep(time.Second)
			synctest.Wait()
		}
		poll(1_000_500)
		assert.False(t, l.IsThrottled(), l.ThrottleReason())
		assert.Equal(t, 500.0, l.Value())
		poll(1_002_500)
		assert.Equal(t, "Innodb_rows_inserted 2000/s >= 1000/s", l.ThrottleReason())
		assert.False(t, l.IsCritical())
		poll(1_008_500)
		assert.Equal(t, "Innodb_rows_inserted 6000/s >= 5000/s", l.CriticalReason())
		poll(1_009_000)
		assert.False(t, l.IsThrottled(), l.ThrottleReason())
		assert.False(t, l.IsCritical(), l.CriticalReason())

		poll(100) // FLUSH STATUS, or a restart: no rate, never a negative one
		assert.False(t, l.IsThrottled(), l.ThrottleReason())
		assert.Zero(t, l.Value())
		poll(3_100)
		assert.Equal(t, "Innodb_rows_inserted 3000/s >= 1000/s", l.ThrottleReason())

		// A reading sooner than half an interval after the last keeps
		// the last rate: 96900 rows in 0.4s is not a rate to act on.
		rows.Store(100_000)
		time.Sleep(400 * time.Millisecond)
		require.NoError(t, l.UpdateLag(context.Background()))
		assert.Equal(t, 3000.0, l.Value())
		assert.Equal(t, "Innodb_rows_inserted 3000/s >= 1000/s", l.ThrottleReason())
		time.Sleep(600 * time.Millisecond) // the monitor's next reading, 1s after the last rate's start
		synctest.Wait()
		assert.Equal(t, 96900.0, l.Value())
		poll(100_000)
		assert.False(t, l.IsThrottled(), "a counter that stands still: 0/s")
		require.NoError(t, l.Close())
	})
}

// TestLoadRateNext: the increase of a counter is exact past 2^53, and a
// counter that goes down gives no rate, whether integer or not.
func TestLoadRateNext(t *testing.T) {
	val := func(s string) loadValue {
		v, err := loadParseValue(s)
		require.NoError(t, err)
		return v
	}
	t0 := time.Now()
	var r loadRate
	_, ok := r.next(val("18446744073709550000"), t0, time.Second)
	assert.False(t, ok, "one reading is no rate")
	rate, ok := r.next(val("18446744073709551615"), t0.Add(time.Second), time.Second)
	assert.True(t, ok)
	assert.Equal(t, 1615.0, rate, "float64 would say 2048")

	var g loadRate
	g.next(val("10.5"), t0, time.Second)
	rate, ok = g.next(val("12"), t0.Add(2*time.Second), time.Second)
	assert.True(t, ok)
	assert.Equal(t, 0.75, rate)
	_, ok = g.next(val("3.25"), t0.Add(3*time.Second), time.Second)
	assert.False(t, ok, "went down")
	rate, ok = g.next(val("4.25"), t0.Add(4*time.Second), time.Second)
	assert.True(t, ok, "the next interval has a rate again")
	assert.Equal(t, 1.0, rate)
}

func TestLoadFormatRate(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 5230.4: "5230", 123456.7: "123457", 12.345: "12.35", 0.0123456: "0.01235", 1: "1", 2.5: "2.5"} {
		assert.Equal(t, want, loadFormatRate(in), "%v", in)
	}
}
