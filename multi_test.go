package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newFakeMulti returns a Multi of n fake replication throttlers named r1..rn.
func newFakeMulti(t testing.TB, n int, opts ...Option) (*Multi, []*fakeSource) {
	var ts []Throttler
	var srcs []*fakeSource
	for i := range n {
		r, src := newFake(t, time.Second, Measurement{}, append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour), WithName(fmt.Sprintf("r%d", i+1))}, opts...)...)
		ts = append(ts, r)
		srcs = append(srcs, src)
	}
	return NewMulti(ts...), srcs
}

func setLag(t testing.TB, m *Multi, srcs []*fakeSource, i int, d time.Duration) {
	t.Helper()
	srcs[i].set(lagOf(d), nil)
	require.NoError(t, m.children[i].UpdateLag(context.Background()))
}

func TestMultiThrottledWhileAnyChildIs(t *testing.T) {
	m, srcs := newFakeMulti(t, 3)
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	assert.False(t, m.IsThrottled())
	assert.Equal(t, "", m.ThrottleReason())

	setLag(t, m, srcs, 1, 5*time.Second)
	setLag(t, m, srcs, 2, 7*time.Second)
	assert.True(t, m.IsThrottled())
	assert.Equal(t, "r2: replica lag 5s >= 1s; r3: replica lag 7s >= 1s", m.ThrottleReason())
	assert.Equal(t, 7*time.Second, m.Lag(), "the worst child's lag")
}

// TestMultiWaitIsBoundedByTheSlowest: two throttled children clear at
// different times; the wait ends when the later one clears, not before and
// not after the sum.
func TestMultiWaitIsBoundedByTheSlowest(t *testing.T) {
	m, srcs := newFakeMulti(t, 2, WithMaxWait(0))
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	setLag(t, m, srcs, 0, time.Minute)
	setLag(t, m, srcs, 1, time.Minute)

	done := make(chan error, 1)
	go func() { done <- m.Wait(context.Background()) }()
	setLag(t, m, srcs, 0, 0)
	select {
	case err := <-done:
		t.Fatalf("returned while r2 is still throttled: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	setLag(t, m, srcs, 1, 0)
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("still blocked after every child cleared")
	}
}

// TestMultiWaitFollowsANewlyThrottledChild: a child that becomes throttled
// while the Multi waits on another is waited on too.
func TestMultiWaitFollowsANewlyThrottledChild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, srcs := newFakeMulti(t, 2, WithMaxWait(0))
		require.NoError(t, m.Open(context.Background()))
		defer m.Close()
		setLag(t, m, srcs, 0, time.Minute)
		done := make(chan error, 1)
		go func() { done <- m.Wait(context.Background()) }()
		synctest.Wait()                    // the Multi waits on r1
		setLag(t, m, srcs, 1, time.Minute) // r2 throttles before r1 clears
		setLag(t, m, srcs, 0, 0)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("returned while r2 is throttled: %v", err)
		default:
		}
		setLag(t, m, srcs, 1, 0)
		require.NoError(t, <-done)
	})
}

func TestMultiWaitReportsAChildsCap(t *testing.T) {
	m, srcs := newFakeMulti(t, 2, WithMaxWait(5*time.Millisecond))
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	setLag(t, m, srcs, 1, time.Minute)
	err := m.Wait(context.Background())
	require.ErrorIs(t, err, ErrMaxWait)
	assert.Contains(t, err.Error(), "r2: replica lag 1m0s >= 1s")
}

// TestMultiOpenIsRetryableAfterAFailure: a failed Open closes nothing (a
// closed child cannot reopen); the children that opened stay open, and a
// retry opens only the one that failed.
func TestMultiOpenIsRetryableAfterAFailure(t *testing.T) {
	m, srcs := newFakeMulti(t, 3)
	defer m.Close()
	srcs[1].set(Measurement{}, fmt.Errorf("%w: no rows", ErrNotReplica))
	err := m.Open(context.Background())
	require.ErrorIs(t, err, ErrNotReplica)
	assert.Equal(t, "throttler: open: r2: fake: server is not a replica: no rows", err.Error(), "names the child, prefixed once")
	assert.False(t, m.IsThrottled(), "not throttled after a failed Open")
	assert.ErrorIs(t, m.UpdateLag(context.Background()), ErrNotOpen, "r2 is not open")

	srcs[1].set(Measurement{}, nil)
	before := []int64{srcs[0].calls.Load(), srcs[1].calls.Load(), srcs[2].calls.Load()}
	require.NoError(t, m.Open(context.Background()), "a failed Open may be retried")
	assert.Equal(t, []int64{before[0], before[1] + 1, before[2]}, []int64{srcs[0].calls.Load(), srcs[1].calls.Load(), srcs[2].calls.Load()}, "the retry opens only r2")
	setLag(t, m, srcs, 0, time.Minute)
	assert.True(t, m.IsThrottled(), "r1, opened by the failed Open, still watches")
	assert.ErrorIs(t, m.Open(context.Background()), ErrAlreadyOpen)
	require.NoError(t, m.Close())
	assert.ErrorIs(t, m.Open(context.Background()), ErrClosed)
}

