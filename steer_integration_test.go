package throttler_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// SetTolerance on a replica that really lags (MASTER_DELAY under a steady
// writer): loosening releases the blocked waiters within milliseconds, with
// no wait for a poll; tightening throttles again at once. The same for the
// Multi of NewReplicasThrottler, watching the same replica.
func TestIntegrationSetTolerance(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	r, _ := openReplication(t, p, 2*time.Second, throttler.WithMaxWait(0))
	m, err := throttler.NewReplicasThrottler(map[string]*sql.DB{"replica": openDB(t, p.Replica().DSN())}, 2*time.Second, nil,
		throttler.WithInterval(itInterval), throttler.WithStaleAfter(itStaleAfter), throttler.WithQueryTimeout(itQueryTimeout), throttler.WithMaxWait(0))
	require.NoError(t, err)
	require.NoError(t, m.Open(context.Background()))
	t.Cleanup(func() { _ = m.Close() })

	require.NoError(t, p.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 5*time.Second))
	t.Cleanup(func() { _ = p.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0) })
	for _, th := range []throttler.Throttler{r, m} {
		eventually(t, "throttled by a 5s MASTER_DELAY", 15*time.Second, func() bool {
			return th.IsThrottled() && strings.Contains(th.(throttler.Reasoner).ThrottleReason(), "replica lag ")
		})
	}
	eventually(t, "the lag settles past 3s", 10*time.Second, func() bool { return r.Lag() >= 3*time.Second })
	t.Logf("lag %v, reason %q, utilization %.2f", r.Lag(), r.ThrottleReason(), r.Utilization())
	assert.GreaterOrEqual(t, r.Utilization(), 1.0)

	for _, c := range []struct {
		name string
		th   interface {
			throttler.Throttler
			throttler.ToleranceSetter
			throttler.Utilizer
		}
	}{{"Replication", r}, {"NewReplicasThrottler", m}} {
		t.Run(c.name, func(t *testing.T) {
			th := c.th
			require.True(t, th.IsThrottled())
			const n = 20
			var wg sync.WaitGroup
			returned := make(chan time.Time, n)
			for range n {
				wg.Go(func() {
					th.BlockWait(context.Background())
					returned <- time.Now()
				})
			}
			time.Sleep(300 * time.Millisecond) // several polls: they stay blocked
			require.Empty(t, returned, "blocked while the lag is past the tolerance")

			loosened := time.Now()
			require.NoError(t, th.SetTolerance(time.Hour))
			assert.False(t, th.IsThrottled(), "judged at once against the last measurement")
			wg.Wait()
			close(returned)
			var slowest time.Duration
			for at := range returned {
				slowest = max(slowest, at.Sub(loosened))
			}
			t.Logf("%d waiters released within %v of SetTolerance(1h)", n, slowest.Round(time.Microsecond))
			assert.Less(t, slowest, 50*time.Millisecond, "released by the change, not by a poll (every %v)", itInterval)
			assert.Less(t, th.Utilization(), 0.01)

			// Polls go on against the new tolerance: still clear.
			time.Sleep(3 * itInterval)
			assert.False(t, th.IsThrottled())

			require.NoError(t, th.SetTolerance(2*time.Second))
			assert.True(t, th.IsThrottled(), "tightened: throttled at once")
			assert.Contains(t, th.(throttler.Reasoner).ThrottleReason(), ">= 2s")
			assert.GreaterOrEqual(t, th.Utilization(), 1.0)
			time.Sleep(3 * itInterval)
			assert.True(t, th.IsThrottled(), "and the polls agree")

			assert.ErrorIs(t, th.SetTolerance(0), throttler.ErrInvalidConfig)
			assert.True(t, th.IsThrottled(), "a bad value changes nothing")
			st := th.(throttler.StatsReporter).Stats()
			assert.GreaterOrEqual(t, st.Episodes, int64(2), "Stats count across the changes")
			assert.GreaterOrEqual(t, st.Waits, int64(n))
		})
	}
}
