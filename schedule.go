package throttler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
)

// Schedule throttles during configured windows of wall-clock time in a named
// time zone, for example 09:15–09:45 America/New_York on weekdays, around a
// stock market's open, or a nightly batch window.
//
// It reads no signal and does not poll: its monitor sleeps on a single timer
// set to the next boundary (a window's start or end), where it publishes the
// new state and re-arms, so waiters wake the moment a window ends. The timer is
// also re-armed at least every hour, so that a wall-clock step or a suspended
// host cannot delay a boundary by more than that; UpdateLag re-evaluates at
// once.
//
// Windows are wall-clock times, resolved on each calendar day in the
// schedule's location by its time zone database:
//
//   - Days filters the day a window starts on; a window whose End is before
//     its Start ends the next day (22:00–02:00 on Fri runs into Saturday);
//   - a time the clocks skip (02:30 on a spring-forward night in
//     America/New_York) resolves to the instant they jump (03:00 EDT): a
//     window covers exactly the wall-clock times that exist, and a window
//     wholly inside the gap (02:30–02:45) does not happen that day;
//   - a time the clocks repeat (01:30 on a fall-back night) resolves to its
//     first occurrence: 01:30–01:45 throttles once, during daylight time,
//     and 01:30–02:30 lasts two hours.
//
// Callers use BlockWait before each chunk; StateAt answers "what would the
// schedule say at this instant" without opening anything.
type Schedule struct {
	name    string // WithName's, or ""
	loc     *time.Location
	windows []scheduleWindow
	maxWait time.Duration
	log     *slog.Logger

	gate gate.Gate
	kick chan struct{} // UpdateLag asks the monitor to re-arm; buffered 1

	stateMu sync.Mutex // serialises evaluations, so publishes follow the clock

	life lifecycle.Runner
}

// ScheduleConfig configures a Schedule.
type ScheduleConfig struct {
	// Location is the time zone the windows are in. Set it or TimeZone,
	// not both.
	Location *time.Location
	// TimeZone is an IANA time zone name ("America/New_York", "UTC"),
	// loaded with time.LoadLocation. Set it or Location, not both.
	TimeZone string
	// Windows are the times to throttle; at least one. Overlapping windows
	// are allowed.
	Windows []Window
}

// Window is a daily span of wall-clock time.
type Window struct {
	// Days are the weekdays the window starts on; empty means every day.
	Days []time.Weekday
	// Start and End are "HH:MM" or "HH:MM:SS", 24-hour. The window is
	// [Start, End): it throttles from Start and clears at End. An End
	// before Start ends the next day ("22:00" to "02:00"; "00:00" is
	// midnight). Start and End must differ.
	Start, End string
}

type scheduleWindow struct {
	days       uint8 // bit d set: the window starts on time.Weekday(d)
	start, end int   // seconds after midnight
	text       string
}

const (
	scheduleEveryDay = 1<<7 - 1
	// scheduleMaxArm bounds one timer: time.Timer runs on the monotonic
	// clock, which a wall-clock step does not move and a suspended host
	// does not advance.
	scheduleMaxArm = time.Hour
	// scheduleHorizon is how many days ahead StateAt looks for the next
	// boundary: every window starts at least once a week, and a window
	// lost in a DST gap misses at most one day.
	scheduleHorizon = 15
)

