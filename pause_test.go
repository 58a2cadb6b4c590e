package throttler

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestPause(t *testing.T, cfg PauseConfig, opts ...Option) *Pause {
	t.Helper()
	p, err := NewPause(cfg, nil, append([]Option{WithMaxWait(0)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestNewPauseRejectsBadOptions(t *testing.T) {
	for _, c := range []struct {
		opt  Option
		want string
	}{
		{WithInterval(-time.Second), "WithInterval(-1s)"},
		{WithLagSource(&fakeSource{}), "WithLagSource does not apply"},
		{nil, "option 0 is nil"},
	} {
		p, err := NewPause(PauseConfig{FlagFile: "/tmp/flag"}, nil, c.opt)
		assert.Nil(t, p)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, c.want)
	}
}

func TestPauseManual(t *testing.T) {
	ctx := context.Background()
	var buf syncBuffer
	p, err := NewPause(PauseConfig{}, slog.New(slog.NewTextHandler(&buf, nil)), WithMaxWait(0))
	require.NoError(t, err)
	defer p.Close()
	assert.Nil(t, p.poll, "no flag file: no poller")

	p.Pause("before open")
	assert.True(t, p.Paused(), "remembered before Open")
	assert.False(t, p.IsThrottled(), "but not throttling before Open")

	before := pauseMonitors()
	require.NoError(t, p.Open(ctx))
	assert.Equal(t, before, pauseMonitors(), "no goroutine without a flag file")
	assert.True(t, p.IsThrottled())
	assert.Equal(t, "paused manually: before open", p.ThrottleReason())

	p.Pause("deploy freeze")
	assert.Equal(t, "paused manually: deploy freeze", p.ThrottleReason(), "a second Pause replaces the reason")
	done := waiters(ctx, p, 50)
	requireBlocked(t, done, "paused")
	p.Resume()
	requireReturns(t, done, time.Second, "Resume")
	assert.False(t, p.Paused())
	assert.False(t, p.IsThrottled())
	assert.Empty(t, p.ThrottleReason())
	p.Resume() // no-op

	p.Pause("")
	assert.Equal(t, "paused manually", p.ThrottleReason())
	require.NoError(t, p.UpdateLag(ctx), "nothing to measure")
	require.NoError(t, p.Close())
	assert.False(t, p.IsThrottled())
	p.Resume()
	p.Pause("after close")
	assert.True(t, p.Paused(), "calls after Close have no effect")
	assert.False(t, p.IsThrottled())

	out := buf.String()
	// One line per change of state: not per call, not for a new reason.
	assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)
}

func TestPauseResumeBeforeOpen(t *testing.T) {
	p := newTestPause(t, PauseConfig{})
	p.Pause("x")
	p.Resume()
	require.NoError(t, p.Open(context.Background()))
	assert.False(t, p.IsThrottled())
}

// TestPauseFlagFile: a real flag file throttles while it exists; with a
// manual pause the reason names both; Resume wakes waiters at once when the
// file is absent, without waiting for a check.
func TestPauseFlagFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // checks on a fake clock; the file is real
		ctx := context.Background()
		flag := filepath.Join(t.TempDir(), "throttle.flag")
		p := newTestPause(t, PauseConfig{FlagFile: flag}, WithInterval(minPeriod))
		require.NoError(t, p.Open(ctx))
		assert.False(t, p.IsThrottled())

		require.NoError(t, os.WriteFile(flag, nil, 0o600))
		synctest.Wait()
		require.False(t, p.IsThrottled(), "seen at the next check, not before")
		time.Sleep(minPeriod)
		synctest.Wait()
		require.True(t, p.IsThrottled())
		assert.Equal(t, "flag file "+flag+" exists", p.ThrottleReason())
		assert.False(t, p.Paused(), "the file is not a manual pause")

		p.Pause("maintenance")
		assert.Equal(t, "paused manually: maintenance; flag file "+flag+" exists", p.ThrottleReason())
		done := contractWaiters(ctx, p, 20)
		p.Resume()
		time.Sleep(3 * minPeriod)
		assert.False(t, returned(done), "the flag file still throttles")
		assert.Equal(t, "flag file "+flag+" exists", p.ThrottleReason())

		require.NoError(t, os.Remove(flag))
		time.Sleep(minPeriod)
		assert.True(t, returned(done), "flag file removed: released at the next check")
		assert.False(t, p.IsThrottled())
		assert.Empty(t, p.ThrottleReason())
	})
}

