package throttler

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the DST cases must not depend on the host's zoneinfo

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scheduleClock is a settable clock with timers the test fires by hand.
type scheduleClock struct {
	mu    sync.Mutex
	now   time.Time
	armed chan *scheduleFakeTimer // every timer the schedule arms, in order
}

type scheduleFakeTimer struct {
	d       time.Duration
	c       chan time.Time
	stopped atomic.Bool
}

func newScheduleClock(now time.Time) *scheduleClock {
	return &scheduleClock{now: now, armed: make(chan *scheduleFakeTimer, 1000)}
}

func (c *scheduleClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *scheduleClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *scheduleClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	ft := &scheduleFakeTimer{d: d, c: make(chan time.Time, 1)}
	select {
	case c.armed <- ft:
	default: // a test that arms this many timers is not counting them
	}
	return ft.c, func() bool { return ft.stopped.CompareAndSwap(false, true) }
}

// next returns the next timer armed, failing if none is armed soon.
func (c *scheduleClock) next(t *testing.T) *scheduleFakeTimer {
	t.Helper()
	select {
	case ft := <-c.armed:
		return ft
	case <-time.After(5 * time.Second):
		t.Fatal("no timer armed")
		return nil
	}
}

// noneArmed fails if a timer was armed since the last next.
func (c *scheduleClock) noneArmed(t *testing.T) {
	t.Helper()
	select {
	case ft := <-c.armed:
		t.Fatalf("unexpected timer armed for %v", ft.d)
	case <-time.After(10 * time.Millisecond):
	}
}

func scheduleLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

var scheduleWeekdays = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}

// newTestSchedule returns an unopened schedule on clock (nil: the real
// clock), closed at the end of the test.
func newTestSchedule(t *testing.T, cfg ScheduleConfig, clock *scheduleClock, opts ...Option) *Schedule {
	t.Helper()
	s, err := NewSchedule(cfg, nil, append([]Option{WithMaxWait(0)}, opts...)...)
	require.NoError(t, err)
	if clock != nil {
		s.now, s.newTimer = clock.Now, clock.NewTimer
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestNewScheduleRejectsBadConfig(t *testing.T) {
	ny := scheduleLoad(t, "America/New_York")
	w := []Window{{Start: "09:15", End: "09:45"}}
	cases := []struct {
		name string
		cfg  ScheduleConfig
		opts []Option
		want string
	}{
		{"no zone", ScheduleConfig{Windows: w}, nil, "Location or TimeZone is required"},
		{"both zones", ScheduleConfig{Location: ny, TimeZone: "UTC", Windows: w}, nil, "not both"},
		{"unknown zone", ScheduleConfig{TimeZone: "Mars/Olympus_Mons", Windows: w}, nil, `ScheduleConfig.TimeZone "Mars/Olympus_Mons"`},
		{"no windows", ScheduleConfig{TimeZone: "UTC"}, nil, "ScheduleConfig.Windows is empty"},
		{"hour out of range", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "25:00", End: "09:45"}}}, nil, `Windows[0].Start "25:00": hour 25 is out of range 00-23`},
		{"24:00", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "22:00", End: "24:00"}}}, nil, `Windows[0].End "24:00": hour 24`},
		{"minute out of range", ScheduleConfig{TimeZone: "UTC", Windows: []Window{w[0], {Start: "09:60", End: "10:00"}}}, nil, `Windows[1].Start "09:60": minute 60`},
		{"second out of range", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:00", End: "10:00:60"}}}, nil, `Windows[0].End "10:00:60": second 60`},
		{"one digit", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "9:15", End: "09:45"}}}, nil, `hour "9" is not two digits`},
		{"no colon", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "0915", End: "09:45"}}}, nil, `want "HH:MM" or "HH:MM:SS"`},
		{"empty time", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15"}}}, nil, `Windows[0].End ""`},
		{"start equals end", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15", End: "09:15:00"}}}, nil, `Windows[0]: Start "09:15" equals End "09:15:00"`},
		{"bad weekday", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Days: []time.Weekday{7}, Start: "09:15", End: "09:45"}}}, nil, "Windows[0].Days: weekday 7 is out of range"},
		{"lag source", ScheduleConfig{TimeZone: "UTC", Windows: w}, []Option{WithLagSource(&fakeSource{})}, "WithLagSource does not apply"},
		{"bad option and window", ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "x", End: "09:45"}}}, []Option{WithMaxWait(-1)}, "WithMaxWait(-1ns)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewSchedule(c.cfg, nil, c.opts...)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

