package throttler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// subject is one throttler under the contract tests, with the test's levers.
type subject struct {
	t        Throttler
	throttle func(bool) // make the next observed state throttled or clear, and publish it
}

// subjects returns every implementation whose state can be driven, unopened.
func subjects(t *testing.T, maxWait time.Duration) map[string]func() subject {
	return map[string]func() subject{
		"Replication": func() subject {
			r, src := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithStaleAfter(time.Hour), WithMaxWait(maxWait))
			return subject{t: r, throttle: func(on bool) {
				lag := time.Duration(0)
				if on {
					lag = time.Minute
				}
				src.set(lagOf(lag), nil)
				_ = r.UpdateLag(context.Background())
			}}
		},
		"Multi": func() subject {
			a, srcA := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithStaleAfter(time.Hour), WithMaxWait(maxWait))
			b, _ := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithStaleAfter(time.Hour), WithMaxWait(maxWait))
			m := NewMulti(a, b)
			return subject{t: m, throttle: func(on bool) {
				lag := time.Duration(0)
				if on {
					lag = time.Minute
				}
				srcA.set(lagOf(lag), nil)
				_ = a.UpdateLag(context.Background())
			}}
		},
		"Mock": func() subject {
			bt := maxWait
			if bt == 0 {
				bt = time.Hour
			}
			m := &Mock{BlockTime: bt}
			m.SetThrottled(false)
			return subject{t: m, throttle: m.SetThrottled}
		},
	}
}

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

func TestContract(t *testing.T) {
	for name, mk := range subjects(t, 0) {
		t.Run(name, func(t *testing.T) {
			t.Run("BlockWait returns at once when clear", func(t *testing.T) {
				s := mk()
				require.NoError(t, s.t.Open(context.Background()))
				defer s.t.Close()
				requireReturns(t, waiters(context.Background(), s.t, 10), time.Second, "clear")
			})
			t.Run("clear wakes every waiter", func(t *testing.T) {
				s := mk()
				require.NoError(t, s.t.Open(context.Background()))
				defer s.t.Close()
				s.throttle(true)
				require.True(t, s.t.IsThrottled())
				done := waiters(context.Background(), s.t, 100)
				requireBlocked(t, done, "throttled")
				s.throttle(false)
				requireReturns(t, done, time.Second, "cleared")
			})
			t.Run("Close releases waiters and IsThrottled", func(t *testing.T) {
				s := mk()
				require.NoError(t, s.t.Open(context.Background()))
				s.throttle(true)
				done := waiters(context.Background(), s.t, 100)
				requireBlocked(t, done, "throttled")
				require.NoError(t, s.t.Close())
				requireReturns(t, done, time.Second, "Close")
				assert.False(t, s.t.IsThrottled())
				s.throttle(true) // a late update after Close changes nothing
				assert.False(t, s.t.IsThrottled())
				require.NoError(t, s.t.Close())
			})
			t.Run("caller context ends the wait", func(t *testing.T) {
				s := mk()
				require.NoError(t, s.t.Open(context.Background()))
				defer s.t.Close()
				s.throttle(true)
				ctx, cancel := context.WithCancel(context.Background())
				done := waiters(ctx, s.t, 10)
				requireBlocked(t, done, "throttled")
				cancel()
				requireReturns(t, done, time.Second, "caller cancel")
				assert.True(t, s.t.IsThrottled(), "a caller giving up changes nothing")
			})
		})
	}
}

func TestMaxWaitCapsBlockWait(t *testing.T) {
	for name, mk := range subjects(t, 10*time.Millisecond) {
		t.Run(name, func(t *testing.T) {
			s := mk()
			require.NoError(t, s.t.Open(context.Background()))
			defer s.t.Close()
			s.throttle(true)
			requireReturns(t, waiters(context.Background(), s.t, 10), 2*time.Second, "max wait")
			assert.True(t, s.t.IsThrottled())
		})
	}
}

