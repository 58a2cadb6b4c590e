package throttler

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewReplicationThrottlerRejectsBadInput(t *testing.T) {
	src := &fakeSource{}
	cases := []struct {
		name      string
		db        bool
		tolerance time.Duration
		opts      []Option
		want      string
	}{
		{"nil db", false, time.Second, nil, "replica *sql.DB is nil"},
		{"zero tolerance", true, 0, nil, "lag tolerance 0s must be positive"},
		{"negative tolerance", true, -time.Second, nil, "lag tolerance -1s must be positive"},
		{"zero interval", true, time.Second, []Option{WithInterval(0)}, "WithInterval(0s)"},
		{"negative interval", true, time.Second, []Option{WithInterval(-time.Second)}, "WithInterval(-1s)"},
		{"negative max wait", true, time.Second, []Option{WithMaxWait(-1)}, "WithMaxWait(-1ns)"},
		{"zero stale", true, time.Second, []Option{WithStaleAfter(0)}, "WithStaleAfter(0s)"},
		{"stale shorter than interval", true, time.Second, []Option{WithInterval(time.Second), WithStaleAfter(500 * time.Millisecond)}, "shorter than the poll interval"},
		{"zero query timeout", true, time.Second, []Option{WithQueryTimeout(0)}, "WithQueryTimeout(0s)"},
		{"query timeout past stale window", true, time.Second, []Option{WithStaleAfter(3 * time.Second), WithQueryTimeout(4 * time.Second)}, "longer than the stale window"},
		{"interval 1ns", true, time.Second, []Option{WithInterval(1)}, "WithInterval(1ns): the poll interval must be at least 10ms"},
		{"interval under 10ms", true, time.Second, []Option{WithInterval(minPeriod - 1)}, "WithInterval(9.999999ms): the poll interval must be at least 10ms"},
		{"interval of 97 years", true, time.Second, []Option{WithInterval(97 * 365 * 24 * time.Hour)}, "WithInterval(849720h0m0s): the poll interval must be at most 24h0m0s"},
		{"interval past a day", true, time.Second, []Option{WithInterval(maxPeriod + 1)}, "must be at most 24h0m0s"},
		{"stale past a week", true, time.Second, []Option{WithStaleAfter(maxSpan + 1)}, "WithStaleAfter(168h0m0.000000001s): the stale window must be at most 168h0m0s"},
		{"query timeout past a week", true, time.Second, []Option{WithQueryTimeout(maxDuration)}, "the query timeout must be at most 168h0m0s"},
		{"max wait past a week", true, time.Second, []Option{WithMaxWait(maxDuration)}, "WithMaxWait(2562047h47m16.854775807s): the maximum wait must be at most 168h0m0s"},
		{"nil source", true, time.Second, []Option{WithLagSource(nil)}, "WithLagSource(nil)"},
		{"negative applier queue limit", true, time.Second, []Option{WithGroupApplierQueueLimit(-1)}, "WithGroupApplierQueueLimit(-1): the applier queue limit must not be negative"},
		{"nil option", true, time.Second, []Option{nil}, "option 0 is nil"},
		{"two problems", false, 0, []Option{WithInterval(0)}, "WithInterval(0s)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := fakeDB
			if !c.db {
				db = nil
			}
			r, err := NewReplicationThrottler(db, c.tolerance, nil, append(c.opts, WithLagSource(src))...)
			assert.Nil(t, r)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

func TestDefaults(t *testing.T) {
	o, problems := buildOptions(nil, "a replication throttler", replicationOptions)
	require.Empty(t, problems)
	assert.Equal(t, time.Second, o.interval)
	assert.Equal(t, 60*time.Second, o.maxWait)
	assert.Equal(t, 3*time.Second, o.staleAfter)
	assert.Equal(t, time.Second, o.queryTimeout)

	o, problems = buildOptions([]Option{WithInterval(10 * time.Second)}, "a replication throttler", replicationOptions)
	require.Empty(t, problems)
	assert.Equal(t, 5*time.Second, o.queryTimeout, "the default query timeout is capped at 5s")
	assert.Equal(t, 30*time.Second, o.staleAfter)

	r, err := NewReplicationThrottler(fakeDB, time.Second, nil)
	require.NoError(t, err)
	assert.Nil(t, r.Source(), "chosen at Open")

	// The bounds themselves are accepted, and what derives from them stays
	// positive and in order (97 years of interval once made the stale
	// window negative).
	o, problems = buildOptions([]Option{WithInterval(maxPeriod)}, "a replication throttler", replicationOptions)
	require.Empty(t, problems)
	assert.Equal(t, 3*maxPeriod, o.staleAfter)
	assert.Equal(t, 5*time.Second, o.queryTimeout)
	assert.Equal(t, maxPeriod/10, o.fastInterval())
	o, problems = buildOptions([]Option{WithInterval(minPeriod), WithStaleAfter(maxSpan), WithQueryTimeout(maxSpan), WithMaxWait(maxSpan)}, "a replication throttler", replicationOptions)
	require.Empty(t, problems)
	assert.Equal(t, minPeriod, o.fastInterval())
	assert.Equal(t, maxSpan, o.staleAfter)
}

func TestOpenMeasuresSynchronously(t *testing.T) {
	r, src := newFake(t, 10*time.Second, lagOf(12*time.Second), WithInterval(time.Hour))
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	assert.True(t, r.IsThrottled(), "Open's own measurement is published before it returns")
	assert.Equal(t, "replica lag 12s >= 10s", r.ThrottleReason())
	assert.Equal(t, 12*time.Second, r.Lag())
	assert.EqualValues(t, 1, src.calls.Load())
}

func TestOpenReturnsTheMeasurementError(t *testing.T) {
	r, src := newFake(t, time.Second, Measurement{})
	src.set(Measurement{}, fmt.Errorf("%w: no rows", ErrNotReplica))
	err := r.Open(context.Background())
	require.ErrorIs(t, err, ErrNotReplica)
	assert.Contains(t, err.Error(), "fake: ")
	assert.False(t, r.IsThrottled(), "false after a failed Open")
	assert.ErrorIs(t, r.UpdateLag(context.Background()), ErrNotOpen)

	src.set(Measurement{}, nil) // a failed Open may be retried
	require.NoError(t, r.Open(context.Background()))
	require.NoError(t, r.Close())
}

func TestOpenTwiceAndAfterClose(t *testing.T) {
	r, _ := newFake(t, time.Second, Measurement{})
	require.NoError(t, r.Open(context.Background()))
	assert.ErrorIs(t, r.Open(context.Background()), ErrAlreadyOpen)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close is idempotent")
	assert.ErrorIs(t, r.Open(context.Background()), ErrClosed)
	assert.ErrorIs(t, r.UpdateLag(context.Background()), ErrClosed)

	never, _ := newFake(t, time.Second, Measurement{})
	require.NoError(t, never.Close(), "Close before Open")
	assert.ErrorIs(t, never.Open(context.Background()), ErrClosed)
}

func TestOpenWithCancelledContext(t *testing.T) {
	r, _ := newFake(t, time.Second, Measurement{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, r.Open(ctx), context.Canceled)
	assert.False(t, r.IsThrottled())
}

func TestNotThrottledBeforeOpen(t *testing.T) {
	r, _ := newFake(t, time.Second, lagOf(time.Hour))
	assert.False(t, r.IsThrottled())
	assert.Equal(t, "", r.ThrottleReason())
	r.BlockWait(context.Background()) // returns at once
	assert.NoError(t, r.Wait(context.Background()))
}

func TestVerdicts(t *testing.T) {
	cases := []struct {
		name   string
		m      Measurement
		reason string // "" means not throttled
	}{
		{"under tolerance", lagOf(9999 * time.Millisecond), ""},
		{"at tolerance", lagOf(10 * time.Second), "replica lag 10s >= 10s"},
		{"over tolerance", lagOf(12345 * time.Millisecond), "replica lag 12.3s >= 10s"},
		{"named channel", Measurement{Lag: 11 * time.Second, Channel: "east"}, `replica lag 11s >= 10s (channel "east")`},
		{"not flowing with no lag", Measurement{NotFlowing: "applier (SQL) thread not running"}, "replication not flowing: applier (SQL) thread not running"},
		{"not flowing on a channel", Measurement{NotFlowing: "receiver (IO) thread Connecting", Channel: "b"}, `replication not flowing (channel "b"): receiver (IO) thread Connecting`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := newFake(t, 10*time.Second, c.m, WithInterval(time.Hour))
			require.NoError(t, r.Open(context.Background()))
			defer r.Close()
			assert.Equal(t, c.reason != "", r.IsThrottled())
			assert.Equal(t, c.reason, r.ThrottleReason())
		})
	}
}

// WithGroupApplierQueueLimit throttles a Group Replication member on its
// applier queue alone; replicas without one are not affected, nor members
// whose applier channel does not count.
func TestGroupApplierQueueLimit(t *testing.T) {
	member := func(queue int64) Measurement {
		return Measurement{Lag: time.Second, Channel: "group_replication_applier",
			GroupReplication: &GroupReplicationStatus{MemberState: "ONLINE", ApplierQueue: queue, CertificationQueue: 0}}
	}
	cases := []struct {
		name   string
		limit  int64
		m      Measurement
		reason string // "" means not throttled
	}{
		{"under the limit", 1000, member(999), ""},
		{"at the limit", 1000, member(1000), "group replication applier queue 1000 transactions >= 1000"},
		{"unknown queue", 1000, member(-1), ""},
		{"no limit", 0, member(1 << 40), ""},
		{"not a member", 1000, lagOf(time.Second), ""},
		{"lag first", 1000, Measurement{Lag: time.Minute, GroupReplication: member(5000).GroupReplication}, "replica lag 1m0s >= 10s"},
		{"applier channel left out (WithChannels)", 1000, Measurement{Lag: time.Second, Channel: "from_dc1",
			GroupReplication: member(5000).GroupReplication, Channels: []ChannelLag{
				{Name: "from_dc1", Lag: time.Second}, {Name: "GROUP_REPLICATION_APPLIER", Ignored: true}}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := newFake(t, 10*time.Second, c.m, WithInterval(time.Hour), WithGroupApplierQueueLimit(c.limit))
			require.NoError(t, r.Open(context.Background()))
			defer r.Close()
			assert.Equal(t, c.reason != "", r.IsThrottled())
			assert.Equal(t, c.reason, r.ThrottleReason())
		})
	}
}

func TestMonitorFollowsTheSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, Measurement{})
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		src.set(lagOf(2*time.Second), nil)
		time.Sleep(minPeriod) // the next poll
		synctest.Wait()
		require.True(t, r.IsThrottled())
		src.set(lagOf(0), nil)
		time.Sleep(minPeriod)
		synctest.Wait()
		require.False(t, r.IsThrottled())
	})
}