type scheduleStateCase struct {
	name      string
	at        time.Time
	throttled bool
	reason    string
	next      time.Time
}

func scheduleCheckStates(t *testing.T, s *Schedule, cases []scheduleStateCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			throttled, reason, next := s.StateAt(c.at)
			assert.Equal(t, c.throttled, throttled)
			assert.Equal(t, c.reason, reason)
			assert.Truef(t, c.next.Equal(next), "next boundary: want %v (%v), got %v (%v)", c.next, c.next.UTC(), next, next.UTC())
		})
	}
}

func TestScheduleStateAtMarketOpen(t *testing.T) {
	ny := scheduleLoad(t, "America/New_York")
	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Days: scheduleWeekdays, Start: "09:15", End: "09:45"}}}, nil)
	const reason = "scheduled window 09:15-09:45 America/New_York (Mon-Fri)"
	at := func(d, h, m, sec int) time.Time { return time.Date(2026, 3, d, h, m, sec, 0, ny) }
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"Monday before", at(2, 9, 0, 0), false, "", at(2, 9, 15, 0)},
		{"start is inside", at(2, 9, 15, 0), true, reason, at(2, 9, 45, 0)},
		{"last instant inside", at(2, 9, 45, 0).Add(-time.Nanosecond), true, reason, at(2, 9, 45, 0)},
		{"end is outside", at(2, 9, 45, 0), false, "", at(3, 9, 15, 0)},
		{"in another zone's terms", at(2, 9, 30, 0).UTC(), true, reason, at(2, 9, 45, 0)},
		// Friday after the window: the next boundary is Monday, past the
		// spring-forward night, so in EDT: 13:15Z, not 14:15Z.
		{"long gap over a weekend and DST", at(6, 10, 0, 0), false, "", time.Date(2026, 3, 9, 13, 15, 0, 0, time.UTC)},
		{"Saturday", at(7, 9, 30, 0), false, "", at(9, 9, 15, 0)},
	})
}

func TestScheduleStateAtCrossesMidnight(t *testing.T) {
	utc := time.UTC
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{
		{Days: []time.Weekday{time.Friday}, Start: "22:00", End: "02:00"},
	}}, nil)
	const reason = "scheduled window 22:00-02:00 UTC (Fri)"
	// 2026-03-06 is a Friday.
	at := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, utc) }
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"Thursday night is not Friday", at(5, 23, 0), false, "", at(6, 22, 0)},
		{"Friday night", at(6, 23, 0), true, reason, at(7, 2, 0)},
		{"Saturday small hours belong to Friday", at(7, 1, 59), true, reason, at(7, 2, 0)},
		{"Saturday after", at(7, 2, 0), false, "", at(13, 22, 0)},
		{"Saturday night is not Friday", at(7, 23, 0), false, "", at(13, 22, 0)},
	})

	every, err := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "22:00", End: "00:00"}}}, nil)
	require.NoError(t, err)
	scheduleCheckStates(t, every, []scheduleStateCase{
		{"ends at midnight", at(6, 23, 59), true, "scheduled window 22:00-00:00 UTC", at(7, 0, 0)},
		{"midnight is outside", at(7, 0, 0), false, "", at(7, 22, 0)},
	})
}