// TestMultiOpenRetryAfterItsContextEnded: the children that opened before
// Open's context ended are not bound to it, so a retry with another context
// finds them watching.
func TestMultiOpenRetryAfterItsContextEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, srcs := newFakeMulti(t, 2, WithQueryTimeout(10*time.Second))
		defer m.Close()
		srcs[1].setHang(true)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := m.Open(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, "throttler: open: r2: still opening: context deadline exceeded", err.Error())

		srcs[1].setHang(false)
		// r2's first Open is still in flight: the retry waits for it (it
		// fails at its query timeout), and the next one opens r2 anew.
		err = m.Open(context.Background())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "r2: ")
		require.NoError(t, m.Open(context.Background()))
		setLag(t, m, srcs, 0, time.Minute)
		assert.True(t, m.IsThrottled(), "r1 outlived the first Open's context")
	})
}

// TestMultiCloseEndsAChildOpenInFlight: Close does not wait out a child's
// Open that outlived the Multi's.
func TestMultiCloseEndsAChildOpenInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, srcs := newFakeMulti(t, 2, WithQueryTimeout(time.Hour))
		srcs[0].setHang(true)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		require.ErrorIs(t, m.Open(ctx), context.DeadlineExceeded)
		start := time.Now()
		require.NoError(t, m.Close())
		assert.Zero(t, time.Since(start), "Close ends the child's Open at once")
	})
}

// TestMultiNamesUnnamedChildrenByPosition: children sharing a name (unnamed
// replicas are all "replication") are told apart by their position.
func TestMultiNamesUnnamedChildrenByPosition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ts []Throttler
		var hung *fakeSource
		for i := range 3 {
			r, src := newFake(t, time.Second, Measurement{}, WithInterval(time.Hour), WithQueryTimeout(10*time.Second))
			if i == 1 {
				src.setHang(true)
				hung = src
			}
			ts = append(ts, r)
		}
		m := NewMulti(append(ts, Noop{})...)
		defer m.Close()
		assert.Equal(t, []string{"replication #1", "replication #2", "replication #3", "throttler 4"}, m.names)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := m.Open(ctx)
		require.Error(t, err)
		assert.Equal(t, "throttler: open: replication #2: still opening: context deadline exceeded", err.Error())
		hung.setHang(false)
	})
}

// stubborn is a throttler that stays throttled after Close and the end of
// Open's context, as no throttler of this package does.
type stubborn struct{ *Mock }

func (stubborn) Close() error { return nil }

// TestMultiReleasedWhateverItsChildrenDo: once Open's context ends or Close
// is called, the Multi is not throttled and its waits return, even when a
// child ignores both (Mock ignores Open's context by design).
func TestMultiReleasedWhateverItsChildrenDo(t *testing.T) {
	for _, how := range []string{"Open's context ends", "Close"} {
		t.Run(how, func(t *testing.T) {
			mock := &Mock{BlockTime: time.Hour}
			m := NewMulti(stubborn{mock}, Noop{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			require.NoError(t, m.Open(ctx))
			require.True(t, m.IsThrottled())
			done := waiters(context.Background(), m, 10)
			requireBlocked(t, done, "throttled")
			if how == "Close" {
				require.NoError(t, m.Close())
			} else {
				cancel()
			}
			assert.False(t, m.IsThrottled(), "released at once")
			assert.Empty(t, m.ThrottleReason())
			requireReturns(t, done, time.Second, how)
			assert.ErrorIs(t, m.Wait(context.Background()), ErrClosed)
			assert.True(t, mock.IsThrottled(), "the child itself is still throttled")
			require.NoError(t, m.Close())
			require.NoError(t, mock.Close())
		})
	}
}

// closeErr is a throttler whose Close fails.
type closeErr struct {
	Noop
	err error
}

func (c closeErr) Close() error { return c.err }

func TestMultiCloseJoinsErrors(t *testing.T) {
	e1, e2 := errors.New("first"), errors.New("second")
	m := NewMulti(closeErr{err: e1}, Noop{}, closeErr{err: e2})
	require.NoError(t, m.Open(context.Background()))
	err := m.Close()
	assert.ErrorIs(t, err, e1)
	assert.ErrorIs(t, err, e2)
	assert.NoError(t, m.Close(), "idempotent")
	assert.ErrorIs(t, m.Open(context.Background()), ErrClosed)
}

func TestMultiRejectsNilChild(t *testing.T) {
	m := NewMulti(Noop{}, nil)
	assert.ErrorIs(t, m.Open(context.Background()), ErrInvalidConfig)
	assert.False(t, m.IsThrottled())
	assert.NoError(t, m.Close())
}

// TestMultiRejectsTypedNilChild: a nil pointer of a throttler type is a nil
// child too, reported as one; no method panics.
func TestMultiRejectsTypedNilChild(t *testing.T) {
	for name, typedNil := range map[string]Throttler{
		"Replication": (*Replication)(nil),
		"HTTP":        (*HTTP)(nil),
		"Mock":        (*Mock)(nil),
		"Multi":       (*Multi)(nil),
		"Discovery":   (*Discovery)(nil),
		"Load":        (*Load)(nil),
	} {
		t.Run(name, func(t *testing.T) {
			mock := &Mock{}
			var m *Multi
			require.NotPanics(t, func() { m = NewMulti(mock, typedNil) })
			assert.NotPanics(t, func() {
				err := m.Open(context.Background())
				assert.ErrorIs(t, err, ErrInvalidConfig)
				assert.ErrorContains(t, err, "throttler 2 is nil")
				assert.ErrorIs(t, m.UpdateLag(context.Background()), ErrInvalidConfig)
				assert.False(t, m.IsThrottled(), "a Multi that cannot open never throttles")
				assert.Empty(t, m.ThrottleReason())
				assert.Zero(t, m.Lag())
				m.BlockWait(context.Background())
				assert.NoError(t, m.Wait(context.Background()))
				assert.Len(t, m.Throttlers(), 2)
				assert.NoError(t, m.Close())
			})
			assert.ErrorIs(t, mock.Open(context.Background()), ErrClosed, "Close closes the valid children")
		})
	}
}

func TestMultiHotPathDoesNotAllocate(t *testing.T) {
	m, _ := newFakeMulti(t, 3)
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = m.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { m.BlockWait(ctx) }))
}

