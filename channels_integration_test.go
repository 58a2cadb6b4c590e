package throttler_test

// WithChannels on a real multi-source MariaDB replica (the pair's primary on
// the default connection, internal/testenv's second source on "east"), and
// WithLagBeyondDelay and Discovery on a real replica with MASTER_DELAY.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// TestIntegrationChannelsRetiredSource: "east" is stopped on purpose (a
// source being retired). By default it throttles for ever; named out
// (Ignore) or the others named in (Only), it does not, and it stays
// visible in the measurement. A name the replica lacks fails Open; a
// counted channel that is removed later reads as not flowing.
func TestIntegrationChannelsRetiredSource(t *testing.T) {
	p := testenv.Require(t)
	src, err := p.SecondSource(ctxTimeout(t, 30*time.Second))
	require.NoError(t, err)
	writer(t, p)
	stopEast, err := src.StartWriter(context.Background(), 100*time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(stopEast)
	require.NoError(t, p.Replica().AddChannel(ctxTimeout(t, 10*time.Second), eastChannel, src))
	t.Cleanup(func() { assert.NoError(t, p.Replica().RemoveChannel(ctxTimeout(t, 10*time.Second), eastChannel)) })

	// Retire east: both of its threads stopped.
	east := p.Replica().Channel(eastChannel)
	require.NoError(t, east.StopIOThread(ctxTimeout(t, 10*time.Second)))
	require.NoError(t, east.StopSQLThread(ctxTimeout(t, 10*time.Second)))

	def, _ := openReplication(t, p, 2*time.Second)
	eventually(t, "the default throttles on the stopped channel", 5*time.Second, def.IsThrottled)
	assert.Equal(t, `replication not flowing (channel "east"): receiver (IO) thread not running; applier (SQL) thread not running`, def.ThrottleReason())

	ignore, _ := openReplication(t, p, 2*time.Second, throttler.WithChannels(throttler.Channels{Ignore: []string{"EAST"}}))
	only, _ := openReplication(t, p, 2*time.Second, throttler.WithChannels(throttler.Channels{Only: []string{throttler.DefaultChannel}}))
	onlyEast, _ := openReplication(t, p, 2*time.Second, throttler.WithChannels(throttler.Channels{Only: []string{eastChannel}}))
	assert.Equal(t, `replica status (ignoring channels "east")`, ignore.Source().String())
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		require.False(t, ignore.IsThrottled(), ignore.ThrottleReason())
		require.False(t, only.IsThrottled(), only.ThrottleReason())
		require.True(t, onlyEast.IsThrottled())
	}
	m, _, ok := ignore.LastMeasurement()
	require.True(t, ok)
	require.Len(t, m.Channels, 2)
	assert.Equal(t, throttler.ChannelLag{Name: eastChannel, NotFlowing: "receiver (IO) thread not running; applier (SQL) thread not running", Ignored: true}, m.Channels[1])
	assert.Equal(t, "", m.Channels[0].Name)
	assert.False(t, m.Channels[0].Ignored)
	t.Logf("ignoring east: %+v", m.Channels)

	// A name the replica lacks fails Open, naming what it has.
	db := openDB(t, p.Replica().DSN())
	for _, c := range []throttler.Channels{{Only: []string{"west"}}, {Ignore: []string{"west"}}} {
		r, err := throttler.NewReplicationThrottler(db, 2*time.Second, nil, throttler.WithChannels(c))
		require.NoError(t, err)
		err = r.Open(context.Background())
		assert.ErrorIs(t, err, throttler.ErrInvalidConfig)
		assert.ErrorContains(t, err, `channel "west"`)
		assert.ErrorContains(t, err, `the replica has channels (default), "east"`)
		t.Logf("%+v: %v", c, err)
	}

	// The retired channel is removed: Ignore and the default are clear, a
	// throttler that counted only east fails closed.
	require.NoError(t, p.Replica().RemoveChannel(ctxTimeout(t, 10*time.Second), eastChannel))
	eventually(t, "the default clears once east is removed", 5*time.Second, func() bool { return !def.IsThrottled() })
	assert.False(t, ignore.IsThrottled(), ignore.ThrottleReason())
	eventually(t, "Only east reads east's removal", 5*time.Second, func() bool {
		return onlyEast.ThrottleReason() == `replication not flowing (channel "east"): channel "east" not found on the replica (it has channels (default))`
	})
}