func TestScheduleStateAtOverlapsAndDays(t *testing.T) {
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "Europe/London", Windows: []Window{
		{Days: []time.Weekday{time.Saturday, time.Sunday}, Start: "00:00", End: "12:00"},
		{Days: []time.Weekday{time.Monday, time.Wednesday, time.Friday, time.Sunday}, Start: "10:00:30", End: "11:00"},
	}}, nil)
	london := s.Location()
	// 2026-03-08 is a Sunday (GMT).
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"both windows", time.Date(2026, 3, 8, 10, 30, 0, 0, london), true,
			"scheduled window 00:00-12:00 Europe/London (Sat-Sun); scheduled window 10:00:30-11:00 Europe/London (Mon,Wed,Fri,Sun)",
			time.Date(2026, 3, 8, 11, 0, 0, 0, london)},
		{"one window", time.Date(2026, 3, 8, 11, 0, 0, 0, london), true,
			"scheduled window 00:00-12:00 Europe/London (Sat-Sun)",
			time.Date(2026, 3, 8, 12, 0, 0, 0, london)},
		{"Tuesday", time.Date(2026, 3, 10, 10, 30, 0, 0, london), false, "",
			time.Date(2026, 3, 11, 10, 0, 30, 0, london)},
	})
}

// TestScheduleDSTSpringForward: on 2026-03-08 America/New_York jumps from
// 02:00 EST to 03:00 EDT (07:00Z). A skipped time resolves to the jump.
func TestScheduleDSTSpringForward(t *testing.T) {
	ny := scheduleLoad(t, "America/New_York")
	z := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, time.UTC) }

	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "02:30", End: "03:30"}}}, nil)
	const r = "scheduled window 02:30-03:30 America/New_York"
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"the day before, EST", z(7, 7, 30), true, r, z(7, 8, 30)},
		{"01:59 EST, just before the jump", z(8, 6, 59), false, "", z(8, 7, 0)},
		{"03:00 EDT: 02:30 was skipped, the window starts at the jump", z(8, 7, 0), true, r, z(8, 7, 30)},
		{"03:30 EDT ends it", z(8, 7, 30), false, "", z(9, 6, 30)},
	})

	gap := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "02:30", End: "02:45"}}}, nil)
	scheduleCheckStates(t, gap, []scheduleStateCase{
		{"a window wholly in the gap does not happen", z(8, 6, 0), false, "", z(9, 6, 30)},
		{"nor at the jump", z(8, 7, 0), false, "", z(9, 6, 30)},
		{"but the day before it does", z(7, 7, 40), true, "scheduled window 02:30-02:45 America/New_York", z(7, 7, 45)},
	})

	ends := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "02:30"}}}, nil)
	scheduleCheckStates(t, ends, []scheduleStateCase{
		{"an end in the gap ends at the jump", z(8, 6, 45), true, "scheduled window 01:30-02:30 America/New_York", z(8, 7, 0)},
	})
}

// TestScheduleDSTFallBack: on 2026-11-01 America/New_York goes back from
// 02:00 EDT to 01:00 EST (06:00Z), so 01:00-02:00 happens twice. A repeated
// time resolves to its first occurrence.
func TestScheduleDSTFallBack(t *testing.T) {
	ny := scheduleLoad(t, "America/New_York")
	z := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }

	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "01:45"}}}, nil)
	const r = "scheduled window 01:30-01:45 America/New_York"
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"01:35 EDT, the first time", z(1, 5, 35), true, r, z(1, 5, 45)},
		{"01:35 EST, the second time, is not throttled", z(1, 6, 35), false, "", z(2, 6, 30)},
	})

	long := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "02:30"}}}, nil)
	scheduleCheckStates(t, long, []scheduleStateCase{
		{"from the first 01:30", z(1, 5, 30), true, "scheduled window 01:30-02:30 America/New_York", z(1, 7, 30)},
		{"through the repeated hour: two hours long", z(1, 6, 35), true, "scheduled window 01:30-02:30 America/New_York", z(1, 7, 30)},
	})
}

