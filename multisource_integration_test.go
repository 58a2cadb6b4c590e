package throttler_test

// Multi-source integration test: the replication throttler on a real MariaDB
// replica that replicates from two independent primaries at once, the pair's
// primary on the default connection ("") and internal/testenv's second source
// (gtid_domain_id 1) on the named connection "east". Faults are made on
// "east" only; the throttler must see them, name the channel, and the default
// connection must keep flowing meanwhile.

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

const eastChannel = "east"

// channelRows is SHOW ALL SLAVES STATUS as the monitoring user sees it:
// Connection_name to "IO/SQL/Seconds_Behind_Master".
func channelRows(t *testing.T, db *sql.DB) map[string][3]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SHOW ALL SLAVES STATUS")
	require.NoError(t, err, "the monitoring user's SLAVE MONITOR covers SHOW ALL SLAVES STATUS")
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	out := map[string][3]string{}
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		r := map[string]string{}
		for i, c := range cols {
			if vals[i].Valid {
				r[c] = vals[i].String
			} else {
				r[c] = "NULL"
			}
		}
		out[r["Connection_name"]] = [3]string{r["Slave_IO_Running"], r["Slave_SQL_Running"], r["Seconds_Behind_Master"]}
	}
	require.NoError(t, rows.Err())
	return out
}

// defaultKeepsFlowing checks that the default connection applies the
// primary's writes while "east" is faulty: caught up within 2s, and its own
// row shows no lag.
func defaultKeepsFlowing(t *testing.T, p *testenv.Pair, monitor *sql.DB) {
	t.Helper()
	start := time.Now()
	require.NoError(t, p.Replication().WaitCaughtUp(ctxTimeout(t, 2*time.Second)), "the default connection keeps flowing")
	def := channelRows(t, monitor)[""]
	assert.Equal(t, [3]string{"Yes", "Yes", "0"}, def, "default connection: IO, SQL, Seconds_Behind_Master")
	t.Logf("default connection caught up with the primary in %v while %q is faulty (%v)",
		time.Since(start).Round(time.Millisecond), eastChannel, def)
}

