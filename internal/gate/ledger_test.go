package gate

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler/internal/sentinel"
)

func TestLedgerBooksPeriodsByKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		g.Set(true, "lag", "before Open") // not booked: the accounting has not begun
		time.Sleep(time.Hour)
		g.Account()
		opened := time.Now()
		l := g.Ledger()
		assert.Equal(t, int64(1), l.Episodes, "the state at Open is the first period")
		assert.Equal(t, opened, l.Since)

		time.Sleep(2 * time.Second)
		g.Set(true, "lag", "lag 5s") // a new reason, the same kind: one period
		time.Sleep(time.Second)
		g.Set(true, "stale", "no reading")
		time.Sleep(4 * time.Second)
		g.Set(false, "", "")
		time.Sleep(10 * time.Second)
		g.Set(true, "", "why") // kind defaults to "throttled"
		time.Sleep(time.Second)

		l = g.Ledger()
		assert.True(t, l.Throttled)
		assert.Equal(t, "throttled", l.Kind)
		assert.Equal(t, "why", l.Reason)
		assert.Equal(t, int64(2), l.Episodes)
		assert.Equal(t, 8*time.Second, l.ThrottledTotal, "3s lag, 4s stale, and 1s so far")
		assert.Equal(t, map[string]time.Duration{"lag": 3 * time.Second, "stale": 4 * time.Second, "throttled": time.Second}, l.ByKind)

		g.Release()
		time.Sleep(time.Hour)
		frozen := g.Ledger()
		assert.True(t, frozen.Released)
		assert.False(t, frozen.Throttled)
		assert.Equal(t, 8*time.Second, frozen.ThrottledTotal)
		g.Set(true, "lag", "late")
		assert.Equal(t, frozen, g.Ledger(), "frozen once released")
	})
}

func TestLedgerCountsBlockedWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		g.Account()
		assert.NoError(t, g.Wait(context.Background(), time.Second), "clear: no wait")
		g.Set(true, "lag", "lag")
		assert.ErrorIs(t, g.Wait(context.Background(), time.Second), sentinel.ErrMaxWait)
		go func() {
			time.Sleep(300 * time.Millisecond)
			g.Set(false, "", "")
		}()
		assert.NoError(t, g.Wait(context.Background(), 0))
		l := g.Ledger()
		assert.Equal(t, int64(2), l.Waits)
		assert.Equal(t, int64(1), l.MaxWaits)
		assert.InDelta(t, 1300*time.Millisecond, l.WaitedTotal, float64(capGranule))
	})
}

func TestChangesAreLoggedOncePerKindAndNotifiedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		var mu sync.Mutex
		var got []Change
		hold := make(chan struct{})
		n := NewNotifier(func(c Change) {
			<-hold
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
		})
		var g Gate
		g.Observe(slog.New(slog.NewTextHandler(&buf, nil)), n)
		watched := 0
		g.Watch(func() { watched++ })
		g.Account()
		g.Set(true, "lag", "lag 3s")
		g.Set(true, "lag", "lag 4s")
		time.Sleep(time.Second)
		g.Set(true, "stale", "no reading")
		g.Set(false, "", "")
		g.Release()
		assert.Equal(t, 5, watched, "every change of state, a reason's included")

		out := buf.String()
		assert.Equal(t, 1, strings.Count(out, "throttler: throttled"), out)
		assert.Equal(t, 1, strings.Count(out, "still throttled"), out)
		assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)

		close(hold)
		<-n.Idle()
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, got, 4)
		assert.Equal(t, []string{"lag", "stale", "", ""}, []string{got[0].Kind, got[1].Kind, got[2].Kind, got[3].Kind})
		assert.Equal(t, time.Second, got[1].Prev)
		assert.Equal(t, "lag", got[1].PrevKind)
		assert.True(t, got[3].Released)
	})
}

func TestLedgerCountsAWaitTheReleaseEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		g.Account()
		g.Set(true, "lag", "lag")
		done := make(chan error)
		go func() { done <- g.Wait(context.Background(), 0) }()
		time.Sleep(2 * time.Second)
		g.Release()
		time.Sleep(time.Second) // the waiter's goroutine runs late
		assert.ErrorIs(t, <-done, sentinel.ErrClosed)
		l := g.Ledger()
		assert.Equal(t, int64(1), l.Waits)
		assert.Equal(t, 2*time.Second, l.WaitedTotal, "booked up to the release")
	})
}