// NewSchedule returns a Schedule. It does no I/O but load the time zone; Open
// starts it. A nil logger logs nothing. Bad input (no time zone or both, an
// unknown zone, no windows, a malformed or out-of-range time, a Start equal
// to its End, a weekday out of range) is an error wrapping ErrInvalidConfig
// that names the field and the value. Of the options only WithMaxWait
// applies: a schedule does not poll.
func NewSchedule(cfg ScheduleConfig, logger *slog.Logger, opts ...Option) (*Schedule, error) {
	var errs []error
	loc := cfg.Location
	switch {
	case loc != nil && cfg.TimeZone != "":
		errs = append(errs, fmt.Errorf("ScheduleConfig: set Location (%s) or TimeZone (%q), not both", loc, cfg.TimeZone))
	case loc == nil && cfg.TimeZone == "":
		errs = append(errs, errors.New("ScheduleConfig: Location or TimeZone is required"))
	case loc == nil:
		l, err := time.LoadLocation(cfg.TimeZone)
		if err != nil {
			errs = append(errs, fmt.Errorf("ScheduleConfig.TimeZone %q: %w", cfg.TimeZone, err))
		}
		loc = l
	}
	if len(cfg.Windows) == 0 {
		errs = append(errs, errors.New("ScheduleConfig.Windows is empty: a schedule needs at least one window"))
	}
	var windows []scheduleWindow
	for i, w := range cfg.Windows {
		sw, err := scheduleParseWindow(i, w)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		windows = append(windows, sw)
	}
	o, problems := buildOptions(opts, "a Schedule throttler", commonOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger) // WithName's name on every line
	for i := range windows {
		windows[i].text = scheduleWindowText(windows[i], loc)
	}
	s := &Schedule{
		name:    o.name,
		loc:     loc,
		windows: windows,
		maxWait: o.maxWait,
		log:     logger,
		kick:    make(chan struct{}, 1),
	}
	s.life.Gate, s.life.Log = &s.gate, logger
	s.gate.Observe(logger, o.notifier(s.String()))
	return s, nil
}

func scheduleParseWindow(i int, w Window) (scheduleWindow, error) {
	var errs []error
	sw := scheduleWindow{}
	start, err := scheduleParseClock(w.Start)
	if err != nil {
		errs = append(errs, fmt.Errorf("ScheduleConfig.Windows[%d].Start %q: %w", i, w.Start, err))
	}
	end, err2 := scheduleParseClock(w.End)
	if err2 != nil {
		errs = append(errs, fmt.Errorf("ScheduleConfig.Windows[%d].End %q: %w", i, w.End, err2))
	}
	if err == nil && err2 == nil && start == end {
		errs = append(errs, fmt.Errorf("ScheduleConfig.Windows[%d]: Start %q equals End %q: the window would be empty (or, meant as all day, it would never end)", i, w.Start, w.End))
	}
	for _, d := range w.Days {
		if d < time.Sunday || d > time.Saturday {
			errs = append(errs, fmt.Errorf("ScheduleConfig.Windows[%d].Days: weekday %d is out of range (time.Sunday=0 to time.Saturday=6)", i, int(d)))
			continue
		}
		sw.days |= 1 << d
	}
	if len(w.Days) == 0 {
		sw.days = scheduleEveryDay
	}
	sw.start, sw.end = start, end
	return sw, errors.Join(errs...)
}

// scheduleParseClock parses "HH:MM" or "HH:MM:SS" into seconds after
// midnight.
func scheduleParseClock(s string) (int, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 2 && len(parts) != 3 {
		return 0, errors.New(`want "HH:MM" or "HH:MM:SS"`)
	}
	limits := []int{23, 59, 59}
	names := []string{"hour", "minute", "second"}
	secs := 0
	for i, p := range parts {
		if len(p) != 2 || p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' {
			return 0, fmt.Errorf(`%s %q is not two digits; want "HH:MM" or "HH:MM:SS"`, names[i], p)
		}
		n, _ := strconv.Atoi(p)
		if n > limits[i] {
			return 0, fmt.Errorf("%s %d is out of range 00-%02d", names[i], n, limits[i])
		}
		secs = secs*60 + n
	}
	if len(parts) == 2 {
		secs *= 60
	}
	return secs, nil
}

func scheduleClockText(secs int) string {
	if secs%60 != 0 {
		return fmt.Sprintf("%02d:%02d:%02d", secs/3600, secs/60%60, secs%60)
	}
	return fmt.Sprintf("%02d:%02d", secs/3600, secs/60%60)
}

