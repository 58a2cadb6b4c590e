package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/gate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOrder(t *testing.T) {
	var r Runner
	var g gate.Gate
	assert.ErrorIs(t, r.CheckOpen(), ErrNotOpen)
	require.NoError(t, r.Begin())
	assert.ErrorIs(t, r.Begin(), ErrAlreadyOpen, "opening")
	require.NoError(t, r.Abort())
	require.NoError(t, r.Begin(), "a failed Open may be retried")
	ran := make(chan struct{})
	require.NoError(t, r.Start(context.Background(), &g, func() { g.Set(true, "x") }, func(ctx context.Context) {
		close(ran)
		<-ctx.Done()
	}))
	<-ran
	assert.NoError(t, r.CheckOpen())
	assert.ErrorIs(t, r.Begin(), ErrAlreadyOpen)
	assert.True(t, g.Throttled(), "before published the first state")
	assert.False(t, r.Closing())
	assert.True(t, r.Close(&g), "Close waits for the monitor")
	assert.False(t, r.Close(&g), "idempotent")
	assert.True(t, r.Closing())
	assert.False(t, g.Throttled())
	assert.ErrorIs(t, r.CheckOpen(), ErrClosed)
	assert.ErrorIs(t, r.Begin(), ErrClosed)
}

func TestCloseDuringOpen(t *testing.T) {
	var r Runner
	var g gate.Gate
	require.NoError(t, r.Begin())
	assert.True(t, r.Close(&g))
	started := atomic.Bool{}
	assert.ErrorIs(t, r.Start(context.Background(), &g, nil, func(context.Context) { started.Store(true) }), ErrClosed)
	assert.ErrorIs(t, r.Abort(), ErrClosed)
	assert.False(t, started.Load(), "nothing starts after Close")
}

// TestMonitorEndReleases: whatever ends the monitor releases the gate, and
// the end of the context releases it even while the monitor is busy.
func TestMonitorEndReleases(t *testing.T) {
	var r Runner
	var g gate.Gate
	require.NoError(t, r.Begin())
	require.NoError(t, r.Start(context.Background(), &g, func() { g.Set(true, "x") }, func(context.Context) {}))
	require.Eventually(t, g.Released, time.Second, time.Millisecond, "the monitor returned")
	r.Close(&g)

	var r2 Runner
	var g2 gate.Gate
	ctx, cancel := context.WithCancel(context.Background())
	busy := make(chan struct{})
	require.NoError(t, r2.Begin())
	require.NoError(t, r2.Start(ctx, &g2, func() { g2.Set(true, "x") }, func(context.Context) { <-busy }))
	cancel()
	assert.False(t, g2.Throttled(), "released the moment cancel returns, monitor still busy")
	close(busy)
	r2.Close(&g2)
}

func TestContextEndsWithClose(t *testing.T) {
	var r Runner
	var g gate.Gate
	_, err := r.Context()
	assert.ErrorIs(t, err, ErrNotOpen)
	require.NoError(t, r.Begin())
	require.NoError(t, r.Start(context.Background(), &g, nil, func(ctx context.Context) { <-ctx.Done() }))
	ctx, err := r.Context()
	require.NoError(t, err)
	assert.NoError(t, ctx.Err())
	r.Close(&g)
	assert.Error(t, ctx.Err(), "the monitor's context ends on Close")
	_, err = r.Context()
	assert.ErrorIs(t, err, ErrClosed)
}