// TestScheduleWakesWaitersAtWindowEnd: one timer to the boundary, fired by
// hand; its firing wakes every waiter; the next timer goes to the next
// boundary (capped at an hour), and a capped firing changes nothing.
func TestScheduleWakesWaitersAtWindowEnd(t *testing.T) {
	ctx := context.Background()
	ny := scheduleLoad(t, "America/New_York")
	clock := newScheduleClock(time.Date(2026, 3, 2, 9, 44, 59, 5e8, ny)) // Monday
	var buf syncBuffer
	s, err := NewSchedule(ScheduleConfig{Location: ny, Windows: []Window{{Days: scheduleWeekdays, Start: "09:15", End: "09:45"}}},
		slog.New(slog.NewTextHandler(&buf, nil)), WithMaxWait(0))
	require.NoError(t, err)
	s.now, s.newTimer = clock.Now, clock.NewTimer
	defer s.Close()

	require.NoError(t, s.Open(ctx))
	require.True(t, s.IsThrottled())
	assert.Equal(t, "scheduled window 09:15-09:45 America/New_York (Mon-Fri)", s.ThrottleReason())
	first := clock.next(t)
	assert.Equal(t, 500*time.Millisecond, first.d, "armed for the window's end")
	done := waiters(ctx, s, 50)
	requireBlocked(t, done, "inside the window")
	clock.noneArmed(t) // no polling while waiting

	clock.Set(time.Date(2026, 3, 2, 9, 45, 0, 0, ny))
	first.c <- clock.Now()
	requireReturns(t, done, time.Second, "window ended")
	assert.False(t, s.IsThrottled())
	second := clock.next(t)
	assert.Equal(t, time.Hour, second.d, "the next start is 23.5h away: capped at an hour")

	clock.Set(clock.Now().Add(time.Hour))
	second.c <- clock.Now()
	third := clock.next(t)
	assert.Equal(t, time.Hour, third.d)
	assert.False(t, s.IsThrottled())

	clock.Set(time.Date(2026, 3, 3, 9, 15, 0, 0, ny))
	third.c <- clock.Now()
	fourth := clock.next(t)
	assert.True(t, s.IsThrottled())
	assert.Equal(t, 30*time.Minute, fourth.d)
	require.NoError(t, s.Close())
	assert.True(t, fourth.stopped.Load(), "Close stops the timer")

	out := buf.String()
	assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), "a capped firing logs nothing:\n"+out)
}

// TestScheduleUpdateLagReevaluates: UpdateLag publishes the state at the
// current time (here, after a clock step the timer did not see) and re-arms.
func TestScheduleUpdateLagReevaluates(t *testing.T) {
	ctx := context.Background()
	clock := newScheduleClock(time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC))
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15", End: "09:45"}}}, clock)
	require.NoError(t, s.UpdateLag(ctx), "before Open: nothing to do")
	assert.False(t, s.IsThrottled())

	require.NoError(t, s.Open(ctx))
	first := clock.next(t)
	assert.Equal(t, 15*time.Minute, first.d)
	done := waiters(ctx, s, 10)
	requireBlocked(t, done, "inside")

	clock.Set(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	require.NoError(t, s.UpdateLag(ctx))
	requireReturns(t, done, time.Second, "UpdateLag after the window")
	assert.False(t, s.IsThrottled())
	rearmed := clock.next(t)
	assert.Equal(t, time.Hour, rearmed.d)
	assert.True(t, first.stopped.Load(), "the old timer is stopped, not left to fire")
}

// TestScheduleRealTimer: with the real timer, a waiter inside a window
// returns when it ends, about 100ms later. The clock is the real one,
// shifted so that the window (whole seconds) ends 100ms after Open.
func TestScheduleRealTimer(t *testing.T) {
	ctx := context.Background()
	end := time.Date(2026, 1, 5, 12, 0, 1, 0, time.UTC)
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "12:00", End: "12:00:01"}}}, nil)
	offset := time.Until(end.Add(-100 * time.Millisecond))
	s.now = func() time.Time { return time.Now().Add(offset) }

	require.NoError(t, s.Open(ctx))
	require.True(t, s.IsThrottled())
	require.NoError(t, s.Wait(ctx), "the wait ends with the window")
	assert.False(t, s.now().Before(end), "not before the end")
	assert.False(t, s.IsThrottled())
}

func TestScheduleHotPathDoesNotAllocate(t *testing.T) {
	clock := newScheduleClock(time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC))
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15", End: "09:45"}}}, clock)
	require.NoError(t, s.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = s.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { s.BlockWait(ctx) }))
}
