package doorman_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/doorman"
	"github.com/throttlekit/throttler/doorman/internal/fakedoorman"
)

const addr = "10.0.0.1:15000" // in-memory: never dialled on a real network

func fairShare(capacity float64) fakedoorman.Config {
	return fakedoorman.Config{Capacity: capacity, LeaseLength: 4, RefreshInterval: 1}
}

func TestNewRejectsBadInput(t *testing.T) {
	good := doorman.Config{Addr: "h:1", ClientID: "c", ResourceID: "r", Wants: 10}
	for _, tc := range []struct {
		name string
		edit func(*doorman.Config)
		opts []doorman.Option
		want string
	}{
		{"no address", func(c *doorman.Config) { c.Addr = "" }, nil, "Addr is empty"},
		{"no client id", func(c *doorman.Config) { c.ClientID = "" }, nil, "ClientID is empty"},
		{"no resource id", func(c *doorman.Config) { c.ResourceID = "" }, nil, "ResourceID is empty"},
		{"negative wants", func(c *doorman.Config) { c.Wants = -100 }, nil, "Wants -100 must be a positive finite number"},
		{"NaN wants", func(c *doorman.Config) { c.Wants = math.NaN() }, nil, "Wants NaN"},
		{"zero wants", func(c *doorman.Config) { c.Wants = 0 }, nil, "Wants 0"},
		{"infinite wants", func(c *doorman.Config) { c.Wants = math.Inf(1) }, nil, "Wants +Inf"},
		{"negative units", func(c *doorman.Config) { c.UnitsPerCall = -1 }, nil, "UnitsPerCall -1"},
		{"NaN units", func(c *doorman.Config) { c.UnitsPerCall = math.NaN() }, nil, "UnitsPerCall NaN"},
		{"negative timeout", func(c *doorman.Config) { c.RPCTimeout = -time.Second }, nil, "RPCTimeout -1s"},
		{"long timeout", func(c *doorman.Config) { c.RPCTimeout = time.Hour }, nil, "RPCTimeout 1h0m0s"},
		{"negative max wait", nil, []doorman.Option{doorman.WithMaxWait(-time.Second)}, "WithMaxWait(-1s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			d, err := doorman.New(cfg, nil, tc.opts...)
			assert.Nil(t, d)
			assert.ErrorIs(t, err, throttler.ErrInvalidConfig)
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, 1, strings.Count(err.Error(), throttler.ErrInvalidConfig.Error()))
		})
	}
	d, err := doorman.New(good, nil)
	require.NoError(t, err)
	assert.ErrorIs(t, d.SetWants(math.NaN()), throttler.ErrInvalidConfig)
	assert.ErrorIs(t, d.SetWants(-1), throttler.ErrInvalidConfig)
	assert.NoError(t, d.SetWants(5))
	assert.Equal(t, 5.0, d.Grant().Wants)
}

// A single client gets what it wants of the capacity, and its callers are
// paced to it.
func TestSingleClientPacesToItsShare(t *testing.T) {
	for _, tc := range []struct {
		name            string
		capacity, wants float64
		units           float64
		rate            float64 // calls per second
	}{
		{"all it wants", 1000, 100, 0, 100},
		{"the whole capacity", 50, 100, 0, 50},
		{"units per call", 1000, 600, 20, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newNetwork()
				n.serve(t, addr, fakedoorman.New(fairShare(tc.capacity)))
				cfg := n.config(addr, "a", tc.wants)
				cfg.UnitsPerCall = tc.units
				d := open(t, cfg)
				g := d.Grant()
				assert.Equal(t, min(tc.capacity, tc.wants), g.Capacity)
				assert.Equal(t, tc.rate, g.Rate)
				assert.Equal(t, time.Second, g.Refresh)
				assert.False(t, d.IsThrottled())

				// 10s spans several refreshes (and lease renewals).
				calls := callers(d, 16, 10*time.Second)
				assert.InEpsilon(t, tc.rate*10, float64(calls), 0.05, "calls in 10s at %v/s", tc.rate)
				assert.GreaterOrEqual(t, d.Stats().Measurements, int64(10))
			})
		})
	}
}

