package throttler

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMockZeroValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &Mock{}
		assert.True(t, m.IsThrottled(), "the zero value is throttled")
		assert.Equal(t, "mock: throttled", m.ThrottleReason())

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		m.BlockWait(ctx)
		assert.Equal(t, 20*time.Millisecond, time.Since(start), "ctx ends the wait before the default second")
		assert.EqualValues(t, 1, m.BlockWaitCalls())
	})
}

func TestMockDefaultBlockTimeIsOneSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &Mock{}
		start := time.Now()
		m.BlockWait(context.Background())
		assert.GreaterOrEqual(t, time.Since(start), time.Second)
		assert.Less(t, time.Since(start), time.Second+10*time.Millisecond)
	})
}

func TestMockBlockTimeAndSwitching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &Mock{BlockTime: 5 * time.Millisecond, Reason: "replica lag 3s >= 1s"}
		assert.Equal(t, "replica lag 3s >= 1s", m.ThrottleReason())
		start := time.Now()
		assert.ErrorIs(t, m.Wait(context.Background()), ErrMaxWait, "returns after BlockTime")
		assert.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)
		m.SetThrottled(false)
		assert.False(t, m.IsThrottled())
		assert.Equal(t, "", m.ThrottleReason())
		m.BlockWait(context.Background())
		assert.EqualValues(t, 2, m.BlockWaitCalls())
	})
}

func TestMockLifecycleAndErrors(t *testing.T) {
	m := &Mock{}
	m.SetError(errBoom)
	assert.ErrorIs(t, m.Open(context.Background()), errBoom)
	assert.ErrorIs(t, m.UpdateLag(context.Background()), errBoom)
	m.SetError(nil)
	require.NoError(t, m.Open(context.Background()))
	assert.ErrorIs(t, m.Open(context.Background()), ErrAlreadyOpen)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	assert.ErrorIs(t, m.Open(context.Background()), ErrClosed)
	assert.False(t, m.IsThrottled(), "released after Close")
	m.SetThrottled(true)
	assert.False(t, m.IsThrottled(), "SetThrottled after Close has no effect")
}

func TestNoop(t *testing.T) {
	var n Noop
	require.NoError(t, n.Open(context.Background()))
	require.NoError(t, n.Open(context.Background()))
	assert.False(t, n.IsThrottled())
	n.BlockWait(context.Background())
	assert.NoError(t, n.UpdateLag(context.Background()))
	assert.Equal(t, "", n.ThrottleReason())
	assert.Zero(t, n.Lag())
	assert.NoError(t, n.Close())
	assert.NoError(t, n.Close())
}
