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
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// contractSuite runs the contract every throttler keeps against fresh,
// unopened subjects from mk, whose WithMaxWait is maxWait. Its throttle lever
// changes the signal and publishes it when the throttler is open.
func contractSuite(t *testing.T, mk func(t *testing.T, maxWait time.Duration) subject) {
	ctx := context.Background()
	t.Run("not throttled before Open", func(t *testing.T) {
		s := mk(t, 0)
		s.throttle(true)
		assert.False(t, s.t.IsThrottled())
		requireReturns(t, waiters(ctx, s.t, 10), time.Second, "before Open")
		require.NoError(t, s.t.Open(ctx))
		assert.True(t, s.t.IsThrottled(), "Open publishes the signal's state before it returns")
		require.NoError(t, s.t.Close())
	})
	t.Run("BlockWait returns at once when clear", func(t *testing.T) {
		s := mk(t, 0)
		require.NoError(t, s.t.Open(ctx))
		defer s.t.Close()
		assert.False(t, s.t.IsThrottled())
		requireReturns(t, waiters(ctx, s.t, 10), time.Second, "clear")
	})
	t.Run("clear wakes every waiter", func(t *testing.T) {
		s := mk(t, 0)
		require.NoError(t, s.t.Open(ctx))
		defer s.t.Close()
		s.throttle(true)
		require.True(t, s.t.IsThrottled())
		assert.NotEmpty(t, s.t.(Reasoner).ThrottleReason())
		done := waiters(ctx, s.t, 50)
		requireBlocked(t, done, "throttled")
		s.throttle(false)
		requireReturns(t, done, time.Second, "cleared")
		assert.Empty(t, s.t.(Reasoner).ThrottleReason())
	})
	t.Run("Close releases waiters and IsThrottled", func(t *testing.T) {
		s := mk(t, 0)
		require.NoError(t, s.t.Open(ctx))
		s.throttle(true)
		done := waiters(ctx, s.t, 50)
		requireBlocked(t, done, "throttled")
		require.NoError(t, s.t.Close())
		requireReturns(t, done, time.Second, "Close")
		assert.False(t, s.t.IsThrottled())
		s.throttle(true) // a late update after Close changes nothing
		assert.False(t, s.t.IsThrottled())
		assert.ErrorIs(t, s.t.(Waiter).Wait(ctx), ErrClosed)
		require.NoError(t, s.t.Close(), "Close is idempotent")
	})
	t.Run("caller context ends the wait", func(t *testing.T) {
		s := mk(t, 0)
		require.NoError(t, s.t.Open(ctx))
		defer s.t.Close()
		s.throttle(true)
		cctx, cancel := context.WithCancel(ctx)
		done := waiters(cctx, s.t, 10)
		requireBlocked(t, done, "throttled")
		cancel()
		requireReturns(t, done, time.Second, "caller cancel")
		assert.True(t, s.t.IsThrottled(), "a caller giving up changes nothing")
		assert.ErrorIs(t, s.t.(Waiter).Wait(cctx), context.Canceled)
	})
	t.Run("Open's context end releases", func(t *testing.T) {
		s := mk(t, 0)
		octx, cancel := context.WithCancel(ctx)
		defer cancel()
		require.NoError(t, s.t.Open(octx))
		s.throttle(true)
		require.True(t, s.t.IsThrottled())
		done := waiters(ctx, s.t, 50)
		requireBlocked(t, done, "throttled")
		cancel()
		requireReturns(t, done, time.Second, "Open's context cancelled")
		assert.False(t, s.t.IsThrottled())
		s.throttle(true)
		assert.False(t, s.t.IsThrottled(), "released for good")
		require.NoError(t, s.t.Close())
	})
	t.Run("WithMaxWait caps the wait", func(t *testing.T) {
		s := mk(t, 5*time.Millisecond)
		require.NoError(t, s.t.Open(ctx))
		defer s.t.Close()
		s.throttle(true)
		err := s.t.(Waiter).Wait(ctx)
		assert.ErrorIs(t, err, ErrMaxWait)
		assert.ErrorContains(t, err, s.t.(Reasoner).ThrottleReason())
		requireReturns(t, waiters(ctx, s.t, 10), 2*time.Second, "max wait")
		assert.True(t, s.t.IsThrottled())
	})
	t.Run("lifecycle errors", func(t *testing.T) {
		s := mk(t, 0)
		require.NoError(t, s.t.Open(ctx))
		assert.ErrorIs(t, s.t.Open(ctx), ErrAlreadyOpen)
		require.NoError(t, s.t.Close())
		assert.ErrorIs(t, s.t.Open(ctx), ErrClosed)
		require.NoError(t, s.t.Close())
	})
	t.Run("Open with a done context fails", func(t *testing.T) {
		s := mk(t, 0)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		assert.ErrorIs(t, s.t.Open(cctx), context.Canceled)
		assert.False(t, s.t.IsThrottled())
		require.NoError(t, s.t.Open(ctx), "a failed Open may be retried")
		require.NoError(t, s.t.Close())
	})
}

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
	ctx := context.Background()
	flag := filepath.Join(t.TempDir(), "throttle.flag")
	p := newTestPause(t, PauseConfig{FlagFile: flag}, WithInterval(minPeriod))
	require.NoError(t, p.Open(ctx))
	assert.False(t, p.IsThrottled())

	require.NoError(t, os.WriteFile(flag, nil, 0o600))
	require.Eventually(t, p.IsThrottled, 5*time.Second, time.Millisecond)
	assert.Equal(t, "flag file "+flag+" exists", p.ThrottleReason())
	assert.False(t, p.Paused(), "the file is not a manual pause")

	p.Pause("maintenance")
	assert.Equal(t, "paused manually: maintenance; flag file "+flag+" exists", p.ThrottleReason())
	done := waiters(ctx, p, 20)
	p.Resume()
	requireBlocked(t, done, "the flag file still throttles")
	assert.Equal(t, "flag file "+flag+" exists", p.ThrottleReason())

	require.NoError(t, os.Remove(flag))
	requireReturns(t, done, 5*time.Second, "flag file removed")
	assert.False(t, p.IsThrottled())
	assert.Empty(t, p.ThrottleReason())
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
	require.Eventually(t, p.IsThrottled, 5*time.Second, time.Millisecond, "fails closed at once, not after the stale window")
	assert.Contains(t, p.ThrottleReason(), "flag file: stat "+flag)
	assert.Contains(t, p.ThrottleReason(), "not a directory")
	assert.ErrorIs(t, p.UpdateLag(ctx), syscall.ENOTDIR)

	require.NoError(t, os.Remove(sub))
	require.NoError(t, os.Mkdir(sub, 0o700))
	require.Eventually(t, func() bool { return !p.IsThrottled() }, 5*time.Second, time.Millisecond)
	require.NoError(t, p.UpdateLag(ctx))
}

