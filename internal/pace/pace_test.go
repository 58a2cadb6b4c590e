package pace

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/sentinel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is one uncapped Wait.
func wait(p *Pacer) error {
	var deadline time.Time
	return p.Wait(context.Background(), 0, &deadline)
}

// waitAsync starts one Wait, capped at max, and returns once the waiter
// holds its slot; its outcome comes on the channel.
func waitAsync(p *Pacer, ctx context.Context, max time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		var deadline time.Time
		done <- p.Wait(ctx, max, &deadline)
	}()
	synctest.Wait()
	return done
}

func TestOffAndUnlimitedAdmitAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 0, "paced")
		start := time.Now()
		for range 5 {
			require.NoError(t, wait(p), "off")
		}
		p.Start()
		p.Set(math.Inf(1))
		for range 5 {
			require.NoError(t, wait(p), "unlimited")
		}
		assert.Equal(t, start, time.Now())
		assert.True(t, math.IsInf(p.Rate(), 1))
	})
}

func TestAdmitsAtTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(10, 0, "paced")
		p.Start()
		start := time.Now()
		for range 5 {
			require.NoError(t, wait(p))
		}
		assert.Equal(t, 400*time.Millisecond, time.Since(start), "the first at once, then one per 100ms")
	})
}

func TestSetKeepsTheLastPositiveRate(t *testing.T) {
	p := New(math.Inf(1), 0, "paced")
	assert.True(t, p.Set(5))
	assert.False(t, p.Set(5), "unchanged")
	assert.False(t, p.Set(0), "0 keeps the rate")
	assert.Equal(t, 5.0, p.Rate())
	assert.True(t, p.Set(math.Inf(1)))
	assert.False(t, p.Set(math.Inf(1)))
	assert.True(t, p.Set(0), "0 ends unlimited, at the last positive rate")
	assert.Equal(t, 5.0, p.Rate())
}

// A capped call gives its slot back: the next caller takes it.
func TestCapGivesTheSlotBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 0, "paced")
		p.Start()
		require.NoError(t, wait(p))
		start := time.Now()
		var deadline time.Time
		err := p.Wait(context.Background(), 300*time.Millisecond, &deadline)
		assert.ErrorIs(t, err, sentinel.ErrMaxWait)
		assert.ErrorContains(t, err, "paced", "says why")
		assert.Equal(t, 300*time.Millisecond, time.Since(start), "at the cap, not at the slot")
		assert.Equal(t, start.Add(300*time.Millisecond), deadline)
		assert.ErrorIs(t, p.Wait(context.Background(), time.Hour, &deadline), sentinel.ErrMaxWait, "the cap holds across retries")
		require.NoError(t, wait(p))
		assert.Equal(t, time.Second, time.Since(start), "the slot the capped call gave back")
	})
}

func TestContextGivesTheSlotBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 0, "paced")
		p.Start()
		require.NoError(t, wait(p))
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := waitAsync(p, ctx, 0)
		time.Sleep(100 * time.Millisecond)
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
		require.NoError(t, wait(p))
		assert.Equal(t, time.Second, time.Since(start), "the slot the cancelled call gave back")
	})
}

// Requeue sends every waiter back, slots given back: at a raised rate they
// are admitted sooner than their old slots.
func TestRequeueSendsWaitersBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(0.2, 0, "paced")
		p.Start()
		require.NoError(t, wait(p))
		start := time.Now()
		a, b := waitAsync(p, context.Background(), 0), waitAsync(p, context.Background(), 0)
		time.Sleep(100 * time.Millisecond)
		p.Set(10)
		p.Requeue()
		assert.ErrorIs(t, <-a, ErrRequeue)
		assert.ErrorIs(t, <-b, ErrRequeue)
		require.NoError(t, wait(p))
		require.NoError(t, wait(p))
		// The slot the first waiter gave back is not restored (a later one
		// was reserved after it): x/time/rate's rule. Still about 10s
		// sooner.
		assert.Less(t, time.Since(start), time.Second, "at the new rate, not after 5s and 10s")
	})
}

// Stop ends the waits and lets every call through until the next Start.
func TestStopAndStartAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 0, "paced")
		p.Start()
		require.NoError(t, wait(p))
		done := waitAsync(p, context.Background(), 0)
		p.Stop()
		assert.ErrorIs(t, <-done, ErrStopped)
		start := time.Now()
		require.NoError(t, wait(p))
		require.NoError(t, wait(p))
		assert.Equal(t, start, time.Now(), "off")
		p.Start()
		done = waitAsync(p, context.Background(), 0)
		p.Stop()
		assert.ErrorIs(t, <-done, ErrStopped, "a new stop for the new start")
	})
}

// Release is for good: later waits end at once, and nothing turns it on.
func TestRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(1, 0, "paced")
		p.Start()
		require.NoError(t, wait(p))
		done := waitAsync(p, context.Background(), 0)
		p.Release()
		assert.ErrorIs(t, <-done, ErrStopped)
		p.Start()
		assert.False(t, p.Set(5))
		p.Requeue()
		p.Release()
		assert.ErrorIs(t, wait(p), ErrStopped)
	})
}

func TestAdmissionsAndHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(10, 4, "paced")
		start := time.Now()
		require.NoError(t, wait(p))
		assert.Zero(t, p.AdmittedBy(start), "off: not counted")
		p.Start()
		for range 6 {
			require.NoError(t, wait(p)) // at 0, 100ms, ..., 500ms
		}
		assert.Equal(t, int64(6), p.AdmittedBy(start.Add(time.Hour)))
		assert.Equal(t, int64(5), p.AdmittedBy(start.Add(450*time.Millisecond)))
		assert.Equal(t, int64(2), p.AdmittedBy(start), "before the oldest remembered: the count up to there")
		assert.True(t, p.HeldSince(start.Add(400*time.Millisecond)), "the last call queued at 400ms")
		assert.False(t, p.HeldSince(start.Add(401*time.Millisecond)))
		done := waitAsync(p, context.Background(), 0)
		assert.True(t, p.HeldSince(time.Now().Add(time.Hour)), "a caller waits now")
		require.NoError(t, <-done)
	})
}
