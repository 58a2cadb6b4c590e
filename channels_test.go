package throttler

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWithChannelsRejectsBadInput(t *testing.T) {
	hb, err := HeartbeatSource(HeartbeatConfig{})
	require.NoError(t, err)
	cases := []struct {
		name string
		opts []Option
		want string
	}{
		{"empty name", []Option{WithChannels(Channels{Only: []string{"east", ""}})}, `WithChannels: Only[1] is empty (name the default channel DefaultChannel, "(default)")`},
		{"blank name", []Option{WithChannels(Channels{Ignore: []string{"  "}})}, "WithChannels: Ignore[0] is empty"},
		{"both lists", []Option{WithChannels(Channels{Only: []string{"east"}, Ignore: []string{"west"}})}, "WithChannels: give Only or Ignore, not both"},
		{"duplicate", []Option{WithChannels(Channels{Ignore: []string{"east", "EAST"}})}, `WithChannels: Ignore[1] "EAST" is listed twice`},
		{"default twice", []Option{WithChannels(Channels{Only: []string{DefaultChannel, "(Default)"}})}, `Only[1] "(Default)" is listed twice`},
		{"too long", []Option{WithChannels(Channels{Only: []string{strings.Repeat("x", 65)}})}, "longer than a channel name can be (64 characters)"},
		{"channels with a heartbeat", []Option{WithLagSource(hb), WithChannels(Channels{Only: []string{"east"}})}, "WithChannels applies to ReplicaStatusSource and PerformanceSchemaSource, not to the lag source heartbeat"},
		{"delay with a heartbeat", []Option{WithLagSource(hb), WithLagBeyondDelay()}, "WithLagBeyondDelay applies to ReplicaStatusSource and PerformanceSchemaSource"},
		{"both with a source of one's own", []Option{WithLagSource(&fakeSource{}), WithLagBeyondDelay(), WithChannels(Channels{Only: []string{"a"}})}, "WithChannels and WithLagBeyondDelay applies to"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewReplicationThrottler(fakeDB, time.Second, nil, c.opts...)
			assert.Nil(t, r)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
			assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()))
		})
	}
	_, err = NewLoad(fakeDB, LoadConfig{Threshold: 10, Critical: 20}, nil, WithChannels(Channels{Only: []string{"east"}}), WithLagBeyondDelay())
	assert.ErrorContains(t, err, "WithChannels does not apply to")
	assert.ErrorContains(t, err, "WithLagBeyondDelay does not apply to")

	// Valid: the source says how it is configured.
	r, err := NewReplicationThrottler(fakeDB, time.Second, nil, WithLagSource(ReplicaStatusSource()),
		WithChannels(Channels{Only: []string{DefaultChannel, "East"}}), WithLagBeyondDelay())
	require.NoError(t, err)
	assert.Equal(t, `replica status (only channels (default), "east"; lag beyond the configured delay)`, r.Source().String())
	r, err = NewReplicationThrottler(fakeDB, time.Second, nil, WithLagSource(PerformanceSchemaSource()), WithChannels(Channels{Ignore: []string{"old"}}))
	require.NoError(t, err)
	assert.Equal(t, `performance_schema (ignoring channels "old")`, r.Source().String())
	r, err = NewReplicationThrottler(fakeDB, time.Second, nil, WithLagSource(ReplicaStatusSource()), WithChannels(Channels{}))
	require.NoError(t, err)
	assert.Equal(t, "replica status", r.Source().String(), "empty Channels: every channel counts")
}

// channelStatus is a replica's SHOW ALL SLAVES STATUS on the fake server:
// a channel per row (Connection_name, IO, SQL, Seconds_Behind_Master,
// SQL_Delay), changed by the test while the throttler runs.
type channelStatus struct {
	mu   sync.Mutex
	rows [][]driver.Value
}

func (c *channelStatus) set(rows ...[]driver.Value) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows = rows
}