func TestPauseHotPathDoesNotAllocate(t *testing.T) {
	p := newTestPause(t, PauseConfig{FlagFile: filepath.Join(t.TempDir(), "flag")}, WithInterval(time.Hour))
	require.NoError(t, p.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = p.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { p.BlockWait(ctx) }))
}

func TestPauseContract(t *testing.T) {
	t.Run("manual", func(t *testing.T) {
		contractSuite(t, func(t *testing.T, maxWait time.Duration) subject {
			p := newTestPause(t, PauseConfig{}, WithMaxWait(maxWait))
			return subject{t: p, throttle: func(on bool) {
				if on {
					p.Pause("contract")
				} else {
					p.Resume()
				}
			}}
		})
	})
	t.Run("flag file", func(t *testing.T) {
		contractSuite(t, func(t *testing.T, maxWait time.Duration) subject {
			flag := filepath.Join(t.TempDir(), "flag")
			p := newTestPause(t, PauseConfig{FlagFile: flag}, WithInterval(time.Hour), WithMaxWait(maxWait))
			return subject{t: p, throttle: func(on bool) {
				if on {
					_ = os.WriteFile(flag, nil, 0o600)
				} else {
					_ = os.Remove(flag)
				}
				_ = p.UpdateLag(context.Background())
			}}
		})
	})
}

// pauseMonitors counts goroutines running a poller's monitor.
func pauseMonitors() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "internal/poller.(*Poller).monitor")
}
