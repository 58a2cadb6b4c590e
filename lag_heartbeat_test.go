package throttler

import (
	"context"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hbFixture is one heartbeat reading: the row the query returns (the
// replica's UTC_TIMESTAMP(6) and MAX(ts) as the server sends ts, null when no
// row matched), the source's configuration, and what the source must make of
// it. One is recorded from the MariaDB pair; the others are written from
// pt-heartbeat's documented formats and the situations they stand for.
type hbFixture struct {
	Description string `json:"description"`
	Config      struct {
		ServerID  uint32 `json:"server_id"`
		UTCOffset string `json:"utc_offset"` // "-05:00": Location; "" is UTC
	} `json:"config"`
	Row  heartbeatRow `json:"row"`
	Want lagWant      `json:"want"` // a heartbeat never says not flowing nor names a channel
}

func TestHeartbeatFixtures(t *testing.T) {
	eachFixture(t, "testdata/heartbeat", 19, func(t *testing.T, fx *hbFixture) {
		cfg := HeartbeatConfig{Table: "percona.heartbeat", SourceServerID: fx.Config.ServerID}
		if fx.Config.UTCOffset != "" {
			off, err := time.Parse("-07:00", fx.Config.UTCOffset)
			require.NoError(t, err, "fixture's offset")
			_, secs := off.Zone()
			cfg.Location = time.FixedZone(fx.Config.UTCOffset, secs)
		}
		src, err := HeartbeatSource(cfg)
		require.NoError(t, err)
		m, err := src.(*heartbeatSource).lag(fx.Row)
		fx.Want.check(t, fx.Description, m, err)
		if fx.Want.Err != "" {
			assert.ErrorContains(t, err, "percona.heartbeat", "errors name the table")
		}
	})
}

func TestHeartbeatSourceConfig(t *testing.T) {
	cases := []struct {
		cfg          HeartbeatConfig
		query, named string
	}{
		{HeartbeatConfig{}, "SELECT UTC_TIMESTAMP(6), MAX(ts) FROM `heartbeat`", "heartbeat heartbeat (newest row)"},
		{HeartbeatConfig{Table: "percona.heartbeat", SourceServerID: 4294967295}, "SELECT UTC_TIMESTAMP(6), MAX(ts) FROM `percona`.`heartbeat` WHERE server_id = 4294967295", "heartbeat percona.heartbeat (server_id 4294967295)"},
	}
	for _, c := range cases {
		src, err := HeartbeatSource(c.cfg)
		require.NoError(t, err)
		assert.Equal(t, c.query, src.(*heartbeatSource).query)
		assert.Equal(t, c.named, src.String())
		assert.Equal(t, time.UTC, src.(*heartbeatSource).loc, "UTC by default")
	}
	for _, table := range []string{"a.b.c", "db.", "`percona`.`heartbeat`", "heart beat", "x;DROP", "db/hb"} {
		src, err := HeartbeatSource(HeartbeatConfig{Table: table})
		assert.Nil(t, src, table)
		assert.ErrorIs(t, err, ErrInvalidConfig, table)
		assert.ErrorContains(t, err, "HeartbeatConfig.Table "+`"`+table+`"`, table)
	}
}

// Measure over the driver: the scan of each column type, and the server
// errors that mean a missing table, grant or column.
func TestHeartbeatMeasure(t *testing.T) {
	at := func(now, ts driver.Value) func(string, []driver.NamedValue) fakedbResult {
		return func(string, []driver.NamedValue) fakedbResult {
			return fakedbResult{cols: []string{"UTC_TIMESTAMP(6)", "MAX(ts)"}, rows: [][]driver.Value{{now, ts}}}
		}
	}
	fail := func(err error) func(string, []driver.NamedValue) fakedbResult {
		return func(string, []driver.NamedValue) fakedbResult { return fakedbResult{err: err} }
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 250000000, time.UTC)
	cases := []struct {
		name   string
		answer func(string, []driver.NamedValue) fakedbResult
		lag    time.Duration
		is     error
		err    string
	}{
		{"text", at([]byte("2026-11-23 12:00:00.250000"), []byte("2026-11-23T12:00:00.000000")), 250 * time.Millisecond, nil, ""},
		{"parseTime DSN, varchar ts", at(now, []byte("2026-11-23T11:59:59.000000")), 1250 * time.Millisecond, nil, ""},
		{"parseTime DSN, legacy DATETIME ts", at(time.Date(2026, 11, 23, 12, 0, 0, 250000000, time.FixedZone("DSN loc", 3600)), time.Date(2026, 11, 23, 11, 59, 58, 0, time.FixedZone("DSN loc", 3600))), 2250 * time.Millisecond, nil, ""},
		{"no row", at([]byte("2026-11-23 12:00:00.250000"), nil), 0, nil, "has no row for server_id 3"},
		{"missing table", fail(hbMySQLErr(1146, "Table 'percona.heartbeat' doesn't exist")), 0, ErrUnavailable, "heartbeat table percona.heartbeat does not exist on this server"},
		{"no grant", fail(hbMySQLErr(1142, "SELECT command denied to user 'throttler_monitor'@'localhost' for table `percona`.`heartbeat`")), 0, ErrAccessDenied, "grant SELECT ON percona.heartbeat"},
		{"no column", fail(hbMySQLErr(1054, "Unknown column 'server_id' in 'where clause'")), 0, ErrUnavailable, "not a pt-heartbeat table"},
		{"hung", fail(context.DeadlineExceeded), 0, context.DeadlineExceeded, "read heartbeat from percona.heartbeat"},
	}
	src, err := HeartbeatSource(HeartbeatConfig{Table: "percona.heartbeat", SourceServerID: 3})
	require.NoError(t, err)
	for _, c := range cases {
		db, f := newFakedbAnswering(t, c.answer)
		m, err := src.Measure(context.Background(), db)
		assert.Equal(t, []string{"SELECT UTC_TIMESTAMP(6), MAX(ts) FROM `percona`.`heartbeat` WHERE server_id = 3"}, f.log(), c.name)
		if c.err != "" {
			assert.ErrorContains(t, err, c.err, c.name)
			if c.is != nil {
				assert.ErrorIs(t, err, c.is, c.name)
			}
			continue
		}
		if assert.NoError(t, err, c.name) {
			assert.Equal(t, c.lag, m.Lag, c.name)
		}
	}

	unqualified, err := HeartbeatSource(HeartbeatConfig{})
	require.NoError(t, err)
	db, _ := newFakedbAnswering(t, fail(hbMySQLErr(1046, "No database selected")))
	_, err = unqualified.Measure(context.Background(), db)
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, `give it as "database.heartbeat"`)
}

func TestHeartbeatWallTimeScan(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC)
	cases := []struct {
		name string
		in   any
		want time.Time
		err  string
	}{
		{"nil", nil, time.Time{}, ""},
		{"bytes", []byte("2026-11-23 12:00:00.123456"), at, ""},
		{"string", "2026-11-23 12:00:00.123456", at, ""},
		{"zero date", []byte("0000-00-00 00:00:00.000000"), time.Time{}, ""},
		{"empty", []byte(""), time.Time{}, ""},
		{"parseTime value", at, at, ""},
		{"parseTime zero", time.Time{}, time.Time{}, ""},
		{"wall clock kept", time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.FixedZone("X", -5*3600)), at, ""},
		{"garbage", []byte("noon"), time.Time{}, `cannot parse timestamp "noon"`},
		{"wrong type", 3.5, time.Time{}, "cannot scan float64"},
	}
	for _, c := range cases {
		var w heartbeatWallTime
		err := w.Scan(c.in)
		if c.err != "" {
			assert.ErrorContains(t, err, c.err, c.name)
			continue
		}
		assert.NoError(t, err, c.name)
		assert.True(t, c.want.Equal(w.t), "%s: got %v", c.name, w.t)
	}
	var h heartbeatText
	assert.ErrorContains(t, h.Scan(int64(5)), "cannot scan int64")
	require.NoError(t, h.Scan(nil))
	assert.False(t, h.valid)
	require.NoError(t, h.Scan(""))
	assert.True(t, h.valid, "an empty ts is a row, not NULL")
}

