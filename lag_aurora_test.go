package throttler

// No Aurora MySQL cluster is available to these tests: the fixtures in
// testdata/aurora are written from AWS's documentation of
// information_schema.replica_host_status (SERVER_ID, SESSION_ID,
// REPLICA_LAG_IN_MILLISECONDS as a double, LAST_UPDATE_TIMESTAMP as
// datetime(6), 'MASTER_SESSION_ID' on the writer), not recorded. What runs
// against a real server is the MariaDB pair's answer to the query (no such
// table: ErrUnavailable), in heartbeat_integration_test.go.

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type auroraFixture struct {
	Description string `json:"description"`
	Config      struct {
		ServerID  string `json:"server_id"`
		Freshness string `json:"freshness"`
	} `json:"config"`
	Rows []auroraRow `json:"rows"`
	Want lagWant     `json:"want"`
}

func TestAuroraFixtures(t *testing.T) {
	eachFixture(t, "testdata/aurora", 20, func(t *testing.T, fx *auroraFixture) {
		cfg := AuroraConfig{ServerID: fx.Config.ServerID}
		if fx.Config.Freshness != "" {
			var err error
			cfg.Freshness, err = time.ParseDuration(fx.Config.Freshness)
			require.NoError(t, err, "fixture's freshness")
		}
		m, err := auroraLag(fx.Rows, cfg)
		fx.Want.check(t, fx.Description, m, err)
	})
}

func TestAuroraMeasure(t *testing.T) {
	rows := func(string, []driver.NamedValue) fakedbResult {
		return fakedbResult{
			cols: []string{"NOW(6)", "SERVER_ID", "SESSION_ID", "REPLICA_LAG_IN_MILLISECONDS", "LAST_UPDATE_TIMESTAMP"},
			rows: [][]driver.Value{
				{[]byte("2026-11-23 12:00:00.500000"), []byte("prod-instance-1"), []byte("MASTER_SESSION_ID"), []byte("0"), []byte("2026-11-23 12:00:00.400000")},
				{[]byte("2026-11-23 12:00:00.500000"), []byte("prod-instance-2"), []byte("5f3d1c2a-8e4b-4a7c-9d11-2b6f0e9a7c31"), []byte("17.75"), []byte("2026-11-23 12:00:00.300000")},
				// parseTime=true: DATETIMEs arrive as time.Time, the double as float64
				{time.Date(2026, 11, 23, 12, 0, 0, 500000000, time.Local), "prod-instance-3", "c0a8e7b4-1f2d-4e3a-b5c6-7d8e9f0a1b2c", 31.5, time.Date(2026, 11, 23, 12, 0, 0, 200000000, time.Local)},
				{[]byte("2026-11-23 12:00:00.500000"), []byte("prod-instance-4"), []byte("0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"), nil, nil},
			},
		}
	}
	db, f := newFakedbAnswering(t, rows)
	src, err := AuroraSource(AuroraConfig{})
	require.NoError(t, err)
	assert.Equal(t, "aurora replica_host_status", src.String())
	m, err := src.Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Equal(t, 31500*time.Microsecond, m.Lag)
	assert.Equal(t, "prod-instance-3", m.Channel)
	assert.Empty(t, m.NotFlowing, "prod-instance-4 never reported: stale, not counted")
	assert.Equal(t, []string{auroraQuery}, f.log())

	one, err := AuroraSource(AuroraConfig{ServerID: "prod-instance-2"})
	require.NoError(t, err)
	assert.Equal(t, "aurora replica_host_status (reader prod-instance-2)", one.String())
	m, err = one.Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Equal(t, 17750*time.Microsecond, m.Lag)

	// Bad configuration is refused where it is given, not at Open.
	for _, c := range []struct {
		cfg  AuroraConfig
		want string
	}{
		{AuroraConfig{Freshness: -1}, "AuroraConfig.Freshness -1ns must not be negative (0 means 1m0s)"},
		{AuroraConfig{Freshness: -time.Second}, "AuroraConfig.Freshness -1s must not be negative"},
		{AuroraConfig{Freshness: maxSpan + time.Hour}, "AuroraConfig.Freshness 169h0m0s must be at most 168h0m0s"},
	} {
		bad, err := AuroraSource(c.cfg)
		assert.Nil(t, bad, c.want)
		assert.ErrorIs(t, err, ErrInvalidConfig, c.want)
		assert.ErrorContains(t, err, c.want)
		assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()), "wrapped once: %v", err)
	}
	for _, ok := range []AuroraConfig{{}, {Freshness: maxSpan}} {
		_, err := AuroraSource(ok)
		assert.NoError(t, err, "%+v", ok)
	}

	for _, c := range []struct {
		err  error
		is   error
		want string
	}{
		{hbMySQLErr(1109, "Unknown table 'replica_host_status' in information_schema"), ErrUnavailable, "the server has no information_schema.replica_host_status: it is not Aurora MySQL"},
		{hbMySQLErr(1142, "SELECT command denied"), ErrAccessDenied, "may not read information_schema.replica_host_status"},
		{context.DeadlineExceeded, context.DeadlineExceeded, "read information_schema.replica_host_status"},
	} {
		db, _ := newFakedbAnswering(t, func(string, []driver.NamedValue) fakedbResult { return fakedbResult{err: c.err} })
		_, err := src.Measure(context.Background(), db)
		assert.ErrorIs(t, err, c.is)
		assert.ErrorContains(t, err, c.want)
	}
}