// stallApplier holds LOCK TABLES ... READ on the heartbeat table on replica
// n, which stalls its applier while both threads keep running (the writer
// updates that table), until unlock, which the test's end calls too.
func stallApplier(t *testing.T, n *testenv.Node) (unlock func()) {
	t.Helper()
	conn, err := openDB(t, n.AdminDSN()).Conn(context.Background())
	require.NoError(t, err)
	_, err = conn.ExecContext(ctxTimeout(t, 5*time.Second), "LOCK TABLES "+testenv.HeartbeatTable+" READ")
	require.NoError(t, err)
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_, err := conn.ExecContext(ctxTimeout(t, 5*time.Second), "UNLOCK TABLES")
			assert.NoError(t, err)
			assert.NoError(t, conn.Close())
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// setDelay sets MASTER_DELAY on the replica's default channel, and puts it
// back to 0 when the test ends (Require's reset would too).
func setDelay(t *testing.T, n *testenv.Node, d time.Duration) {
	t.Helper()
	require.NoError(t, n.Replication().SetDelay(ctxTimeout(t, 10*time.Second), d))
	t.Cleanup(func() { assert.NoError(t, n.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0)) })
}

// TestIntegrationLagBeyondDelay: with MASTER_DELAY=3 and the primary writing,
// the replica reads its delay as lag by default and is clear beyond it; a
// stalled applier (a table lock on the replica, threads running) throttles
// on the lag beyond the delay, and clears when the lock goes.
func TestIntegrationLagBeyondDelay(t *testing.T) {
	p := testenv.Require(t)
	writer(t, p)
	setDelay(t, p.Replica(), 3*time.Second)
	st, err := p.Replica().Replication().Status(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	t.Logf("with MASTER_DELAY=3: SQL_Delay %s, Seconds_Behind_Master %s, state %q", st["SQL_Delay"], st["Seconds_Behind_Master"], st["Slave_SQL_Running_State"])

	raw, _ := openReplication(t, p, 2*time.Second)
	beyond, _ := openReplication(t, p, 2*time.Second, throttler.WithLagBeyondDelay())
	eventually(t, "the delay reads as lag by default", 10*time.Second, raw.IsThrottled)
	t.Logf("raw: %s", raw.ThrottleReason())
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		require.False(t, beyond.IsThrottled(), beyond.ThrottleReason())
	}
	m, _, _ := beyond.LastMeasurement()
	require.Len(t, m.Channels, 1)
	assert.Equal(t, 3*time.Second, m.Channels[0].Delay)
	assert.Less(t, m.Lag, 2*time.Second)
	assert.False(t, m.Backlog.Known, "the delayed channel's backlog is left out")
	t.Logf("beyond the delay: %+v", m)

	// Stall the applier with a lock on the replica: lag beyond the delay.
	unlock := stallApplier(t, p.Replica())
	defer unlock()
	eventually(t, "throttled on the lag beyond the delay", 15*time.Second, beyond.IsThrottled)
	reason := beyond.ThrottleReason()
	t.Logf("stalled: %s", reason)
	assert.Regexp(t, `^replica lag \d+(\.\d)?s >= 2s$`, reason, "a lag, not a stopped thread")
	unlock()
	eventually(t, "clear once the applier resumes", 15*time.Second, func() bool { return !beyond.IsThrottled() })
}

// TestIntegrationDiscoveryDelayedReplica: the second replica gets
// MASTER_DELAY=3. Discovery leaves it out by default (listed, Excluded
// says why) and is clear; with IncludeDelayed it watches it beyond its
// delay, and is clear too, where without the delay-aware reading it would
// throttle.
func TestIntegrationDiscoveryDelayedReplica(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	setDelay(t, second, 3*time.Second)

	d := openDiscovery(t, p, throttler.DiscoveryConfig{}, 2*time.Second)
	assert.Equal(t, sortedAddrs(first, second), d.Replicas())
	assert.Equal(t, map[string]string{second.Addr(): "configured delay 3s (MASTER_DELAY): left out; DiscoveryConfig.IncludeDelayed watches it beyond its delay"}, d.Excluded())

	in := openDiscovery(t, p, throttler.DiscoveryConfig{IncludeDelayed: true}, 2*time.Second)
	assert.Nil(t, in.Excluded())
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		require.False(t, d.IsThrottled(), d.ThrottleReason())
		require.False(t, in.IsThrottled(), in.ThrottleReason())
	}

	// The delay removed: watched again within a listing.
	require.NoError(t, second.Replication().SetDelay(ctxTimeout(t, 10*time.Second), 0))
	eventually(t, "watched again once the delay is removed", 5*time.Second, func() bool { return d.Excluded() == nil })
}