func TestNewReplicasThrottler(t *testing.T) {
	_, err := NewReplicasThrottler(nil, time.Second, nil)
	assert.ErrorIs(t, err, ErrInvalidConfig)

	_, err = NewReplicasThrottler(map[string]*sql.DB{"a": fakeDB, "b": nil}, time.Second, nil)
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, `replica "b"`)

	src := &fakeSource{}
	m, err := NewReplicasThrottler(map[string]*sql.DB{"west": fakeDB, "east": fakeDB}, time.Second, nil,
		WithLagSource(src), WithInterval(time.Hour))
	require.NoError(t, err)
	require.Len(t, m.Throttlers(), 2)
	assert.Equal(t, "east", m.Throttlers()[0].(fmt.Stringer).String(), "sorted by name")
	require.NoError(t, m.Open(context.Background()))
	src.set(lagOf(time.Minute), nil)
	require.NoError(t, m.UpdateLag(context.Background()))
	assert.Equal(t, "east: replica lag 1m0s >= 1s; west: replica lag 1m0s >= 1s", m.ThrottleReason())
	require.NoError(t, m.Close())
}

// TestMultiNamesEveryKindOfChild: each throttler names itself (WithName, or
// its kind) in a Multi's reason.
func TestMultiNamesEveryKindOfChild(t *testing.T) {
	p, err := NewPause(PauseConfig{}, nil)
	require.NoError(t, err)
	named, err := NewPause(PauseConfig{}, nil, WithName("operator"))
	require.NoError(t, err)
	s, err := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "00:00", End: "00:01"}}}, nil)
	require.NoError(t, err)
	h, err := NewHTTP(HTTPConfig{URL: "http://127.0.0.1:1/check"}, nil)
	require.NoError(t, err)
	m := NewMulti(p, named, s, h, Noop{})
	assert.Equal(t, []string{"pause", "operator", "schedule", "HTTP", "throttler 5"}, m.names)
}

// fakePacer is a throttler of another module that paces (Pacer).
type fakePacer struct {
	Mock
	paces int
	err   error
}

func (p *fakePacer) PaceWait(context.Context) error { p.paces++; return p.err }

// TestMultiPacesWithAPacerChild: once no child is throttled, every call
// waits for its turn with a Pacer child, and its error ends the wait.
func TestMultiPacesWithAPacerChild(t *testing.T) {
	lag, p := &Mock{}, &fakePacer{}
	lag.SetThrottled(false)
	p.SetThrottled(false)
	m := NewMulti(lag, p)
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	m.BlockWait(context.Background())
	assert.Equal(t, 1, p.paces)

	lag.SetThrottled(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, m.Wait(ctx), context.DeadlineExceeded)
	assert.Equal(t, 1, p.paces, "no turn is taken while a child is throttled")

	lag.SetThrottled(false)
	p.err = ErrMaxWait
	assert.ErrorIs(t, m.Wait(context.Background()), ErrMaxWait)
	assert.Equal(t, 2, p.paces)
}