// TestHeartbeatLagHintsAtTimeZones: a lag within a minute of a whole number
// of hours suggests a Location that is not the writer's zone.
func TestHeartbeatLagHintsAtTimeZones(t *testing.T) {
	src, err := HeartbeatSource(HeartbeatConfig{})
	require.NoError(t, err)
	hb := src.(*heartbeatSource)
	for lag, hinted := range map[time.Duration]bool{
		5*time.Hour + 100*time.Millisecond: true,
		time.Hour - 30*time.Second:         true,
		time.Hour + time.Minute:            true,
		2*time.Hour - time.Minute:          true,
		time.Hour + 61*time.Second:         false,
		30 * time.Minute:                   false,
		50 * time.Second:                   false,
		90 * time.Minute:                   false,
	} {
		assert.Equal(t, hinted, hb.lagHint(lag) != "", "%v", lag)
	}
	assert.Equal(t, "within a minute of 5 whole hours: is ts written in UTC, HeartbeatConfig.Location? pt-heartbeat without --utc writes its host's local time", hb.lagHint(5*time.Hour))
}

// hintingSource is a fake source that hints, as HeartbeatSource does.
type hintingSource struct{ *fakeSource }

func (hintingSource) lagHint(time.Duration) string { return "a hint" }

// TestReplicationReasonCarriesTheSourcesHint: the hint ends the lag reason.
func TestReplicationReasonCarriesTheSourcesHint(t *testing.T) {
	src := hintingSource{&fakeSource{m: lagOf(5 * time.Hour)}}
	r, err := NewReplicationThrottler(fakeDB, time.Second, nil, WithLagSource(src), WithInterval(time.Hour))
	require.NoError(t, err)
	require.NoError(t, r.Open(context.Background()))
	defer r.Close()
	assert.Equal(t, "replica lag 5h0m0s >= 1s (a hint)", r.ThrottleReason())
}
