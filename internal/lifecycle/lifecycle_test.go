package lifecycle

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/sentinel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOrder(t *testing.T) {
	var g gate.Gate
	r := Runner{Gate: &g}
	assert.ErrorIs(t, r.CheckOpen(), sentinel.ErrNotOpen)
	_, err := r.Begin(context.Background())
	require.NoError(t, err)
	_, err = r.Begin(context.Background())
	assert.ErrorIs(t, err, sentinel.ErrAlreadyOpen, "opening")
	require.NoError(t, r.Abort())
	_, err = r.Begin(context.Background())
	require.NoError(t, err, "a failed Open may be retried")
	ran := make(chan struct{})
	require.NoError(t, r.Start(func() { g.Set(true, "", "x") }, func(ctx context.Context) {
		close(ran)
		<-ctx.Done()
	}))
	<-ran
	assert.NoError(t, r.CheckOpen())
	_, err = r.Begin(context.Background())
	assert.ErrorIs(t, err, sentinel.ErrAlreadyOpen)
	assert.True(t, g.Throttled(), "before published the first state")
	assert.False(t, r.Closing())
	assert.True(t, r.Close(), "Close waits for the monitor")
	assert.False(t, r.Close(), "idempotent")
	assert.True(t, r.Closing())
	assert.False(t, g.Throttled())
	assert.ErrorIs(t, r.CheckOpen(), sentinel.ErrClosed)
	_, err = r.Begin(context.Background())
	assert.ErrorIs(t, err, sentinel.ErrClosed)
}

// TestCloseDuringOpen: Close ends the life an Open measures with, waits for
// that Open to give up, and nothing starts after it.
func TestCloseDuringOpen(t *testing.T) {
	var r Runner
	life, err := r.Begin(context.Background())
	require.NoError(t, err)
	closed := make(chan bool)
	go func() { closed <- r.Close() }()
	<-life.Done() // Open's measurement sees the close
	started := atomic.Bool{}
	assert.ErrorIs(t, r.Start(nil, func(context.Context) { started.Store(true) }), sentinel.ErrClosed)
	assert.True(t, <-closed, "Close returns once Open gave up")
	assert.False(t, started.Load(), "nothing starts after Close")
}

// TestCloseWaitsForAbort: a failed Open that Close overtook reports closed.
func TestCloseWaitsForAbort(t *testing.T) {
	var r Runner
	life, err := r.Begin(context.Background())
	require.NoError(t, err)
	closed := make(chan bool)
	go func() { closed <- r.Close() }()
	<-life.Done()
	assert.ErrorIs(t, r.Abort(), sentinel.ErrClosed)
	assert.True(t, <-closed)
}

// TestMonitorEndReleases: whatever ends the monitor releases the gate, and
// the end of the context releases it even while the monitor is busy.
func TestMonitorEndReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gate.Gate
		r := Runner{Gate: &g}
		_, err := r.Begin(context.Background())
		require.NoError(t, err)
		require.NoError(t, r.Start(func() { g.Set(true, "", "x") }, func(context.Context) {}))
		synctest.Wait()
		assert.True(t, g.Released(), "the monitor returned")
		r.Close()
	})

	var g2 gate.Gate
	r2 := Runner{Gate: &g2}
	ctx, cancel := context.WithCancel(context.Background())
	busy := make(chan struct{})
	_, err := r2.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, r2.Start(func() { g2.Set(true, "", "x") }, func(context.Context) { <-busy }))
	cancel()
	assert.False(t, g2.Throttled(), "released the moment cancel returns, monitor still busy")
	close(busy)
	r2.Close()
}

// TestWithoutMonitor: a Runner that starts no goroutine still releases its
// gate and runs OnEnd when Open's context ends, and logs why, once.
func TestWithoutMonitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gate.Gate
		var buf bytes.Buffer
		ended := atomic.Int32{}
		r := Runner{Gate: &g, Log: slog.New(slog.NewTextHandler(&buf, nil)), OnEnd: func() { ended.Add(1) }}
		ctx, cancel := context.WithCancel(context.Background())
		_, err := r.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, r.Start(func() { g.Set(true, "", "x") }, nil))
		assert.True(t, g.Throttled())
		cancel()
		assert.False(t, g.Throttled(), "released the moment cancel returns")
		synctest.Wait()
		assert.True(t, g.Released())
		assert.Equal(t, int32(1), ended.Load())
		r.Close()
		assert.Equal(t, int32(1), ended.Load(), "OnEnd runs once")
		out := buf.String()
		assert.Equal(t, 1, strings.Count(out, "throttler: stopped: Open's context ended; the throttler is released"), out)
		assert.Equal(t, 1, strings.Count(out, "throttler: closed"), out)
	})
}

// TestCloseLogsNoStop: Close ends the life without a "stopped" line;
// OnlyOpenedLogsClose keeps a never opened Runner quiet.
func TestCloseLogsNoStop(t *testing.T) {
	var buf bytes.Buffer
	r := Runner{Log: slog.New(slog.NewTextHandler(&buf, nil)), Subject: "heartbeat", ClosedArgs: func() []any { return []any{"beats", 3} }}
	_, err := r.Begin(context.Background())
	require.NoError(t, err)
	require.NoError(t, r.Start(nil, func(ctx context.Context) { <-ctx.Done() }))
	r.Close()
	assert.NotContains(t, buf.String(), "stopped")
	assert.Contains(t, buf.String(), `msg="heartbeat: closed" beats=3`)

	buf.Reset()
	quiet := Runner{Log: slog.New(slog.NewTextHandler(&buf, nil)), OnlyOpenedLogsClose: true}
	quiet.Close()
	assert.Empty(t, buf.String())
}

func TestContextEndsWithClose(t *testing.T) {
	var r Runner
	_, err := r.Context()
	assert.ErrorIs(t, err, sentinel.ErrNotOpen)
	_, err = r.Begin(context.Background())
	require.NoError(t, err)
	require.NoError(t, r.Start(nil, func(ctx context.Context) { <-ctx.Done() }))
	ctx, err := r.Context()
	require.NoError(t, err)
	assert.NoError(t, ctx.Err())
	r.Close()
	assert.Error(t, ctx.Err(), "the monitor's context ends on Close")
	_, err = r.Context()
	assert.ErrorIs(t, err, sentinel.ErrClosed)
}