func TestLostSourceThrottlesAtOnce(t *testing.T) {
	r, src := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour))
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	src.set(Measurement{}, fmt.Errorf("%w: no rows", ErrNotReplica))
	require.ErrorIs(t, r.UpdateLag(context.Background()), ErrNotReplica)
	assert.True(t, r.IsThrottled(), "losing the source is an observation, not a failed poll")
	assert.Contains(t, r.ThrottleReason(), "replica lost its source")
}

func TestFailedPollsThrottleAfterStaleWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithStaleAfter(time.Hour))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		src.set(Measurement{}, fmt.Errorf("%w: SLAVE MONITOR", ErrAccessDenied))
		err := r.UpdateLag(context.Background())
		require.ErrorIs(t, err, ErrAccessDenied)
		time.Sleep(time.Hour - time.Nanosecond)
		synctest.Wait()
		assert.False(t, r.IsThrottled(), "failed polls inside the stale window keep the last verdict")

		time.Sleep(time.Nanosecond) // the stale window ends
		synctest.Wait()
		assert.True(t, r.IsThrottled())
		assert.Contains(t, r.ThrottleReason(), "no lag measurement for")
		assert.Contains(t, r.ThrottleReason(), "SLAVE MONITOR", "the reason carries the last error")

		src.set(Measurement{}, nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		assert.False(t, r.IsThrottled(), "a success clears staleness")
	})
}

func TestStaleTimerFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, Measurement{}, WithInterval(minPeriod), WithStaleAfter(20*time.Millisecond))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		src.set(Measurement{}, errBoom)
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		require.True(t, r.IsThrottled(), "stale 20ms after the last success")
		assert.Contains(t, r.ThrottleReason(), "boom")
		src.set(Measurement{}, nil)
		time.Sleep(minPeriod)
		synctest.Wait()
		require.False(t, r.IsThrottled())
	})
}

// TestHungReplicaOnePollInFlight: a source that never answers is polled one
// query at a time, each bounded by the query timeout, and the throttler
// fails closed once the stale window passes.
func TestHungReplicaOnePollInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, Measurement{},
			WithInterval(minPeriod), WithQueryTimeout(5*time.Millisecond), WithStaleAfter(20*time.Millisecond))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		src.setHang(true)
		pileInWhileHung(t, r)
		assert.Contains(t, r.ThrottleReason(), "no lag measurement")
		assert.EqualValues(t, 1, src.maxSeen.Load(), "never more than one measurement in flight")
		before := src.calls.Load()
		time.Sleep(5 * minPeriod)
		synctest.Wait()
		assert.Greater(t, src.calls.Load(), before+2, "each hung poll times out and the next starts")
	})
}

func TestUpdateLagRespectsCallerContext(t *testing.T) {
	r, src := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithQueryTimeout(time.Hour), WithStaleAfter(time.Hour))
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	src.setHang(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, r.UpdateLag(ctx), context.DeadlineExceeded)
	assert.False(t, r.IsThrottled(), "a caller giving up is not a failed measurement")
}