// TestOpenContextCancelReleases: the end of Open's context releases a
// throttler as Close does (the Mock has no monitor and ignores the context).
func TestOpenContextCancelReleases(t *testing.T) {
	for name, mk := range subjects(t, 0) {
		if name == "Mock" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			s := mk()
			ctx, cancel := context.WithCancel(context.Background())
			require.NoError(t, s.t.Open(ctx))
			s.throttle(true)
			require.True(t, s.t.IsThrottled())
			done := waiters(context.Background(), s.t, 100)
			requireBlocked(t, done, "throttled")
			cancel()
			requireReturns(t, done, time.Second, "Open's context cancelled")
			assert.False(t, s.t.IsThrottled())
			assert.ErrorIs(t, s.t.UpdateLag(context.Background()), ErrClosed)
			require.NoError(t, s.t.Close())
		})
	}
}

// TestNoSpinAfterCancel is gh-ost issue #1670 made impossible: a loop that
// asks only IsThrottled, with no context of its own, ends once Open's context
// is cancelled, even while the source still reports lag.
func TestNoSpinAfterCancel(t *testing.T) {
	r, _ := newFake(t, time.Second, lagOf(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, r.Open(ctx))
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for r.IsThrottled() {
			time.Sleep(time.Millisecond) // the shape of gh-ost's throttle loop
		}
	}()
	requireBlocked(t, loopDone, "spinning while throttled")
	cancel()
	requireReturns(t, loopDone, time.Second, "IsThrottled loop after cancel")
	require.NoError(t, r.Close())
}

func TestNoSpinAfterClose(t *testing.T) {
	r, _ := newFake(t, time.Second, lagOf(time.Minute))
	require.NoError(t, r.Open(context.Background()))
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for r.IsThrottled() { // a busy loop, not even a sleep
		}
	}()
	require.NoError(t, r.Close())
	requireReturns(t, loopDone, time.Second, "IsThrottled busy loop after Close")
}

// TestPropertyNoWaiterLeftBehind interleaves state changes, waiter arrivals,
// caller cancellations, Open-context cancellation and Close in random orders
// and checks that every waiter returns once the throttler stops; goleak in
// TestMain then checks that no goroutine outlived its test.
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
	r, src := newFake(t, time.Second, Measurement{})
	require.NoError(t, r.Open(context.Background()))
	require.Eventually(t, func() bool { return src.calls.Load() > 3 }, 2*time.Second, time.Millisecond)
	require.NoError(t, r.Close())
	after := src.calls.Load()
	time.Sleep(20 * time.Millisecond) // twenty poll intervals
	assert.Equal(t, after, src.calls.Load(), "a poll after Close returned")
	assert.Zero(t, src.inFlight.Load())
}

// TestNotThrottledAsSoonAsCancelReturns: the release on cancellation is not
// left to a goroutine switch; IsThrottled is false, and the reason empty, the
// moment cancel returns, for every throttler bound to Open's context.
func TestNotThrottledAsSoonAsCancelReturns(t *testing.T) {
	throttled := map[string]func() Throttler{
		"Replication": func() Throttler {
			r, _ := newFake(t, time.Second, lagOf(time.Minute), WithInterval(time.Hour))
			return r
		},
		"Multi": func() Throttler {
			r, _ := newFake(t, time.Second, lagOf(time.Minute), WithInterval(time.Hour))
			return NewMulti(Noop{}, r)
		},
		"Pause": func() Throttler {
			p, err := NewPause(PauseConfig{}, nil)
			require.NoError(t, err)
			p.Pause("operator")
			return p
		},
		"Schedule": func() Throttler {
			now := time.Now().UTC()
			s, err := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: []Window{{
				Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"),
			}}}, nil)
			require.NoError(t, err)
			return s
		},
	}
	for name, mk := range throttled {
		t.Run(name, func(t *testing.T) {
			for range 100 {
				th := mk()
				ctx, cancel := context.WithCancel(context.Background())
				require.NoError(t, th.Open(ctx))
				require.True(t, th.IsThrottled())
				cancel()
				require.False(t, th.IsThrottled())
				require.Equal(t, "", th.(Reasoner).ThrottleReason())
				th.BlockWait(context.Background()) // returns at once
				require.NoError(t, th.Close())
			}
		})
	}
}
