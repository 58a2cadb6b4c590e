package gate

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/sentinel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestZeroValueIsClear(t *testing.T) {
	var g Gate
	assert.False(t, g.Throttled())
	assert.False(t, g.Released())
	assert.Equal(t, "", g.Reason())
	assert.NoError(t, g.Wait(context.Background(), time.Second))
}

func TestSetReportsFlips(t *testing.T) {
	var g Gate
	assert.True(t, g.Set(true, "a"))
	assert.False(t, g.Set(true, "b"), "a new reason is not a flip")
	assert.Equal(t, "b", g.Reason())
	assert.False(t, g.Set(true, "b"))
	assert.True(t, g.Set(false, "ignored"))
	assert.Equal(t, "", g.Reason(), "a clear state has no reason")
	assert.False(t, g.Set(false, ""))
}

func TestClearWakesEveryWaiter(t *testing.T) {
	var g Gate
	g.Set(true, "lag")
	const n = 100
	errs := make(chan error, n)
	for range n {
		go func() { errs <- g.Wait(context.Background(), 0) }()
	}
	g.Set(true, "still lag") // same epoch: must not wake anyone
	select {
	case err := <-errs:
		t.Fatalf("a reason change woke a waiter: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	g.Set(false, "")
	for range n {
		assert.NoError(t, <-errs)
	}
}

func TestReleaseWakesAndIsFinal(t *testing.T) {
	var g Gate
	g.Set(true, "lag")
	done := make(chan error)
	go func() { done <- g.Wait(context.Background(), 0) }()
	assert.True(t, g.Release())
	assert.ErrorIs(t, <-done, sentinel.ErrClosed)
	assert.False(t, g.Release(), "second release")
	assert.False(t, g.Set(true, "late poll"), "Set after Release is ignored")
	assert.False(t, g.Throttled())
	assert.True(t, g.Released())
	assert.ErrorIs(t, g.Wait(context.Background(), 0), sentinel.ErrClosed)
}

func TestReleaseOfClearGate(t *testing.T) {
	var g Gate
	assert.True(t, g.Release())
	assert.False(t, g.Throttled())
}

func TestWaitEndsOnContextAndMax(t *testing.T) {
	var g Gate
	g.Set(true, "lag")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Wait(ctx, 0) }()
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)

	assert.ErrorIs(t, g.Wait(context.Background(), time.Millisecond), sentinel.ErrMaxWait)
	assert.True(t, g.Throttled(), "waiting changes nothing")
}

// TestNoLostWakeup races Set(clear) against waiters arriving: a waiter that
// loaded the throttled state just before it cleared must still wake.
func TestNoLostWakeup(t *testing.T) {
	for range 500 {
		var g Gate
		g.Set(true, "lag")
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				require.NoError(t, g.Wait(context.Background(), 0))
			}()
		}
		g.Set(false, "")
		wg.Wait()
	}
}

// capsOf is the number of pending cap timers of the current epoch.
func capsOf(g *Gate) int {
	s := g.cur.Load()
	if s == nil || s.ep == nil {
		return 0
	}
	s.ep.mu.Lock()
	defer s.ep.mu.Unlock()
	return len(s.ep.caps)
}

// TestCapIsNeverEarlyAndShared: a cap ends no earlier than asked and at most
// a granule late; waiters that arrive together share a timer; fired timers
// remove themselves.
func TestCapIsNeverEarlyAndShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		g.Set(true, "lag")
		const n = 50
		took := make(chan time.Duration, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				start := time.Now()
				assert.ErrorIs(t, g.Wait(context.Background(), 30*time.Millisecond), sentinel.ErrMaxWait)
				took <- time.Since(start)
			})
		}
		synctest.Wait()
		assert.Equal(t, 1, capsOf(&g), "waiters arriving together share one cap timer")
		wg.Wait()
		close(took)
		for d := range took {
			assert.GreaterOrEqual(t, d, 30*time.Millisecond, "a cap ended early")
			assert.LessOrEqual(t, d, 30*time.Millisecond+capGranule, "a cap ended more than a granule late")
		}
		assert.Zero(t, capsOf(&g), "fired timers remove themselves")
		assert.True(t, g.Throttled(), "a cap changes nothing")
	})
}

