package poller

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/sentinel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errRead = errors.New("read failed")

// script is a probe whose next answer the test sets.
type script struct {
	v   atomic.Pointer[Verdict]
	err atomic.Pointer[error]
	n   atomic.Int64
}

func (s *script) set(v Verdict, err error) {
	s.v.Store(&v)
	s.err.Store(&err)
}

func (s *script) probe(context.Context) (Verdict, error) {
	s.n.Add(1)
	return *s.v.Load(), *s.err.Load()
}

func newPoller(s *script, interval time.Duration) *Poller {
	return New(Config{
		Interval: interval, StaleAfter: 3 * interval, QueryTimeout: interval,
		Logger: slog.New(slog.DiscardHandler), What: "reading",
	}, s.probe)
}

func TestOpenFailsWithTheProbeError(t *testing.T) {
	s := &script{}
	s.set(Verdict{}, errRead)
	p := newPoller(s, time.Hour)
	assert.ErrorIs(t, p.Open(context.Background()), errRead)
	assert.False(t, p.Throttled())
	assert.ErrorIs(t, p.Update(context.Background()), sentinel.ErrNotOpen)
	s.set(Verdict{}, nil)
	require.NoError(t, p.Open(context.Background()), "retry after a failed Open")
	assert.ErrorIs(t, p.Open(context.Background()), sentinel.ErrAlreadyOpen)
	assert.True(t, p.Close())
	assert.False(t, p.Close())
	assert.ErrorIs(t, p.Open(context.Background()), sentinel.ErrClosed)
	assert.ErrorIs(t, p.Update(context.Background()), sentinel.ErrClosed)
}

func TestObservationErrorThrottlesAtOnce(t *testing.T) {
	s := &script{}
	s.set(Verdict{}, nil)
	p := newPoller(s, time.Hour)
	require.NoError(t, p.Open(context.Background()))
	defer p.Close()

	s.set(Verdict{}, errRead) // a failed read: the last verdict stands
	assert.ErrorIs(t, p.Update(context.Background()), errRead)
	assert.False(t, p.Throttled())

	s.set(Verdict{Throttled: true, Kind: "gone", Reason: "source gone"}, errRead)
	assert.ErrorIs(t, p.Update(context.Background()), errRead)
	assert.True(t, p.Throttled(), "an observation with an error is published at once")
	assert.Equal(t, "source gone", p.Reason())
}

func TestStaleReasonNamesWhatAndLastError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{}
		s.set(Verdict{}, nil)
		p := newPoller(s, time.Hour)
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()
		s.set(Verdict{}, errRead)
		_ = p.Update(context.Background())
		time.Sleep(3*time.Hour + time.Second) // past the stale window
		synctest.Wait()
		assert.True(t, p.Throttled())
		assert.Contains(t, p.Reason(), "no reading for")
		assert.Contains(t, p.Reason(), "read failed")
	})
}

func TestMonitorPollsAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{}
		s.set(Verdict{}, nil)
		p := newPoller(s, time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, p.Open(ctx))
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		require.EqualValues(t, 1+5, s.n.Load(), "Open's probe, then one every interval")
		s.set(Verdict{Throttled: true, Reason: "x"}, nil)
		time.Sleep(time.Millisecond)
		synctest.Wait()
		require.True(t, p.Throttled(), "the next probe publishes")
		cancel()
		synctest.Wait()
		require.False(t, p.Throttled(), "released when ctx ends")
		n := s.n.Load()
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		assert.Equal(t, n, s.n.Load(), "no probe after ctx ended")
		p.Close() // joins the monitor
	})
}

// A Fast verdict brings the next probe forward to FastInterval; a failed
// probe never does (a server that does not answer is not asked more often);
// a Fast verdict that UpdateLag took wakes a monitor waiting out a full
// interval.
func TestFastVerdicts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{}
		s.set(Verdict{}, nil)
		p := New(Config{
			Interval: time.Second, FastInterval: 100 * time.Millisecond, StaleAfter: time.Hour, QueryTimeout: time.Second,
			Logger: slog.New(slog.DiscardHandler),
		}, s.probe)
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()
		probes := func(d time.Duration) int64 {
			n := s.n.Load()
			time.Sleep(d)
			return s.n.Load() - n
		}
		time.Sleep(time.Second / 2) // between probes: no window edge falls on one
		assert.Equal(t, int64(3), probes(3*time.Second), "clear: every interval")

		s.set(Verdict{Fast: true}, nil)
		time.Sleep(time.Second + 50*time.Millisecond) // the next probe sees it
		assert.Equal(t, int64(10), probes(time.Second), "fast: every FastInterval")

		s.set(Verdict{Fast: true}, errRead)
		time.Sleep(100 * time.Millisecond)
		assert.Equal(t, int64(3), probes(3*time.Second), "failing: every interval")

		s.set(Verdict{}, nil)
		time.Sleep(time.Second)
		s.set(Verdict{Fast: true}, nil)
		require.NoError(t, p.Update(context.Background()))
		time.Sleep(50 * time.Millisecond)
		assert.Equal(t, int64(10), probes(time.Second), "an update's fast verdict hurries the monitor")
	})
}

