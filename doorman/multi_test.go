package doorman_test

import (
	"context"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/doorman"
	"github.com/throttlekit/throttler/doorman/internal/fakedoorman"
)

// NewMulti(replicas, doorman) stops while a replica lags and paces to the
// fleet's share otherwise, with one BlockWait.
func TestMultiStopsOnLagAndPacesToTheShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		n.serve(t, addr, fakedoorman.New(fairShare(1000)))
		d, err := doorman.New(n.config(addr, "a", 50), nil)
		require.NoError(t, err)
		replicas := &throttler.Mock{} // stands for NewReplicasThrottler's set
		replicas.SetThrottled(false)
		m := throttler.NewMulti(replicas, d)
		require.NoError(t, m.Open(context.Background()))
		defer m.Close()

		assert.InEpsilon(t, 50*4, float64(callers(m, 8, 4*time.Second)), 0.05, "paced to the share")

		replicas.SetThrottled(true)
		assert.Zero(t, callers(m, 8, 4*time.Second), "stopped while a replica lags")
		assert.Contains(t, m.ThrottleReason(), "mock: throttled")

		replicas.SetThrottled(false)
		assert.InEpsilon(t, 50*4, float64(callers(m, 8, 4*time.Second)), 0.05, "paced again")
		require.NoError(t, m.Close())
		assert.False(t, d.IsThrottled())
	})
}

// Over real gRPC on loopback TCP, in real time: the share is paced to
// within 5%, and a server killed past its lease fails the client closed,
// which recovers when the server is back on the same port.
func TestLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("real time: about 8s")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	address := l.Addr().String()
	cfg := fakedoorman.Config{Capacity: 200, LeaseLength: 2, RefreshInterval: 1, OmitSafeCapacity: true}
	serve := func(l net.Listener) (stop func()) {
		g := fakedoorman.New(cfg).GRPC()
		done := make(chan struct{})
		go func() { defer close(done); _ = g.Serve(l) }()
		return func() { g.Stop(); <-done }
	}
	stop := serve(l)
	defer func() { stop() }()

	d := open(t, doorman.Config{Addr: address, ClientID: "a", ResourceID: "rows", Wants: 1000, RPCTimeout: time.Second})
	require.Equal(t, 200.0, d.Grant().Rate)
	const span = 2 * time.Second
	calls := callers(d, 16, span)
	// One call goes at once, then one per 5ms.
	assert.InEpsilon(t, 1+200*span.Seconds(), float64(calls), 0.05)

	stop()
	expiry := d.Grant().Expiry
	deadline := expiry.Add(time.Second + 500*time.Millisecond) // a refresh interval, and the scheduler's slack
	for !d.IsThrottled() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.True(t, d.IsThrottled(), "not failed closed a refresh interval after the lease expired at %v", expiry)
	assert.False(t, time.Now().Before(expiry), "failed closed before the lease expired")
	assert.Contains(t, d.ThrottleReason(), "no safe capacity: failing closed")

	l, err = net.Listen("tcp", address)
	require.NoError(t, err)
	stop = serve(l)
	back := time.Now()
	for d.IsThrottled() && time.Since(back) < 3*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	assert.False(t, d.IsThrottled(), "not recovered: %s", d.ThrottleReason())
	assert.Less(t, time.Since(back), 1500*time.Millisecond, "recovered within about a refresh interval")
}

// A Multi follows its Doorman child as it changes (throttler.StateWatcher):
// the share going to 0 at a refresh is a Change of the Multi's at once, with
// no wait or Stats call to look.
func TestMultiFollowsTheShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		srv := fakedoorman.New(fairShare(1000))
		n.serve(t, addr, srv)
		d, err := doorman.New(n.config(addr, "a", 50), nil)
		require.NoError(t, err)
		m := throttler.NewMulti(d)
		var changes []throttler.Change
		m.SetOnChange("fleet", func(c throttler.Change) { changes = append(changes, c) })
		require.NoError(t, m.Open(context.Background()))
		defer m.Close()

		srv.SetConfig(fairShare(0))
		time.Sleep(2 * time.Second) // a refresh interval and then some
		synctest.Wait()
		require.True(t, d.IsThrottled())
		require.Len(t, changes, 1, "the Multi saw the child change by itself")
		assert.True(t, changes[0].Throttled)
		assert.Equal(t, "fleet", changes[0].Throttler)
		assert.Contains(t, changes[0].Reason, "capacity 0")
	})
}

// A view of the Multi (Only) that holds the Doorman child paces with it, as
// the Multi does.
func TestMultiViewPacesToTheShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		n.serve(t, addr, fakedoorman.New(fairShare(1000)))
		d, err := doorman.New(n.config(addr, "a", 50), nil)
		require.NoError(t, err)
		replicas := &throttler.Mock{}
		replicas.SetThrottled(false)
		m := throttler.NewMulti(replicas, d)
		require.NoError(t, m.Open(context.Background()))
		defer m.Close()
		v, err := m.Only(d.String())
		require.NoError(t, err)
		require.NoError(t, v.Open(context.Background()))
		defer v.Close()

		ctx := context.Background()
		require.NoError(t, v.Wait(ctx), "the first call goes at once")
		done := make(chan error, 1)
		go func() { done <- v.Wait(ctx) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("the second call was not paced")
		default:
		}
		time.Sleep(20 * time.Millisecond) // one call's slot at 50/s
		synctest.Wait()
		assert.NoError(t, <-done)
	})
}