// TestEpochEndStopsCaps: clearing or releasing wakes capped waiters at once
// (nil and sentinel.ErrClosed), and stops their timers.
func TestEpochEndStopsCaps(t *testing.T) {
	for _, release := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			var g Gate
			g.Set(true, "lag")
			ep := g.cur.Load().ep
			done := make(chan error)
			go func() { done <- g.Wait(context.Background(), time.Hour) }()
			synctest.Wait()
			require.Equal(t, 1, capsOf(&g), "the waiter's cap")
			if release {
				g.Release()
				assert.ErrorIs(t, <-done, sentinel.ErrClosed)
			} else {
				g.Set(false, "")
				assert.NoError(t, <-done)
			}
			ep.mu.Lock()
			assert.Empty(t, ep.caps, "the epoch's timers are stopped")
			assert.True(t, ep.ended)
			ep.mu.Unlock()
			// A waiter arriving at an epoch that has just ended is not stranded:
			// its cap channel is already closed.
			select {
			case <-ep.capChan(time.Now().Add(time.Hour)):
			default:
				t.Fatal("a cap taken after the epoch ended is open")
			}
		})
	}
}

// TestNewEpochAfterCapIsNotMaxWait: a cap that fires after its epoch ended
// and a new one began reports the clear it missed, not ErrMaxWait.
func TestNewEpochAfterCapIsNotMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		g.Set(true, "lag")
		done := make(chan error)
		go func() { done <- g.Wait(context.Background(), 0) }()
		synctest.Wait() // the waiter is waiting
		g.Set(false, "")
		g.Set(true, "lag again") // a new epoch before the waiter looks
		assert.NoError(t, <-done, "the throttle cleared while it waited")
	})
}

// TestBindReleasesAtOnce: once the bound channel is closed the gate reads
// as released, before Release is called.
func TestBindReleasesAtOnce(t *testing.T) {
	var g Gate
	done := make(chan struct{})
	g.Bind(done)
	g.Set(true, "lag")
	require.True(t, g.Throttled())
	close(done)
	assert.False(t, g.Throttled())
	assert.True(t, g.Released())
	assert.Equal(t, "", g.Reason())
	assert.ErrorIs(t, g.Wait(context.Background(), 0), sentinel.ErrClosed)
	assert.True(t, g.Release(), "the first Release still reports that it released")
}

// TestWaitAny: the wait of a throttler throttled while any of several gates
// is ends when one of them clears or is released, with ctx, or at the cap.
func TestWaitAny(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a, b Gate
		assert.NoError(t, WaitAny(context.Background(), time.Time{}, &a, &b), "a clear gate: at once")
		a.Set(true, "a")
		b.Set(true, "b")
		done := make(chan error, 1)
		go func() { done <- WaitAny(context.Background(), time.Time{}, &a, &b) }()
		synctest.Wait()
		b.Set(false, "")
		assert.NoError(t, <-done, "one cleared")

		b.Set(true, "b")
		go func() { done <- WaitAny(context.Background(), time.Time{}, &a, &b) }()
		synctest.Wait()
		a.Release()
		assert.ErrorIs(t, <-done, sentinel.ErrClosed, "one released")

		ctx, cancel := context.WithCancel(context.Background())
		go func() { done <- WaitAny(ctx, time.Now().Add(time.Hour), &b) }()
		synctest.Wait()
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)

		start := time.Now()
		assert.ErrorIs(t, WaitAny(context.Background(), start.Add(time.Minute), &b), sentinel.ErrMaxWait)
		assert.Equal(t, time.Minute, time.Since(start), "the cap, on the fake clock")
	})
}