// held is a probe that answers Open's call at once and holds every later one
// until release is closed or its context ends, like a query on a frozen
// server.
type held struct {
	n       atomic.Int64
	release chan struct{}
}

func (h *held) probe(ctx context.Context) (Verdict, error) {
	if h.n.Add(1) == 1 {
		return Verdict{}, nil // Open's
	}
	select {
	case <-h.release:
		return Verdict{Throttled: true, Reason: "held"}, nil
	case <-ctx.Done():
		return Verdict{}, ctx.Err()
	}
}

func newHeld(t *testing.T, ctx context.Context) (*Poller, *held) {
	h := &held{release: make(chan struct{})}
	// An hour's interval: the monitor stays out of the way, and a held probe
	// would take an hour of the fake clock to time out.
	p := New(Config{
		Interval: time.Hour, StaleAfter: 3 * time.Hour, QueryTimeout: time.Hour,
		Logger: slog.New(slog.DiscardHandler),
	}, h.probe)
	require.NoError(t, p.Open(ctx))
	return p, h
}

// updates starts n Update calls and returns their errors' channel.
func updates(p *Poller, ctx context.Context, n int) <-chan error {
	errs := make(chan error, n)
	for range n {
		go func() { errs <- p.Update(ctx) }()
	}
	return errs
}

// Callers queued behind a probe in flight return sentinel.ErrClosed the moment the
// Poller stops (Close or the end of Open's context), and none of them
// probes after the stop.
func TestUpdateAfterStopReturnsAtOnce(t *testing.T) {
	for _, stop := range []string{"Close", "Open's context ends"} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				p, h := newHeld(t, ctx)
				defer p.Close()
				errs := updates(p, context.Background(), 8)
				synctest.Wait() // one caller probes, seven wait for it
				require.Equal(t, int64(2), h.n.Load(), "Open's probe and one held probe")

				stopped := time.Now()
				if stop == "Close" {
					p.Close()
				} else {
					cancel()
				}
				for range 8 {
					assert.ErrorIs(t, <-errs, sentinel.ErrClosed)
				}
				// The fake clock moves only if a caller waited on a timer
				// (a probe's timeout).
				assert.Zero(t, time.Since(stopped), "every caller returned at once")
				assert.Equal(t, int64(2), h.n.Load(), "no probe after the stop")
				assert.ErrorIs(t, p.Update(context.Background()), sentinel.ErrClosed)
			})
		})
	}
}

// Callers that come while a probe is in flight share its outcome: one probe
// for all of them, published before any returns.
func TestConcurrentUpdatesShareOneProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, h := newHeld(t, context.Background())
		defer p.Close()
		errs := updates(p, context.Background(), 8)
		synctest.Wait()
		close(h.release)
		for range 8 {
			assert.NoError(t, <-errs)
		}
		assert.Equal(t, int64(2), h.n.Load(), "Open's probe and one shared probe")
		assert.True(t, p.Throttled(), "published before the callers returned")
	})
}

// A probe whose caller leaves is abandoned, not shared: its context's error
// says nothing about the signal. A caller that waited for it probes anew.
func TestAbandonedProbeIsNotShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, h := newHeld(t, context.Background())
		defer p.Close()
		leaving, leave := context.WithCancel(context.Background())
		left := updates(p, leaving, 1)
		synctest.Wait()
		stays := updates(p, context.Background(), 1)
		synctest.Wait()
		leave()
		assert.ErrorIs(t, <-left, context.Canceled)
		synctest.Wait()
		assert.Equal(t, int64(3), h.n.Load(), "the caller that stayed probes anew")
		assert.False(t, p.Throttled(), "the abandoned probe published nothing")
		close(h.release)
		assert.NoError(t, <-stays)
		assert.True(t, p.Throttled())
	})
}