// Two clients split the capacity fairly: the newcomer gets what is left at
// once, and the two converge to half each within a couple of refreshes.
func TestTwoClientsSplitTheCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		srv := fakedoorman.New(fairShare(1000))
		n.serve(t, addr, srv)
		a := open(t, n.config(addr, "a", 800))
		assert.Equal(t, 800.0, a.Grant().Capacity)
		b := open(t, n.config(addr, "b", 800))
		assert.Equal(t, 200.0, b.Grant().Capacity, "the newcomer gets what is unassigned")

		time.Sleep(3 * time.Second)
		assert.Equal(t, 500.0, a.Grant().Capacity)
		assert.Equal(t, 500.0, b.Grant().Capacity)
		assert.Equal(t, map[string]float64{"a": 500, "b": 500}, srv.Grants("rows"))

		ca, cb := make(chan int64), make(chan int64)
		go func() { ca <- callers(a, 8, 4*time.Second) }()
		go func() { cb <- callers(b, 8, 4*time.Second) }()
		assert.InEpsilon(t, 2000, float64(<-ca), 0.05)
		assert.InEpsilon(t, 2000, float64(<-cb), 0.05)

		// a leaves: b gets the whole of what it wants at its next refreshes.
		require.NoError(t, a.Close())
		time.Sleep(3 * time.Second)
		assert.Equal(t, 800.0, b.Grant().Capacity)
	})
}

// A server that is killed, or freezes, past the lease: the client keeps
// its lease while it lasts, fails closed within a refresh interval of the
// expiry, says why, and recovers by itself when the server answers again.
func TestServerGoneFailsClosedAndRecovers(t *testing.T) {
	for _, how := range []string{"killed", "frozen"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newNetwork()
				cfg := fairShare(1000)
				cfg.OmitSafeCapacity = true
				srv := fakedoorman.New(cfg)
				kill := n.serve(t, addr, srv)
				d := open(t, n.config(addr, "a", 100))
				expiry := d.Grant().Expiry
				require.False(t, d.IsThrottled())

				if how == "killed" {
					kill()
				} else {
					srv.Freeze()
				}
				time.Sleep(time.Until(expiry) - time.Millisecond)
				assert.False(t, d.IsThrottled(), "the lease stands until it expires")
				assert.Equal(t, 100.0, d.Grant().Rate)

				time.Sleep(time.Second) // a refresh interval past the expiry
				assert.True(t, d.IsThrottled())
				assert.True(t, d.Grant().Expired)
				reason := d.ThrottleReason()
				assert.Contains(t, reason, `lease for resource "rows" expired at`)
				assert.Contains(t, reason, "no safe capacity: failing closed")
				if how == "killed" {
					assert.Contains(t, reason, "connection refused")
				} else {
					assert.Contains(t, reason, "DeadlineExceeded")
				}
				st := d.Stats()
				assert.Equal(t, "lease expired", st.Kind)
				assert.Positive(t, st.Errors)
				waitErr := make(chan error, 1)
				go func() { waitErr <- d.Wait(context.Background()) }()

				time.Sleep(5 * time.Second) // gone for longer than a lease
				assert.True(t, d.IsThrottled())
				if how == "killed" {
					n.serve(t, addr, fakedoorman.New(fairShare(1000)))
				} else {
					srv.Thaw()
				}
				time.Sleep(time.Second) // a refresh interval
				assert.False(t, d.IsThrottled(), "recovers when the server answers: %s", d.ThrottleReason())
				assert.Equal(t, 100.0, d.Grant().Capacity)
				assert.False(t, d.Grant().Expired)
				assert.NoError(t, <-waitErr, "a blocked waiter resumes")
				assert.Equal(t, int64(1), d.Stats().Episodes)
			})
		})
	}
}

// On expiry without a refresh the client uses the safe capacity the server
// sent: negative is unlimited, 0 stops, a positive number is paced to.
func TestSafeCapacityFallback(t *testing.T) {
	for _, tc := range []struct {
		name      string
		safe      *float64 // nil: capacity ÷ clients
		ignore    bool
		throttled bool
		rate      float64
	}{
		{"fixed", ptr(20.0), false, false, 20},
		{"dynamic", nil, false, false, 1000},
		{"unlimited", ptr(-1.0), false, false, math.Inf(1)},
		{"stop", ptr(0.0), false, true, 0},
		{"ignored", ptr(20.0), true, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newNetwork()
				cfg := fairShare(1000)
				cfg.SafeCapacity = tc.safe
				kill := n.serve(t, addr, fakedoorman.New(cfg))
				ccfg := n.config(addr, "a", 100)
				ccfg.IgnoreSafeCapacity = tc.ignore
				d := open(t, ccfg)
				kill()
				time.Sleep(time.Until(d.Grant().Expiry) + time.Second)
				g := d.Grant()
				assert.True(t, g.Expired)
				assert.Equal(t, tc.throttled, d.IsThrottled(), d.ThrottleReason())
				assert.Equal(t, tc.rate, g.Rate)
				if tc.throttled {
					assert.Contains(t, d.ThrottleReason(), "expired")
				}
				if tc.rate == 20 {
					assert.InEpsilon(t, 20*5, float64(callers(d, 4, 5*time.Second)), 0.05)
				}
			})
		})
	}
}

