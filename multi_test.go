package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
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
	m, srcs := newFakeMulti(t, 2, WithMaxWait(0))
	require.NoError(t, m.Open(context.Background()))
	defer m.Close()
	setLag(t, m, srcs, 0, time.Minute)
	done := make(chan error, 1)
	go func() { done <- m.Wait(context.Background()) }()
	time.Sleep(5 * time.Millisecond)
	setLag(t, m, srcs, 1, time.Minute) // r2 throttles before r1 clears
	setLag(t, m, srcs, 0, 0)
	select {
	case err := <-done:
		t.Fatalf("returned while r2 is throttled: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	setLag(t, m, srcs, 1, 0)
	require.NoError(t, <-done)
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

func TestMultiOpenClosesWhatItOpenedOnFailure(t *testing.T) {
	m, srcs := newFakeMulti(t, 3)
	srcs[1].set(Measurement{}, fmt.Errorf("%w: no rows", ErrNotReplica))
	err := m.Open(context.Background())
	require.ErrorIs(t, err, ErrNotReplica)
	assert.Contains(t, err.Error(), "r2: ")
	for i, c := range m.children {
		if i == 1 {
			continue
		}
		assert.ErrorIs(t, c.Open(context.Background()), ErrClosed, "child %d was opened and must now be closed", i)
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