// scheduleWindowText is the window as ThrottleReason shows it:
// "09:15-09:45 America/New_York (Mon-Fri)".
func scheduleWindowText(w scheduleWindow, loc *time.Location) string {
	s := scheduleClockText(w.start) + "-" + scheduleClockText(w.end) + " " + loc.String()
	if w.days != scheduleEveryDay {
		s += " (" + scheduleDaysText(w.days) + ")"
	}
	return s
}

// scheduleDaysText lists days Monday first, runs of two or more as ranges:
// "Mon-Fri", "Sat-Sun", "Mon,Wed,Fri".
func scheduleDaysText(days uint8) string {
	order := []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}
	var parts []string
	for i := 0; i < len(order); {
		if days&(1<<order[i]) == 0 {
			i++
			continue
		}
		j := i
		for j+1 < len(order) && days&(1<<order[j+1]) != 0 {
			j++
		}
		if j > i {
			parts = append(parts, order[i].String()[:3]+"-"+order[j].String()[:3])
		} else {
			parts = append(parts, order[i].String()[:3])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// StateAt is the schedule at instant now, as a pure function: whether now is
// inside a window, the reason (every window now is in, for example
// "scheduled window 09:15-09:45 America/New_York (Mon-Fri)"; "" when not),
// and the next boundary after now, the first instant at which a window
// starts or ends. It needs no Open.
func (s *Schedule) StateAt(now time.Time) (throttled bool, reason string, next time.Time) {
	y, m, d := now.In(s.loc).Date()
	var in []string
	for _, w := range s.windows {
		inThis := false
		// An occurrence that contains now started today or yesterday.
		for off := -1; off <= scheduleHorizon; off++ {
			day := time.Date(y, m, d+off, 0, 0, 0, 0, time.UTC) // a civil date: no zone rules
			if w.days&(1<<day.Weekday()) == 0 {
				continue
			}
			start := scheduleResolve(day, w.start, s.loc)
			endDay := day
			if w.end < w.start {
				endDay = day.AddDate(0, 0, 1)
			}
			end := scheduleResolve(endDay, w.end, s.loc)
			if !start.Before(end) {
				continue // wholly inside a DST gap: it does not happen this day
			}
			if !now.Before(start) && now.Before(end) {
				inThis = true
			}
			for _, b := range [2]time.Time{start, end} {
				if b.After(now) && (next.IsZero() || b.Before(next)) {
					next = b
				}
			}
			if !next.IsZero() && start.After(next) {
				break // later days only start later still
			}
		}
		if inThis {
			in = append(in, w.text)
		}
	}
	if next.IsZero() { // not reachable with valid windows; keep a sane re-check
		next = now.Add(24 * time.Hour)
	}
	if len(in) == 0 {
		return false, "", next
	}
	return true, "scheduled window " + strings.Join(in, "; scheduled window "), next
}

// scheduleResolve is the instant the wall clock in loc reads secs after
// midnight on the civil date day (a UTC midnight): the first occurrence when
// the clocks repeat that time, the instant they jump when they skip it.
func scheduleResolve(day time.Time, secs int, loc *time.Location) time.Time {
	y, m, d := day.Date()
	hh, mm, ss := secs/3600, secs/60%60, secs%60
	want := time.Date(y, m, d, hh, mm, ss, 0, time.UTC)
	t := time.Date(y, m, d, hh, mm, ss, 0, loc)
	got := scheduleWall(t, loc)
	zoneStart, zoneEnd := t.ZoneBounds()
	if !got.Equal(want) {
		// The clocks skip this time; time.Date picked an instant on one
		// side of the jump. The window edge is the jump itself.
		if got.Before(want) && !zoneEnd.IsZero() {
			return zoneEnd
		}
		if got.After(want) && !zoneStart.IsZero() {
			return zoneStart
		}
		return t
	}
	// If the clocks went back at the start of t's zone, the same wall time
	// may have happened earlier, in the previous zone: prefer that.
	if !zoneStart.IsZero() {
		_, off := t.Zone()
		_, prevOff := zoneStart.Add(-time.Nanosecond).Zone()
		if prevOff > off {
			earlier := t.Add(-time.Duration(prevOff-off) * time.Second)
			if earlier.Before(zoneStart) && scheduleWall(earlier, loc).Equal(want) {
				return earlier
			}
		}
	}
	return t
}

// scheduleWall is t's wall clock in loc, as a UTC time for comparisons.
func scheduleWall(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// evaluate publishes the state at the current time and returns how long to
// sleep before the next look. Evaluations are serialised so that the state
// published last is the one of the latest clock reading.
func (s *Schedule) evaluate() time.Duration {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	now := time.Now()
	throttled, reason, next := s.StateAt(now)
	// The kind is the reason: each set of windows is its own state.
	s.gate.Set(throttled, reason, reason)
	return min(next.Sub(now), scheduleMaxArm)
}

// Open publishes the state at the current time; it fails only if ctx is
// already done.
func (s *Schedule) Open(ctx context.Context) error {
	if _, err := s.life.Begin(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	if err := ctx.Err(); err != nil {
		_ = s.life.Abort()
		return fmt.Errorf("throttler: open: %w", err)
	}
	var d time.Duration
	err := s.life.Start(func() { d = s.evaluate() }, func(ctx context.Context) { s.monitor(ctx, d) })
	if err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	s.log.Info("throttler: open", "windows", len(s.windows), "location", s.loc.String(), "throttled", s.IsThrottled())
	return nil
}

// monitor sleeps until the next boundary, publishes, and re-arms: one timer,
// no polling.
func (s *Schedule) monitor(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
		timer.Reset(s.evaluate()) // since Go 1.23, Reset discards a stale firing
	}
}

// UpdateLag re-evaluates the schedule at the current time, publishes the
// result and re-arms the timer, for example after the host's clock was
// stepped. There is nothing to measure: it returns nil, also before Open and
// after Close, when it does nothing.
func (s *Schedule) UpdateLag(context.Context) error {
	if s.life.CheckOpen() != nil || s.gate.Released() {
		return nil
	}
	s.evaluate()
	select {
	case s.kick <- struct{}{}:
	default: // a re-arm is already pending
	}
	return nil
}

func (s *Schedule) Close() error {
	s.life.Close()
	return nil
}

// IsThrottled reports whether work should wait now.
func (s *Schedule) IsThrottled() bool { return s.gate.Throttled() }

// BlockWait returns at once outside the windows; inside one it blocks until
// the window ends, as the package doc says.
func (s *Schedule) BlockWait(ctx context.Context) {
	if s.gate.Throttled() {
		_ = s.gate.Wait(ctx, s.maxWait)
	}
}

// Wait is BlockWait that says why it returned (see Waiter).
func (s *Schedule) Wait(ctx context.Context) error {
	return s.gate.Wait(ctx, s.maxWait)
}

// ThrottleReason is "" outside the windows; inside, it names the window, for
// example "scheduled window 09:15-09:45 America/New_York (Mon-Fri)".
func (s *Schedule) ThrottleReason() string { return s.gate.Reason() }

// Stats is what the schedule has done since Open (see Stats); it measures
// nothing.
func (s *Schedule) Stats() Stats { return statsOf(s.gate.Ledger(), 0, 0, time.Time{}) }

func (s *Schedule) stateGate() *gate.Gate { return &s.gate }

// Location is the time zone the windows are in.
func (s *Schedule) Location() *time.Location { return s.loc }

var (
	_ Throttler = (*Schedule)(nil)
	_ Waiter    = (*Schedule)(nil)
	_ Reasoner  = (*Schedule)(nil)
)

// String is the name given with WithName, or "schedule", which names it in the
// reasons of a Multi that holds it.
func (s *Schedule) String() string { return cmp.Or(s.name, "schedule") }