// Aurora's flavor: ParseFlavor from the engine version string, DetectFlavor
// from @@aurora_version with at most one more query, and only on MySQL.
func TestAuroraFlavor(t *testing.T) {
	for _, c := range []struct {
		version string
		aurora  bool
	}{
		{"8.0.mysql_aurora.3.05.2", true},
		{"5.7.mysql_aurora.2.11.2", true},
		{"8.0.32", false},
		{"5.7.12", false},
		{"10.11.6-MariaDB", false},
	} {
		f, err := ParseFlavor(c.version, "Source distribution")
		require.NoError(t, err)
		assert.Equal(t, c.aurora, f.Aurora, c.version)
	}

	errRefused := errors.New("connection refused")
	cases := []struct {
		name, version, comment string
		aurora                 any   // @@aurora_version, or an error
		want                   bool  // Flavor.Aurora
		queries                int   // round trips
		err                    error // from DetectFlavor
	}{
		{"Aurora 3 reports the community version", "8.0.32", "Source distribution", "3.05.2", true, 2, nil},
		{"Aurora 2", "5.7.12", "MySQL Community Server (GPL)", "2.11.2", true, 2, nil},
		{"engine version in @@version", "8.0.mysql_aurora.3.05.2", "Source distribution", "3.05.2", true, 1, nil},
		{"MySQL 8", "8.0.36", "MySQL Community Server - GPL", hbMySQLErr(1193, "Unknown system variable 'aurora_version'"), false, 2, nil},
		{"MySQL 5.7", "5.7.44-log", "MySQL Community Server (GPL)", hbMySQLErr(1193, "Unknown system variable 'aurora_version'"), false, 2, nil},
		{"empty variable", "8.0.36", "", "", false, 2, nil},
		{"MariaDB is never asked", "10.11.6-MariaDB-0+deb12u1", "Debian 12", "3.05.2", false, 1, nil},
		{"connection lost", "8.0.36", "", errRefused, false, 2, errRefused},
	}
	for _, c := range cases {
		db, f := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
			switch q {
			case "SELECT @@version, @@version_comment":
				return fakedbResult{cols: []string{"@@version", "@@version_comment"}, rows: [][]driver.Value{{c.version, c.comment}}}
			case "SELECT @@aurora_version":
				if err, ok := c.aurora.(error); ok {
					return fakedbResult{err: err}
				}
				return fakedbResult{cols: []string{"@@aurora_version"}, rows: [][]driver.Value{{c.aurora}}}
			}
			return fakedbResult{err: errors.New("unexpected query " + q)}
		})
		fl, err := DetectFlavor(context.Background(), db)
		if c.err != nil {
			assert.ErrorIs(t, err, c.err, c.name)
			assert.ErrorContains(t, err, "read @@aurora_version", c.name)
		} else {
			assert.NoError(t, err, c.name)
		}
		assert.Equal(t, c.want, fl.Aurora, c.name)
		assert.Len(t, f.log(), c.queries, c.name)
		if err == nil && c.want {
			assert.Equal(t, auroraSource{}.String(), DefaultLagSource(fl).String(), c.name)
		}
	}
}
