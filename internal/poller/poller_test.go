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
	assert.ErrorIs(t, p.Update(context.Background()), ErrNotOpen)
	s.set(Verdict{}, nil)
	require.NoError(t, p.Open(context.Background()), "retry after a failed Open")
	assert.ErrorIs(t, p.Open(context.Background()), ErrAlreadyOpen)
	assert.True(t, p.Close())
	assert.False(t, p.Close())
	assert.ErrorIs(t, p.Open(context.Background()), ErrClosed)
	assert.ErrorIs(t, p.Update(context.Background()), ErrClosed)
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
	s := &script{}
	s.set(Verdict{}, nil)
	p := newPoller(s, time.Hour)
	require.NoError(t, p.Open(context.Background()))
	defer p.Close()
	s.set(Verdict{}, errRead)
	_ = p.Update(context.Background())
	p.ExpireForTest()
	assert.True(t, p.Throttled())
	assert.Contains(t, p.Reason(), "no reading for")
	assert.Contains(t, p.Reason(), "read failed")
}

func TestMonitorPollsAndStops(t *testing.T) {
	s := &script{}
	s.set(Verdict{}, nil)
	p := newPoller(s, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, p.Open(ctx))
	require.Eventually(t, func() bool { return s.n.Load() > 5 }, 2*time.Second, time.Millisecond)
	s.set(Verdict{Throttled: true, Reason: "x"}, nil)
	require.Eventually(t, p.Throttled, 2*time.Second, time.Millisecond)
	cancel()
	require.Eventually(t, func() bool { return !p.Throttled() }, 2*time.Second, time.Millisecond, "released when ctx ends")
	p.Close() // joins the monitor before goleak looks
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