// owner is a probe that stores its reading and judges it against a threshold
// the test changes, as a throttler with a SetTolerance does.
type owner struct {
	reading   atomic.Int64
	stored    atomic.Int64 // the reading the last successful probe stored
	threshold atomic.Int64
	err       atomic.Pointer[error]
	// hold, when set, blocks the probe after it judged, until closed.
	hold atomic.Pointer[chan struct{}]
}

func (o *owner) judge() Verdict {
	if o.stored.Load() >= o.threshold.Load() {
		return Verdict{Throttled: true, Kind: "over", Reason: "over"}
	}
	return Verdict{}
}

func (o *owner) probe(ctx context.Context) (Verdict, error) {
	if e := o.err.Load(); e != nil && *e != nil {
		return Verdict{}, *e
	}
	o.stored.Store(o.reading.Load())
	v := o.judge()
	if h := o.hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			return Verdict{}, ctx.Err()
		}
	}
	return v, nil
}

func (o *owner) fail(err error) { o.err.Store(&err) }

// newOwned returns an unopened Poller on a new owner reading 5 against a
// threshold of 10.
func newOwned() (*Poller, *owner) {
	o := &owner{}
	o.reading.Store(5)
	o.threshold.Store(10)
	p := newPoller(&script{}, time.Hour)
	p.probe = o.probe
	return p, o
}

func TestRejudgeJudgesTheLastReadingAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, o := newOwned()
		p.Rejudge(o.judge) // before Open: nothing to judge
		assert.False(t, p.Throttled())
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()
		require.False(t, p.Throttled())

		o.threshold.Store(5)
		p.Rejudge(o.judge)
		assert.True(t, p.Throttled(), "tightened: throttled at once, no probe")
		o.threshold.Store(6)
		p.Rejudge(o.judge)
		assert.False(t, p.Throttled(), "loosened: clear at once")

		// An observation that came with an error is not a reading.
		o.fail(errRead)
		p.gate.Set(true, "gone", "source gone")
		p.stateMu.Lock()
		p.judgeable = false
		p.stateMu.Unlock()
		p.Rejudge(o.judge)
		assert.Equal(t, "source gone", p.Reason(), "an observation stands")
	})
}

func TestRejudgeLeavesStaleVerdictStanding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, o := newOwned()
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()
		o.fail(errRead)
		time.Sleep(3*time.Hour + time.Second)
		synctest.Wait()
		require.True(t, p.Throttled())
		require.Contains(t, p.Reason(), "no reading for")

		o.threshold.Store(100)
		p.Rejudge(o.judge)
		assert.Contains(t, p.Reason(), "no reading for", "the stale verdict stands")

		o.fail(nil)
		o.threshold.Store(5)
		require.NoError(t, p.Update(context.Background()))
		assert.Equal(t, "over", p.Reason(), "the next reading is judged against the new threshold")
	})
}

// A probe that judged against the old threshold and lands after Rejudge
// does not publish that judgement: its reading is judged again.
func TestRejudgeOutrunsAProbeInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, o := newOwned()
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()

		hold := make(chan struct{})
		o.hold.Store(&hold)
		o.reading.Store(7)
		errs := updates(p, context.Background(), 1)
		synctest.Wait() // the probe stored 7 and judged it clear against 10

		o.threshold.Store(6)
		p.Rejudge(o.judge)
		assert.True(t, p.Throttled(), "the stored reading 7 >= 6 at once")
		close(hold)
		require.NoError(t, <-errs)
		assert.True(t, p.Throttled(), "the probe's clear verdict, judged against 10, is not published")
	})
}

// Kick probes at once, and again when the probe it would share started
// before it.
func TestKickProbesFreshAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, o := newOwned()
		o.reading.Store(0)
		p.Kick() // before Open: nothing
		require.NoError(t, p.Open(context.Background()))
		defer p.Close()
		synctest.Wait()
		require.False(t, p.Throttled())

		o.reading.Store(20)
		p.Kick()
		synctest.Wait()
		assert.True(t, p.Throttled(), "probed at once, no clock advance")

		hold := make(chan struct{})
		o.hold.Store(&hold)
		o.reading.Store(1)
		errs := updates(p, context.Background(), 1)
		synctest.Wait() // an update's probe read 1 and holds
		o.reading.Store(30)
		p.Kick()
		synctest.Wait()
		o.hold.Store(nil)
		close(hold)
		require.NoError(t, <-errs)
		synctest.Wait()
		assert.True(t, p.Throttled(), "the kick probed again after the probe it shared")
		assert.Equal(t, int64(30), o.stored.Load())
	})
}
