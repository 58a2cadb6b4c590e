package doorman_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/doorman"
	"github.com/throttlekit/throttler/doorman/internal/fakedoorman"
)

// The root package's contract, clause by clause, for a Throttler.
func TestContract(t *testing.T) {
	t.Run("lifecycle errors", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := newNetwork()
			d, err := doorman.New(n.config(addr, "a", 10), nil)
			require.NoError(t, err)
			assert.False(t, d.IsThrottled())
			assert.NoError(t, d.Wait(context.Background()), "no pacing before Open")
			assert.ErrorIs(t, d.UpdateLag(context.Background()), throttler.ErrNotOpen)

			// No server: Open fails, with the address, and may be retried.
			err = d.Open(context.Background())
			assert.ErrorContains(t, err, "doorman: open: GetCapacity from "+addr)
			assert.ErrorContains(t, err, "connection refused")
			assert.False(t, d.IsThrottled())
			n.serve(t, addr, fakedoorman.New(fairShare(10)))
			require.NoError(t, d.Open(context.Background()))
			assert.ErrorIs(t, d.Open(context.Background()), throttler.ErrAlreadyOpen)
			assert.NoError(t, d.UpdateLag(context.Background()))
			st := d.Stats()
			assert.Equal(t, int64(2), st.Measurements)
			assert.Equal(t, int64(1), st.Errors)

			require.NoError(t, d.Close())
			require.NoError(t, d.Close(), "idempotent")
			assert.ErrorIs(t, d.Open(context.Background()), throttler.ErrClosed)
			assert.ErrorIs(t, d.UpdateLag(context.Background()), throttler.ErrClosed)
		})
	})

	t.Run("close releases throttled and paced waiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := newNetwork()
			srv := fakedoorman.New(fairShare(0)) // capacity 0: throttled
			n.serve(t, addr, srv)
			d := open(t, n.config(addr, "a", 10), doorman.WithMaxWait(0))
			require.True(t, d.IsThrottled())
			throttled := make(chan error)
			go func() { throttled <- d.Wait(context.Background()) }()

			// Another client's at a very slow rate: its second caller waits.
			p := open(t, doorman.Config{Addr: addr, ClientID: "b", ResourceID: "slow", Wants: 1,
				UnitsPerCall: 3600, DialOptions: n.dialOptions()}, doorman.WithMaxWait(0))
			srv.SetConfig(fairShare(1))
			require.NoError(t, p.UpdateLag(context.Background()))
			require.NoError(t, p.Wait(context.Background()), "the first call goes at once")
			paced := make(chan error)
			go func() { paced <- p.Wait(context.Background()) }()
			synctest.Wait()

			require.NoError(t, d.Close())
			require.NoError(t, p.Close())
			assert.ErrorIs(t, <-throttled, throttler.ErrClosed)
			assert.ErrorIs(t, <-paced, throttler.ErrClosed)
			assert.False(t, d.IsThrottled())
			d.BlockWait(context.Background()) // returns at once
			assert.True(t, d.Stats().Released)
		})
	})

	t.Run("wait is capped, throttled or paced", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := newNetwork()
			srv := fakedoorman.New(fairShare(0))
			n.serve(t, addr, srv)
			d := open(t, n.config(addr, "a", 1), doorman.WithMaxWait(2*time.Second))
			start := time.Now()
			assert.ErrorIs(t, d.Wait(context.Background()), throttler.ErrMaxWait)
			assert.Equal(t, 2*time.Second, time.Since(start))
			assert.Equal(t, int64(1), d.Stats().MaxWaits)

			srv.SetConfig(fairShare(0.1)) // one call per 10s
			require.NoError(t, d.UpdateLag(context.Background()))
			require.NoError(t, d.Wait(context.Background()))
			start = time.Now()
			err := d.Wait(context.Background())
			assert.ErrorIs(t, err, throttler.ErrMaxWait)
			assert.ErrorContains(t, err, "paced to the granted rate")
			assert.Equal(t, 2*time.Second, time.Since(start))

			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			assert.ErrorIs(t, d.Wait(ctx), context.DeadlineExceeded)
		})
	})

	t.Run("a raised grant wakes the paced waiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := newNetwork()
			srv := fakedoorman.New(fairShare(0.01)) // one call per 100s
			n.serve(t, addr, srv)
			d := open(t, n.config(addr, "a", 100), doorman.WithMaxWait(0))
			require.NoError(t, d.Wait(context.Background()))
			done := make(chan error, 1)
			go func() { done <- d.Wait(context.Background()) }()
			srv.SetConfig(fairShare(100))
			time.Sleep(time.Second + 20*time.Millisecond) // a refresh, and a slot at 100/s
			synctest.Wait()
			select {
			case err := <-done:
				assert.NoError(t, err)
			default:
				t.Fatal("the waiter still waits for its slot at the old rate")
			}
		})
	})

	t.Run("on change", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := newNetwork()
			cfg := fairShare(100)
			cfg.OmitSafeCapacity = true
			kill := n.serve(t, addr, fakedoorman.New(cfg))
			var changes []throttler.Change
			d := open(t, n.config(addr, "a", 10), doorman.WithName("fleet"),
				doorman.WithOnChange(func(c throttler.Change) { changes = append(changes, c) }))
			kill()
			time.Sleep(5 * time.Second)
			n.serve(t, addr, fakedoorman.New(cfg))
			time.Sleep(2 * time.Second)
			require.NoError(t, d.Close())
			synctest.Wait()
			require.Len(t, changes, 3)
			assert.Equal(t, "fleet", changes[0].Throttler)
			assert.Equal(t, "lease expired", changes[0].Kind)
			assert.False(t, changes[1].Throttled)
			assert.Equal(t, "lease expired", changes[1].PreviousKind)
			assert.True(t, changes[2].Released)
		})
	})
}

// IsThrottled and an unpaced BlockWait are a load, with no allocation.
func TestHotPathAllocatesNothing(t *testing.T) {
	n := newNetwork()
	n.serve(t, addr, fakedoorman.New(fairShare(1e9)))
	cfg := n.config(addr, "a", 1e9)
	cfg.UnitsPerCall = 1e-300 // an infinite rate: nothing to pace
	d := open(t, cfg)
	require.Equal(t, float64(0), 1/d.Grant().Rate)
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		if d.IsThrottled() {
			t.Fatal("throttled")
		}
		d.BlockWait(ctx)
	}))
}
