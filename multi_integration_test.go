package throttler_test

// Integration test of NewReplicasThrottler with the real pair's two
// replicas (the second started on demand by internal/testenv).

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
)

// openReplicaSet opens a replica set of dbs with a 1s tolerance, polled at
// the integration tests' pace, and checks it starts clear.
func openReplicaSet(t *testing.T, dbs map[string]*sql.DB, opts ...throttler.Option) *throttler.Multi {
	t.Helper()
	m, err := throttler.NewReplicasThrottler(dbs, time.Second, nil, append([]throttler.Option{
		throttler.WithInterval(itInterval),
		throttler.WithStaleAfter(itStaleAfter),
		throttler.WithQueryTimeout(itQueryTimeout)}, opts...)...)
	require.NoError(t, err)
	require.NoError(t, m.Open(context.Background()))
	t.Cleanup(func() { _ = m.Close() })
	require.False(t, m.IsThrottled(), m.ThrottleReason())
	return m
}

func TestIntegrationReplicasThrottlerOneLagging(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	m := openReplicaSet(t, map[string]*sql.DB{
		first.Addr():  openDB(t, first.DSN()),
		second.Addr(): openDB(t, second.DSN()),
	})

	require.NoError(t, second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 3*time.Second))
	// Its lag, not the reading taken while SetDelay restarted its threads.
	eventually(t, "throttled by the second replica", 15*time.Second, func() bool {
		return strings.HasPrefix(m.ThrottleReason(), second.Addr()+": replica lag ")
	})
	reason := m.ThrottleReason()
	t.Logf("reason: %s", reason)
	assert.True(t, strings.HasPrefix(reason, second.Addr()+": replica lag "), reason)
	assert.NotContains(t, reason, first.Addr())
	for _, c := range m.Throttlers() {
		name := fmt.Sprint(c)
		assert.Equal(t, name == second.Addr(), c.IsThrottled(), "%s", name)
	}

	require.NoError(t, second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0))
	eventually(t, "clear once the delay is removed", 15*time.Second, func() bool { return !m.IsThrottled() })
}

// TestIntegrationReplicasThrottlerToleratesOne: tolerating one replica, the
// set stays clear while one lags and names it in Stats; skipping the other
// for a while, the lagging one throttles the set again.
func TestIntegrationReplicasThrottlerToleratesOne(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	m := openReplicaSet(t, map[string]*sql.DB{
		"first":  openDB(t, first.DSN()),
		"second": openDB(t, second.DSN()),
	}, throttler.WithTolerateMembers(1))

	require.NoError(t, second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 3*time.Second))
	t.Cleanup(func() { _ = second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0) })
	eventually(t, "the second replica lags, tolerated", 15*time.Second, func() bool {
		st := m.Stats()
		return len(st.Tolerated) == 1 && strings.HasPrefix(st.Tolerated[0], "second: replica ")
	})
	assert.False(t, m.IsThrottled(), "one lagging replica of two is tolerated")
	assert.Empty(t, m.ThrottleReason())

	// With the first replica skipped, the set holds one replica that lags
	// and tolerates it still; Unskip, then a lagging first replica too.
	require.NoError(t, m.Skip("first", time.Minute))
	assert.False(t, m.IsThrottled())
	assert.Len(t, m.Stats().Skipped, 1)
	require.NoError(t, m.Unskip("first"))
	require.NoError(t, first.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 3*time.Second))
	t.Cleanup(func() { _ = first.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0) })
	eventually(t, "throttled once both lag", 15*time.Second, m.IsThrottled)
	t.Logf("reason: %s", m.ThrottleReason())
	assert.Contains(t, m.ThrottleReason(), "first: replica ")
	assert.Contains(t, m.ThrottleReason(), "second: replica ")

	require.NoError(t, first.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0))
	eventually(t, "clear once one of them is back", 15*time.Second, func() bool { return !m.IsThrottled() })
	require.NoError(t, second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0))
}