func (c *channelStatus) answer(q string, _ []driver.NamedValue) fakedbResult {
	switch q {
	case "SELECT @@version, @@version_comment":
		return fakedbResult{cols: []string{"@@version", "@@version_comment"}, rows: [][]driver.Value{{"10.11.19-MariaDB-0+deb12u1", "Debian 12"}}}
	case "SHOW ALL SLAVES STATUS":
		c.mu.Lock()
		defer c.mu.Unlock()
		return fakedbResult{cols: []string{"Connection_name", "Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master", "SQL_Delay"}, rows: c.rows}
	}
	return fakedbResult{err: errBoom}
}

func channelRow(name, io, sqlThread string, behind any, delay string) []driver.Value {
	return []driver.Value{name, io, sqlThread, behind, delay}
}

// TestChannelsCheckedAtOpen: a name the replica lacks fails Open, naming
// the channels it has; once open, a counted channel that goes away reads as
// not flowing, and an ignored one that goes away changes nothing. The
// source is the one Open chooses (MariaDB: replica status), configured.
func TestChannelsCheckedAtOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		status := &channelStatus{}
		status.set(channelRow("", "Yes", "Yes", "0", "0"), channelRow("east", "No", "Yes", nil, "0"))
		db, _ := newFakedbAnswering(t, status.answer)

		r, err := NewReplicationThrottler(db, time.Second, nil, WithChannels(Channels{Only: []string{"west"}}))
		require.NoError(t, err)
		err = r.Open(context.Background())
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, `WithChannels: channel "west" (WithChannels Only) not found; the replica has channels (default), "east"`)
		assert.False(t, r.IsThrottled())

		r, err = NewReplicationThrottler(db, time.Second, nil, WithChannels(Channels{Ignore: []string{"West"}}))
		require.NoError(t, err)
		assert.ErrorContains(t, r.Open(context.Background()), `channel "west" (WithChannels Ignore) not found`, "a typo in Ignore fails too")

		// By default the stopped channel throttles; ignored, it does not,
		// and it is still in the measurement.
		def, err := NewReplicationThrottler(db, time.Second, nil)
		require.NoError(t, err)
		require.NoError(t, def.Open(context.Background()))
		defer def.Close()
		assert.Equal(t, `replication not flowing (channel "east"): receiver (IO) thread not running`, def.ThrottleReason())

		r, err = NewReplicationThrottler(db, time.Second, nil, WithChannels(Channels{Ignore: []string{"east"}}))
		require.NoError(t, err)
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		assert.Equal(t, `replica status (ignoring channels "east")`, r.Source().String())
		assert.False(t, r.IsThrottled(), r.ThrottleReason())
		m, _, _ := r.LastMeasurement()
		assert.Equal(t, []ChannelLag{{Name: ""}, {Name: "east", NotFlowing: "receiver (IO) thread not running", Ignored: true}}, m.Channels)

		only, err := NewReplicationThrottler(db, time.Second, nil, WithChannels(Channels{Only: []string{DefaultChannel}}))
		require.NoError(t, err)
		require.NoError(t, only.Open(context.Background()))
		defer only.Close()
		assert.False(t, only.IsThrottled(), only.ThrottleReason())

		// The retired channel is removed: nothing changes for Ignore.
		status.set(channelRow("", "Yes", "Yes", "0", "0"))
		time.Sleep(2 * time.Second)
		assert.False(t, r.IsThrottled(), r.ThrottleReason())
		assert.False(t, def.IsThrottled(), def.ThrottleReason())

		// A channel named in Only goes away: not flowing, fail closed.
		status.set(channelRow("east", "Yes", "Yes", "0", "0"))
		time.Sleep(2 * time.Second)
		assert.Equal(t, `replication not flowing: channel (default) not found on the replica (it has channels "east")`, only.ThrottleReason())
	})
}

