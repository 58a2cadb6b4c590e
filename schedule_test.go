package throttler

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	_ "time/tzdata" // the DST cases must not depend on the host's zoneinfo

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func scheduleLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

var scheduleWeekdays = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}

// newTestSchedule returns an unopened schedule, closed at the end of the
// test.
func newTestSchedule(t *testing.T, cfg ScheduleConfig, opts ...Option) *Schedule {
	t.Helper()
	s, err := NewSchedule(cfg, nil, append([]Option{WithMaxWait(0)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sleepUntil advances a synctest bubble's clock to instant at.
func sleepUntil(t *testing.T, at time.Time) {
	t.Helper()
	require.False(t, at.Before(time.Now()), "the bubble's clock only goes forward")
	time.Sleep(time.Until(at))
	synctest.Wait()
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
	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Days: scheduleWeekdays, Start: "09:15", End: "09:45"}}})
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
	}})
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
	}})
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

	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "02:30", End: "03:30"}}})
	const r = "scheduled window 02:30-03:30 America/New_York"
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"the day before, EST", z(7, 7, 30), true, r, z(7, 8, 30)},
		{"01:59 EST, just before the jump", z(8, 6, 59), false, "", z(8, 7, 0)},
		{"03:00 EDT: 02:30 was skipped, the window starts at the jump", z(8, 7, 0), true, r, z(8, 7, 30)},
		{"03:30 EDT ends it", z(8, 7, 30), false, "", z(9, 6, 30)},
	})

	gap := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "02:30", End: "02:45"}}})
	scheduleCheckStates(t, gap, []scheduleStateCase{
		{"a window wholly in the gap does not happen", z(8, 6, 0), false, "", z(9, 6, 30)},
		{"nor at the jump", z(8, 7, 0), false, "", z(9, 6, 30)},
		{"but the day before it does", z(7, 7, 40), true, "scheduled window 02:30-02:45 America/New_York", z(7, 7, 45)},
	})

	ends := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "02:30"}}})
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

	s := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "01:45"}}})
	const r = "scheduled window 01:30-01:45 America/New_York"
	scheduleCheckStates(t, s, []scheduleStateCase{
		{"01:35 EDT, the first time", z(1, 5, 35), true, r, z(1, 5, 45)},
		{"01:35 EST, the second time, is not throttled", z(1, 6, 35), false, "", z(2, 6, 30)},
	})

	long := newTestSchedule(t, ScheduleConfig{Location: ny, Windows: []Window{{Start: "01:30", End: "02:30"}}})
	scheduleCheckStates(t, long, []scheduleStateCase{
		{"from the first 01:30", z(1, 5, 30), true, "scheduled window 01:30-02:30 America/New_York", z(1, 7, 30)},
		{"through the repeated hour: two hours long", z(1, 6, 35), true, "scheduled window 01:30-02:30 America/New_York", z(1, 7, 30)},
	})
}

// TestScheduleWakesWaitersAtWindowEnd: waiters inside a window return at
// the instant it ends, not a tick later; the schedule then stays clear through
// the hourly re-arms (which log nothing) until the next start, exactly.
func TestScheduleWakesWaitersAtWindowEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		ny := scheduleLoad(t, "America/New_York")
		sleepUntil(t, time.Date(2026, 3, 2, 9, 44, 59, 5e8, ny)) // Monday
		var buf syncBuffer
		s, err := NewSchedule(ScheduleConfig{Location: ny, Windows: []Window{{Days: scheduleWeekdays, Start: "09:15", End: "09:45"}}},
			slog.New(slog.NewTextHandler(&buf, nil)), WithMaxWait(0))
		require.NoError(t, err)
		defer s.Close()

		require.NoError(t, s.Open(ctx))
		require.True(t, s.IsThrottled())
		assert.Equal(t, "scheduled window 09:15-09:45 America/New_York (Mon-Fri)", s.ThrottleReason())
		done := waiters(ctx, s, 50)
		time.Sleep(500*time.Millisecond - time.Nanosecond)
		assert.False(t, returned(done), "a nanosecond before the window's end")
		assert.True(t, s.IsThrottled())
		time.Sleep(time.Nanosecond)
		assert.True(t, returned(done), "at the window's end")
		assert.False(t, s.IsThrottled())

		// Tuesday 09:15 is 23.5 hours away: many capped timers, no change.
		sleepUntil(t, time.Date(2026, 3, 3, 9, 15, 0, 0, ny).Add(-time.Nanosecond))
		assert.False(t, s.IsThrottled(), "still clear a nanosecond before the next start")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.True(t, s.IsThrottled(), "throttled at the next start")
		require.NoError(t, s.Close())

		out := buf.String()
		assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
		assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), "a capped firing logs nothing:\n"+out)
	})
}

// TestScheduleUpdateLagReevaluates: UpdateLag does nothing before Open, and
// publishes the state of the current instant once open. (A wall-clock step,
// the case it exists for, cannot be shown on a synctest clock, which moves
// only forward and moves timers with it: that case rests on evaluate reading
// the clock afresh each time and on StateAt, tested above as a pure
// function.)
func TestScheduleUpdateLagReevaluates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		sleepUntil(t, time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC))
		s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15", End: "09:45"}}})
		require.NoError(t, s.UpdateLag(ctx), "before Open: nothing to do")
		assert.False(t, s.IsThrottled())

		require.NoError(t, s.Open(ctx))
		require.NoError(t, s.UpdateLag(ctx))
		assert.True(t, s.IsThrottled(), "inside the window")
		done := waiters(ctx, s, 10)
		assert.False(t, returned(done), "UpdateLag inside the window wakes nobody")

		sleepUntil(t, time.Date(2026, 3, 2, 9, 45, 0, 0, time.UTC))
		require.NoError(t, s.UpdateLag(ctx))
		assert.True(t, returned(done))
		assert.False(t, s.IsThrottled())
		require.NoError(t, s.Close())
		require.NoError(t, s.UpdateLag(ctx), "after Close: nothing to do")
	})
}

// TestScheduleWaitEndsWithTheWindow: Wait inside a window returns nil at the
// window's end.
func TestScheduleWaitEndsWithTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		end := time.Date(2026, 1, 5, 12, 0, 1, 0, time.UTC)
		sleepUntil(t, end.Add(-100*time.Millisecond))
		s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "12:00", End: "12:00:01"}}})

		require.NoError(t, s.Open(ctx))
		require.True(t, s.IsThrottled())
		require.NoError(t, s.Wait(ctx), "the wait ends with the window")
		assert.Equal(t, end, time.Now().UTC(), "at the end, not before or after")
		assert.False(t, s.IsThrottled())
	})
}

func TestScheduleHotPathDoesNotAllocate(t *testing.T) {
	s := newTestSchedule(t, ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:15", End: "09:45"}}})
	require.NoError(t, s.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = s.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { s.BlockWait(ctx) }))
}
