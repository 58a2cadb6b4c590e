package throttler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waiters starts n BlockWait calls and returns a channel closed when all have
// returned. It returns once every waiter is (very likely) blocked.
func waiters(ctx context.Context, t Throttler, n int) <-chan struct{} {
	var started, wg sync.WaitGroup
	started.Add(n)
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			started.Done()
			t.BlockWait(ctx)
		}()
	}
	started.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

func requireReturns(t *testing.T, done <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("%s: waiters still blocked after %v", what, within)
	}
}

func requireBlocked(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
		t.Fatalf("%s: waiters returned while throttled", what)
	case <-time.After(20 * time.Millisecond):
	}
}

// TestPropertyNoWaiterLeftBehind interleaves state changes, waiter arrivals,
// caller cancellations, Open-context cancellation and Close in random orders
// and checks that every waiter returns once the throttler stops; goleak in
// TestMain then checks that no goroutine outlived its test. It runs on the
// real clock: its short sleeps let the scheduler interleave the goroutines
// mid-step, where in a bubble a sleep returns only once all have blocked.
func TestPropertyNoWaiterLeftBehind(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		r, src := newFake(t, time.Second, Measurement{}, WithInterval(minPeriod+time.Duration(rng.IntN(3))*time.Millisecond), WithMaxWait(0))
		openCtx, cancelOpen := context.WithCancel(context.Background())
		require.NoError(t, r.Open(openCtx))

		var wg sync.WaitGroup
		var cancels []context.CancelFunc
		for step := range 20 + rng.IntN(30) {
			switch rng.IntN(6) {
			case 0, 1:
				ctx, cancel := context.WithCancel(context.Background())
				cancels = append(cancels, cancel)
				for range 1 + rng.IntN(5) {
					wg.Add(1)
					go func() { defer wg.Done(); r.BlockWait(ctx) }()
				}
			case 2:
				src.set(lagOf(time.Duration(rng.IntN(3))*time.Second), nil)
			case 3:
				if len(cancels) > 0 {
					cancels[rng.IntN(len(cancels))]()
				}
			case 4:
				wg.Add(1)
				go func() { defer wg.Done(); _ = r.UpdateLag(context.Background()) }()
			case 5:
				if step%7 == 0 {
					time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
				}
			}
		}
		src.set(lagOf(time.Minute), nil) // end throttled, so only the stop can release
		_ = r.UpdateLag(context.Background())
		if rng.IntN(2) == 0 {
			cancelOpen()
		} else {
			require.NoError(t, r.Close())
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		requireReturns(t, done, 5*time.Second, fmt.Sprintf("seed %d", seed))
		assert.False(t, r.IsThrottled(), "seed %d", seed)
		require.NoError(t, r.Close())
		cancelOpen()
		for _, c := range cancels {
			c()
		}
	}
}

// TestHotPathDoesNotAllocate: IsThrottled and an unthrottled BlockWait cost
// no allocation (the benchmarks measure their speed).
func TestHotPathDoesNotAllocate(t *testing.T) {
	r, _ := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour))
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = r.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { r.BlockWait(ctx) }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = r.ThrottleReason() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = r.Lag() }))
}

// TestCloseWaitsForTheMonitor: once Close returns, nothing polls any more.
func TestCloseWaitsForTheMonitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, Measurement{})
		require.NoError(t, r.Open(context.Background()))
		time.Sleep(5 * minPeriod)
		synctest.Wait()
		require.Greater(t, src.calls.Load(), int64(3), "the monitor polls every interval")
		require.NoError(t, r.Close())
		after := src.calls.Load()
		time.Sleep(20 * minPeriod)
		synctest.Wait()
		assert.Equal(t, after, src.calls.Load(), "a poll after Close returned")
		assert.Zero(t, src.inFlight.Load())
	})
}