func TestPauseResumeIsImmediateWithFlagFile(t *testing.T) {
	ctx := context.Background()
	flag := filepath.Join(t.TempDir(), "throttle.flag")
	p := newTestPause(t, PauseConfig{FlagFile: flag}, WithInterval(time.Hour))
	require.NoError(t, p.Open(ctx))
	p.Pause("x")
	done := waiters(ctx, p, 20)
	requireBlocked(t, done, "paused")
	p.Resume()
	requireReturns(t, done, time.Second, "Resume needs no flag file check")
}

// TestPauseFlagFileCheckFails: a flag file that cannot be checked (here a
// path component is a regular file: ENOTDIR, not "does not exist") fails
// Open, and while open throttles at once with the error in the reason.
func TestPauseFlagFileCheckFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // checks on a fake clock; the files are real
		ctx := context.Background()
		dir := t.TempDir()
		notDir := filepath.Join(dir, "not-a-dir")
		require.NoError(t, os.WriteFile(notDir, nil, 0o600))

		p := newTestPause(t, PauseConfig{FlagFile: filepath.Join(notDir, "flag")})
		err := p.Open(ctx)
		require.ErrorIs(t, err, syscall.ENOTDIR)
		assert.NotErrorIs(t, err, ErrInvalidConfig)
		assert.False(t, p.IsThrottled(), "false after a failed Open")

		sub := filepath.Join(dir, "sub")
		require.NoError(t, os.Mkdir(sub, 0o700))
		flag := filepath.Join(sub, "flag")
		p = newTestPause(t, PauseConfig{FlagFile: flag}, WithInterval(minPeriod), WithStaleAfter(time.Hour))
		require.NoError(t, p.Open(ctx))
		require.False(t, p.IsThrottled())

		require.NoError(t, os.Remove(sub))
		require.NoError(t, os.WriteFile(sub, nil, 0o600)) // the directory is now a file
		time.Sleep(minPeriod)
		synctest.Wait()
		require.True(t, p.IsThrottled(), "fails closed at the next check, not after the stale window")
		assert.Contains(t, p.ThrottleReason(), "flag file: stat "+flag)
		assert.Contains(t, p.ThrottleReason(), "not a directory")
		assert.ErrorIs(t, p.UpdateLag(ctx), syscall.ENOTDIR)

		require.NoError(t, os.Remove(sub))
		require.NoError(t, os.Mkdir(sub, 0o700))
		time.Sleep(minPeriod)
		synctest.Wait()
		require.False(t, p.IsThrottled())
		require.NoError(t, p.UpdateLag(ctx))
	})
}

func TestPauseHotPathDoesNotAllocate(t *testing.T) {
	p := newTestPause(t, PauseConfig{FlagFile: filepath.Join(t.TempDir(), "flag")}, WithInterval(time.Hour))
	require.NoError(t, p.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = p.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { p.BlockWait(ctx) }))
}

// pauseMonitors counts goroutines running a poller's monitor.
func pauseMonitors() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "internal/poller.(*Poller).monitor")
}

// changeLog collects WithOnChange's changes.
type changeLog struct {
	mu  sync.Mutex
	got []Change
}

func (l *changeLog) add(c Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, c)
}

