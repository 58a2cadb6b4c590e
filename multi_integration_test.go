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

func TestIntegrationReplicasThrottlerOneLagging(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	m, err := throttler.NewReplicasThrottler(map[string]*sql.DB{
		first.Addr():  openDB(t, first.DSN()),
		second.Addr(): openDB(t, second.DSN()),
	}, time.Second, nil,
		throttler.WithInterval(itInterval),
		throttler.WithStaleAfter(itStaleAfter),
		throttler.WithQueryTimeout(itQueryTimeout))
	require.NoError(t, err)
	require.NoError(t, m.Open(context.Background()))
	t.Cleanup(func() { _ = m.Close() })
	require.False(t, m.IsThrottled(), m.ThrottleReason())

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
