package throttler

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
	assert.Equal(t, 3, strings.Count(out, "throttler: paused manually"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed manually"), out)
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