// sleepWait moves the fake clock by d and lets every goroutine that woke
// (a timer's) run until it blocks.
func sleepWait(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// throttled is the Throttled of every change so far, once delivered.
func (l *changeLog) throttled() []bool {
	synctest.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []bool
	for _, c := range l.got {
		out = append(out, c.Throttled)
	}
	return out
}

// TestPauseFor: an expiring pause ends by itself exactly at its end, waking
// the waiters; its time counts before Open; it names its end; Stats and
// OnChange see the pause and the expiry as changes.
func TestPauseFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var changes changeLog
		p := newTestPause(t, PauseConfig{}, WithOnChange(changes.add))

		require.NoError(t, p.PauseFor(time.Hour, "migration window"))
		until := time.Now().Add(time.Hour)
		assert.Equal(t, until, p.PausedUntil())
		assert.True(t, p.Paused())
		sleepWait(30 * time.Minute) // before Open, the time counts
		require.NoError(t, p.Open(ctx))
		require.True(t, p.IsThrottled())
		assert.Equal(t, "paused manually: migration window (until "+until.Format(time.RFC3339)+")", p.ThrottleReason())
		assert.Equal(t, p.ThrottleReason(), p.Stats().Reason)

		done := contractWaiters(ctx, p, 20)
		sleepWait(30*time.Minute - time.Nanosecond)
		assert.False(t, returned(done), "not before its end")
		assert.True(t, p.IsThrottled())
		sleepWait(time.Nanosecond)
		assert.True(t, returned(done), "its end wakes every waiter")
		assert.False(t, p.IsThrottled())
		assert.False(t, p.Paused())
		assert.True(t, p.PausedUntil().IsZero())
		assert.Empty(t, p.ThrottleReason())

		st := p.Stats()
		assert.False(t, st.Throttled)
		assert.Equal(t, int64(1), st.Episodes)
		assert.Equal(t, 30*time.Minute, st.ThrottledTotal, "from Open to the end")
		assert.Equal(t, []bool{true, false}, changes.throttled(), "the pause and its end, each one change")
	})
}

func TestPauseForEndedBeforeOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPause(t, PauseConfig{})
		require.NoError(t, p.PauseFor(time.Minute, ""))
		sleepWait(time.Minute)
		assert.False(t, p.Paused(), "ended before Open")
		require.NoError(t, p.Open(context.Background()))
		assert.False(t, p.IsThrottled())
	})
}

// TestPauseForIsReplaced: Pause, Resume and another PauseFor replace an
// expiring pause, and the replaced one's end changes nothing.
func TestPauseForIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPause(t, PauseConfig{})
		require.NoError(t, p.Open(context.Background()))

		require.NoError(t, p.PauseFor(time.Hour, "short"))
		p.Pause("until lifted")
		assert.True(t, p.PausedUntil().IsZero(), "Pause lasts until Resume")
		assert.Equal(t, "paused manually: until lifted", p.ThrottleReason())
		sleepWait(2 * time.Hour)
		assert.True(t, p.IsThrottled(), "the replaced end does not resume")

		require.NoError(t, p.PauseFor(time.Hour, "longer"))
		require.NoError(t, p.PauseFor(2*time.Hour, "longer"))
		sleepWait(time.Hour)
		assert.True(t, p.IsThrottled(), "the second PauseFor set a new end")
		sleepWait(time.Hour)
		assert.False(t, p.IsThrottled())

		require.NoError(t, p.PauseFor(time.Hour, "lifted early"))
		p.Resume()
		assert.False(t, p.IsThrottled())
		p.Pause("again")
		sleepWait(2 * time.Hour)
		assert.True(t, p.IsThrottled(), "the resumed PauseFor's end does not end a later Pause")
	})
}

func TestPauseForRejectsBadDurations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPause(t, PauseConfig{})
		require.NoError(t, p.Open(context.Background()))
		require.NoError(t, p.PauseFor(time.Hour, "kept"))
		until := p.PausedUntil()
		for _, d := range []time.Duration{0, -time.Second, 7*24*time.Hour + time.Nanosecond} {
			err := p.PauseFor(d, "bad")
			assert.ErrorIs(t, err, ErrInvalidConfig, "%v", d)
			assert.ErrorContains(t, err, fmt.Sprintf("PauseFor(%v)", d))
			assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()), "wrapped once")
		}
		assert.Equal(t, until, p.PausedUntil(), "a bad PauseFor changes nothing")
		assert.Contains(t, p.ThrottleReason(), "kept")
		require.NoError(t, p.PauseFor(7*24*time.Hour, "a week is the most"))
	})
}

func TestPauseForAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPause(t, PauseConfig{})
		require.NoError(t, p.Open(context.Background()))
		require.NoError(t, p.PauseFor(time.Hour, "cut short by Close"))
		require.NoError(t, p.Close())
		assert.False(t, p.IsThrottled())
		require.NoError(t, p.PauseFor(time.Hour, "after close"))
		assert.NotContains(t, p.ThrottleReason(), "after close")
		assert.False(t, p.IsThrottled(), "no effect after Close")
		sleepWait(2 * time.Hour) // Close disarmed the timer: nothing left to fire
		assert.False(t, p.IsThrottled())
		assert.True(t, p.Stats().Released)
	})
}