// TestChannelsOnAurora: WithChannels given, and Open finds Aurora, whose
// source has no channels: Open fails with the configuration error.
func TestChannelsOnAurora(t *testing.T) {
	db, _ := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
		if q == "SELECT @@version, @@version_comment" {
			return fakedbResult{cols: []string{"v", "c"}, rows: [][]driver.Value{{"8.0.mysql_aurora.3.05.2", "Source distribution"}}}
		}
		return fakedbResult{err: errBoom}
	})
	r, err := NewReplicationThrottler(db, time.Second, nil, WithChannels(Channels{Only: []string{"east"}}))
	require.NoError(t, err)
	err = r.Open(context.Background())
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithChannels applies to ReplicaStatusSource and PerformanceSchemaSource, not to the lag source aurora")
}

// TestLagBeyondDelayReplicaStatus: a MASTER_DELAY replica reads its delay
// as lag by default, and only what exceeds it with WithLagBeyondDelay.
func TestLagBeyondDelayReplicaStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		status := &channelStatus{}
		status.set(channelRow("", "Yes", "Yes", "3600", "3600"))
		db, _ := newFakedbAnswering(t, status.answer)
		raw, err := NewReplicationThrottler(db, 10*time.Second, nil)
		require.NoError(t, err)
		require.NoError(t, raw.Open(context.Background()))
		defer raw.Close()
		assert.Equal(t, "replica lag 1h0m0s >= 10s", raw.ThrottleReason())

		r, err := NewReplicationThrottler(db, 10*time.Second, nil, WithLagBeyondDelay())
		require.NoError(t, err)
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		assert.False(t, r.IsThrottled(), r.ThrottleReason())
		m, _, _ := r.LastMeasurement()
		assert.Equal(t, []ChannelLag{{Name: "", Delay: time.Hour}}, m.Channels)

		status.set(channelRow("", "Yes", "Yes", "3615", "3600"))
		time.Sleep(2 * time.Second)
		assert.Equal(t, "replica lag 15s >= 10s", r.ThrottleReason(), "15s beyond the delay")
	})
}

// TestLagBeyondDelayPerformanceSchema: the source reads DESIRED_DELAY (and
// needs its table) only with WithLagBeyondDelay, and subtracts it from the
// applier's latency.
func TestLagBeyondDelayPerformanceSchema(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	unix := func(t time.Time) []byte { // as UNIX_TIMESTAMP(column) sends it
		if t.IsZero() {
			return []byte("0.000000")
		}
		return fmt.Appendf(nil, "%d.%06d", t.Unix(), t.Nanosecond()/1000)
	}
	const gtid = "3e11fa47-71ca-11e1-9e33-c80aa9429562:5"
	var sent []string
	var mu sync.Mutex
	db, _ := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
		mu.Lock()
		sent = append(sent, q)
		mu.Unlock()
		delay := driver.Value(nil)
		if strings.Contains(q, "a.DESIRED_DELAY") {
			delay = int64(60)
		}
		// One channel, one worker applying the last queued transaction,
		// committed 70s ago.
		return fakedbResult{cols: make([]string, 21), rows: [][]driver.Value{{
			now.UnixMicro(), "", "ON", int64(0), "",
			unix(now.Add(-time.Second)), gtid, unix(now.Add(-70 * time.Second)), unix(now.Add(-70 * time.Second)), unix(now.Add(-70 * time.Second)),
			"", unix(time.Time{}),
			int64(1), "ON", int64(0), "", "", unix(time.Time{}), gtid, unix(now.Add(-70 * time.Second)),
			delay,
		}}}
	})
	m, err := PerformanceSchemaSource().Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Equal(t, 70*time.Second, m.Lag)
	assert.Equal(t, []ChannelLag{{Name: "", Lag: 70 * time.Second}}, m.Channels)

	src := PerformanceSchemaSource().(channelSource).configured(channelConfig{beyondDelay: true})
	m, err = src.Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, m.Lag)
	assert.Equal(t, []ChannelLag{{Name: "", Lag: 10 * time.Second, Delay: time.Minute}}, m.Channels)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, sent, 2)
	assert.NotContains(t, sent[0], "replication_applier_configuration", "no grant needed for it by default")
	assert.Contains(t, sent[1], "LEFT JOIN performance_schema.replication_applier_configuration a\n  ON a.CHANNEL_NAME = c.CHANNEL_NAME")
}