func TestUpdateLagWakesWaiters(t *testing.T) {
	r, src := newFake(t, time.Second, lagOf(time.Hour), WithInterval(time.Hour), WithMaxWait(0))
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	done := make(chan struct{})
	go func() { r.BlockWait(context.Background()); close(done) }()
	src.set(lagOf(0), nil)
	require.NoError(t, r.UpdateLag(context.Background()))
	<-done
}

func TestLogsOneLinePerStateChange(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	src := &fakeSource{}
	r, err := NewReplicationThrottler(fakeDB, time.Second, logger, WithLagSource(src), WithInterval(time.Hour))
	require.NoError(t, err)
	require.NoError(t, r.Open(context.Background()))
	for _, d := range []time.Duration{2, 3, 4, 0, 0, 5} { // seconds
		src.set(lagOf(d*time.Second), nil)
		require.NoError(t, r.UpdateLag(context.Background()))
	}
	require.NoError(t, r.Close())
	out := buf.String()
	assert.Equal(t, 1, strings.Count(out, "throttler: open"))
	assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: closed"), out)
	assert.Equal(t, 5, strings.Count(out, "\n"), out)
}

func TestWaitSaysWhy(t *testing.T) {
	r, src := newFake(t, time.Second, lagOf(time.Hour), WithInterval(time.Hour), WithMaxWait(5*time.Millisecond))
	require.NoError(t, r.Open(context.Background()))
	err := r.Wait(context.Background())
	require.ErrorIs(t, err, ErrMaxWait)
	assert.Contains(t, err.Error(), "replica lag 1h0m0s >= 1s")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, r.Wait(ctx), context.Canceled)

	src.set(lagOf(0), nil)
	require.NoError(t, r.UpdateLag(context.Background()))
	assert.NoError(t, r.Wait(context.Background()))

	require.NoError(t, r.Close())
	assert.ErrorIs(t, r.Wait(context.Background()), ErrClosed)
}

func TestLastMeasurement(t *testing.T) {
	r, src := newFake(t, time.Second, lagOf(300*time.Millisecond), WithInterval(time.Hour))
	_, _, ok := r.LastMeasurement()
	assert.False(t, ok, "none before Open")
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	m, at, ok := r.LastMeasurement()
	require.True(t, ok)
	assert.Equal(t, 300*time.Millisecond, m.Lag)
	assert.WithinDuration(t, time.Now(), at, time.Second)

	src.set(Measurement{NotFlowing: "applier (SQL) thread not running"}, nil)
	require.NoError(t, r.UpdateLag(context.Background()))
	m, _, _ = r.LastMeasurement()
	assert.Equal(t, "applier (SQL) thread not running", m.NotFlowing, "the lag is unknown, and says so")

	src.set(Measurement{}, errBoom)
	_ = r.UpdateLag(context.Background())
	m, _, _ = r.LastMeasurement()
	assert.Equal(t, "applier (SQL) thread not running", m.NotFlowing, "a failed poll leaves the last success")
}

// TestOptionsThatDoNotApplyAreErrors: WithLagSource means something only to
// replication throttlers; elsewhere it is a configuration error, not ignored.
func TestOptionsThatDoNotApplyAreErrors(t *testing.T) {
	src := WithLagSource(ReplicaStatusSource())
	_, errLoad := NewLoad(fakeDB, LoadConfig{Threshold: 1}, nil, src)
	_, errQuery := NewQuery(fakeDB, QueryConfig{SQL: "SELECT 1", Threshold: 1}, nil, src)
	_, errHTTP := NewHTTP(HTTPConfig{URL: "http://127.0.0.1:1/check"}, nil, src)
	_, errPause := NewPause(PauseConfig{}, nil, src)
	_, errSchedule := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "01:00", End: "02:00"}}}, nil, src)
	for name, err := range map[string]error{"Load": errLoad, "Query": errQuery, "HTTP": errHTTP, "Pause": errPause, "Schedule": errSchedule} {
		assert.ErrorIs(t, err, ErrInvalidConfig, name)
		assert.ErrorContains(t, err, "WithLagSource does not apply to", name)
	}
}