// A server that is not the master names the master; the client asks it
// from then on, and releases its capacity there.
func TestRedirectToTheMaster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		const master = "10.0.0.2:15000"
		n.serve(t, addr, fakedoorman.New(fakedoorman.Config{MasterAddress: master}))
		msrv := fakedoorman.New(fairShare(1000))
		n.serve(t, master, msrv)
		d := open(t, n.config(addr, "a", 100))
		assert.Equal(t, 100.0, d.Grant().Capacity)
		assert.Equal(t, master, d.Grant().Server)
		time.Sleep(3*time.Second + time.Millisecond)
		assert.Equal(t, 4, msrv.Requests(), "Open's and one a second")
		require.NoError(t, d.Close())
		assert.Equal(t, []string{"a/rows"}, msrv.Released())
	})
}

func TestNoMasterFailsOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		n.serve(t, addr, fakedoorman.New(fakedoorman.Config{NotMaster: true}))
		d, err := doorman.New(n.config(addr, "a", 100), nil)
		require.NoError(t, err)
		defer d.Close()
		assert.ErrorContains(t, d.Open(t.Context()), "not the master and does not know which is")
		assert.False(t, d.IsThrottled())
	})
}

// A master in learning mode grants 0 to a client that holds nothing, which
// throttles it until learning ends; a client that holds a lease is granted
// it again.
func TestLearningMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		cfg := fairShare(1000)
		cfg.LearningMode = 3 * time.Second
		kill := n.serve(t, addr, fakedoorman.New(cfg))
		d := open(t, n.config(addr, "a", 300))
		assert.True(t, d.IsThrottled())
		assert.Contains(t, d.ThrottleReason(), `capacity 0 for resource "rows"`)
		assert.Equal(t, "no capacity", d.Stats().Kind)
		time.Sleep(4*time.Second + 500*time.Millisecond) // between refreshes
		assert.False(t, d.IsThrottled())
		assert.Equal(t, 300.0, d.Grant().Capacity)

		// The master restarts within the lease: it learns the lease back.
		kill()
		srv := fakedoorman.New(cfg)
		n.serve(t, addr, srv)
		time.Sleep(time.Second) // a refresh
		assert.Equal(t, 1, srv.Requests())
		assert.False(t, d.IsThrottled())
		assert.Equal(t, 300.0, d.Grant().Capacity)
		assert.Equal(t, 300.0, srv.LastRequest("a").GetHas().GetCapacity())
	})
}

// Close releases the capacity: the server forgets the lease at once, and
// the other clients get it at their next refresh.
func TestCloseReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		srv := fakedoorman.New(fairShare(100))
		n.serve(t, addr, srv)
		d := open(t, n.config(addr, "a", 100))
		require.Equal(t, map[string]float64{"a": 100}, srv.Grants("rows"))
		require.NoError(t, d.Close())
		assert.Equal(t, []string{"a/rows"}, srv.Released())
		assert.Empty(t, srv.Grants("rows"))
		requests := srv.Requests()
		time.Sleep(5 * time.Second)
		assert.Equal(t, requests, srv.Requests(), "no request after Close")
		assert.ErrorIs(t, d.Wait(context.Background()), throttler.ErrClosed)
		assert.ErrorIs(t, d.UpdateLag(context.Background()), throttler.ErrClosed)
		assert.True(t, d.Stats().Released)
	})
}

// The end of Open's context releases the capacity too.
func TestOpenContextEndReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNetwork()
		srv := fakedoorman.New(fairShare(100))
		n.serve(t, addr, srv)
		d, err := doorman.New(n.config(addr, "a", 100), nil)
		require.NoError(t, err)
		defer d.Close()
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, d.Open(ctx))
		cancel()
		synctest.Wait()
		assert.Equal(t, []string{"a/rows"}, srv.Released())
		assert.ErrorIs(t, d.Wait(context.Background()), throttler.ErrClosed)
		assert.False(t, d.IsThrottled())
	})
}