func TestIntegrationMultiSource(t *testing.T) {
	p := testenv.Require(t)
	testStart := time.Now()

	t0 := time.Now()
	src, err := p.SecondSource(ctxTimeout(t, 30*time.Second))
	require.NoError(t, err)
	t.Logf("second source (server_id %d, gtid_domain_id %d) ready on %s in %v",
		src.ServerID(), src.GTIDDomainID(), src.Addr(), time.Since(t0).Round(time.Millisecond))

	writer(t, p)
	stopEast, err := src.StartWriter(context.Background(), 100*time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(stopEast)

	t0 = time.Now()
	require.NoError(t, p.Replica().AddChannel(ctxTimeout(t, 10*time.Second), eastChannel, src))
	t.Cleanup(func() {
		// Leave the pair with one channel again (Require's Reset would
		// too; this proves the handle does).
		ctx := ctxTimeout(t, 10*time.Second)
		assert.NoError(t, p.Replica().RemoveChannel(ctx, eastChannel))
		rows, err := p.Replica().AllChannelsStatus(ctx)
		if assert.NoError(t, err) && assert.Len(t, rows, 1, "one channel after removal") {
			assert.Empty(t, rows[0]["Connection_name"])
		}
	})
	t.Logf("connection %q added and caught up in %v", eastChannel, time.Since(t0).Round(time.Millisecond))

	r, monitor := openReplication(t, p, 2*time.Second, throttler.WithMaxWait(0))
	assert.Equal(t, "replica status", r.Source().String())

	// Healthy: both channels flow, both sources write.
	rows := channelRows(t, monitor)
	require.Len(t, rows, 2, "SHOW ALL SLAVES STATUS has one row per connection: %v", rows)
	for _, ch := range []string{"", eastChannel} {
		assert.Equal(t, "Yes", rows[ch][0], "channel %q IO", ch)
		assert.Equal(t, "Yes", rows[ch][1], "channel %q SQL", ch)
	}
	t.Logf("SHOW ALL SLAVES STATUS (IO, SQL, Seconds_Behind_Master): %v", rows)
	require.NoError(t, p.Replica().Channel(eastChannel).WaitCaughtUp(ctxTimeout(t, 5*time.Second)))
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		require.False(t, r.IsThrottled(), r.ThrottleReason())
	}
	m, _, ok := r.LastMeasurement()
	require.True(t, ok)
	assert.Empty(t, m.NotFlowing)
	assert.Less(t, m.Lag, 2*time.Second)
	assert.Contains(t, []string{"", eastChannel}, m.Channel, "Channel names one of the two channels")
	t.Logf("healthy: %+v", m)

	// 1. Delay "east" only, beyond the tolerance.
	t0 = time.Now()
	require.NoError(t, p.Replica().Channel(eastChannel).SetDelay(ctxTimeout(t, 10*time.Second), 5*time.Second))
	t.Logf("MASTER_DELAY=5 on %q set in %v", eastChannel, time.Since(t0).Round(time.Millisecond))
	// On lag: SetDelay stops the channel for CHANGE MASTER (a poll may see
	// it not flowing), and the backlog may predict the lag before it shows.
	eventually(t, `throttled by a 5s MASTER_DELAY on "east"`, 10*time.Second, func() bool {
		return r.IsThrottled() && strings.HasPrefix(r.ThrottleReason(), "replica lag ")
	})
	reason := r.ThrottleReason()
	t.Logf("reason: %s", reason)
	assert.Regexp(t, `^replica lag \d+(\.\d)?s >= 2s \(channel "east"\)$`, reason)
	m, _, _ = r.LastMeasurement()
	assert.Equal(t, eastChannel, m.Channel)
	assert.GreaterOrEqual(t, m.Lag, 2*time.Second)
	defaultKeepsFlowing(t, p, monitor)
	assert.True(t, r.IsThrottled(), "still throttled: %q is still delayed", eastChannel)

	t0 = time.Now()
	require.NoError(t, p.Replica().Channel(eastChannel).SetDelay(ctxTimeout(t, 10*time.Second), 0))
	eventually(t, `clear after the delay on "east" is removed`, 10*time.Second, func() bool { return !r.IsThrottled() })
	t.Logf("delay removed to clear: %v", time.Since(t0).Round(time.Millisecond))

	// 2. Stop "east"'s applier only.
	require.NoError(t, p.Replica().Channel(eastChannel).StopSQLThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, `throttled by "east"'s stopped SQL thread`, 5*time.Second, r.IsThrottled)
	assert.Equal(t, `replication not flowing (channel "east"): applier (SQL) thread not running`, r.ThrottleReason())
	m, _, _ = r.LastMeasurement()
	assert.Equal(t, eastChannel, m.Channel)
	defaultKeepsFlowing(t, p, monitor)

	waited := make(chan time.Time, 1)
	go func() {
		r.BlockWait(context.Background())
		waited <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-waited:
		t.Fatal("BlockWait returned while east's SQL thread is stopped: " + r.ThrottleReason())
	default:
	}
	started := time.Now()
	require.NoError(t, p.Replica().Channel(eastChannel).StartSQLThread(ctxTimeout(t, 10*time.Second)))
	select {
	case at := <-waited:
		t.Logf("BlockWait returned %v after START SLAVE 'east' SQL_THREAD", at.Sub(started).Round(time.Millisecond))
		assert.Less(t, at.Sub(started), 3*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("BlockWait still blocked 10s after east's SQL thread restarted: " + r.ThrottleReason())
	}

	// 3. Stop "east"'s receiver only.
	require.NoError(t, p.Replica().Channel(eastChannel).StopIOThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, `throttled by "east"'s stopped IO thread`, 5*time.Second, r.IsThrottled)
	assert.Equal(t, `replication not flowing (channel "east"): receiver (IO) thread not running`, r.ThrottleReason())
	defaultKeepsFlowing(t, p, monitor)
	t0 = time.Now()
	require.NoError(t, p.Replica().Channel(eastChannel).StartIOThread(ctxTimeout(t, 10*time.Second)))
	eventually(t, `clear after START SLAVE 'east' IO_THREAD`, 10*time.Second, func() bool { return !r.IsThrottled() })
	t.Logf("IO thread restart to clear: %v", time.Since(t0).Round(time.Millisecond))

	// 4. Kill the second source itself: east's receiver retries every second
	// (MASTER_CONNECT_RETRY=1) and the source2 writer's pool reconnects by
	// itself after Restart.
	require.NoError(t, src.Kill())
	eventually(t, "throttled by a killed second source", 5*time.Second, r.IsThrottled)
	reason = r.ThrottleReason()
	t.Logf("reason: %s", reason)
	assert.Contains(t, reason, `replication not flowing (channel "east"): receiver (IO) thread Connecting`)
	defaultKeepsFlowing(t, p, monitor)
	t0 = time.Now()
	require.NoError(t, src.Restart(ctxTimeout(t, 30*time.Second)))
	t.Logf("second source restarted in %v", time.Since(t0).Round(time.Millisecond))
	eventually(t, "clear after the second source is back", 10*time.Second, func() bool { return !r.IsThrottled() })
	t.Logf("restart to clear: %v", time.Since(t0).Round(time.Millisecond))

	require.NoError(t, p.Replica().Channel(eastChannel).WaitCaughtUp(ctxTimeout(t, 5*time.Second)),
		"east applied everything source2 wrote during the faults")
	t.Logf("whole multi-source run: %v", time.Since(testStart).Round(time.Millisecond))
}
