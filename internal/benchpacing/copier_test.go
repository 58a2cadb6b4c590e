package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPaceHoldsTheCopiersOwnSpeed(t *testing.T) {
	// 100 rows a chunk at 10,000 rows/s: a slot every 10 ms.
	c := &copier{chunk: 100, rate: 10_000, next: time.Now()}
	ctx := context.Background()
	start := time.Now()
	for range 6 {
		require.NoError(t, c.pace(ctx))
	}
	// The first slot is now, the sixth 50 ms later.
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
}

func TestPaceDoesNotBurstAfterAPause(t *testing.T) {
	c := &copier{chunk: 100, rate: 10_000, next: time.Now().Add(-time.Second)}
	require.NoError(t, c.pace(context.Background()))
	// The missed second is not owed: the next slot is one interval from
	// now, not in the past.
	assert.WithinDuration(t, time.Now().Add(10*time.Millisecond), c.next, 5*time.Millisecond)
}

func TestPaceUncappedAndCancelled(t *testing.T) {
	c := &copier{chunk: 100}
	assert.NoError(t, c.pace(context.Background()))

	c = &copier{chunk: 100, rate: 1, next: time.Now().Add(time.Hour)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, c.pace(ctx), context.Canceled)
}
