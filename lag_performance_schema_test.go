package throttler

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// psFixture is one recorded situation: the rows the performance_schema query
// returns, and what the source must make of them.
type psFixture struct {
	Description string                 `json:"description"`
	Rows        []PerformanceSchemaRow `json:"rows"`
	Want        struct {
		Lag        string `json:"lag"`         // a time.Duration, when flowing
		Channel    string `json:"channel"`     // the channel named
		NotFlowing string `json:"not_flowing"` // a substring of the reason
		Err        string `json:"err"`         // "not_replica"
	} `json:"want"`
}

func TestPerformanceSchemaFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/performance_schema/*.json")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 20, "fixtures missing")
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			require.NoError(t, err)
			var fx psFixture
			require.NoError(t, json.Unmarshal(raw, &fx))
			m, err := performanceSchemaLag(fx.Rows)
			switch {
			case fx.Want.Err == "not_replica":
				assert.ErrorIs(t, err, ErrNotReplica, fx.Description)
			case fx.Want.NotFlowing != "":
				require.NoError(t, err)
				assert.Contains(t, m.NotFlowing, fx.Want.NotFlowing, fx.Description)
				assert.Equal(t, fx.Want.Channel, m.Channel)
			default:
				require.NoError(t, err)
				want, err := time.ParseDuration(fx.Want.Lag)
				require.NoError(t, err, "fixture's lag")
				assert.Empty(t, m.NotFlowing, fx.Description)
				assert.Equal(t, want, m.Lag, fx.Description)
				assert.Equal(t, fx.Want.Channel, m.Channel)
			}
		})
	}
}

func TestDBTimeScan(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC)
	local := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.FixedZone("X", 3600))
	cases := []struct {
		name string
		in   any
		want time.Time
		err  string
	}{
		{"nil", nil, time.Time{}, ""},
		{"bytes", []byte("2026-11-23 12:00:00.123456"), at, ""},
		{"string", "2026-11-23 12:00:00.123456", at, ""},
		{"zero with fraction", []byte("0000-00-00 00:00:00.000000"), time.Time{}, ""},
		{"zero", "0000-00-00 00:00:00", time.Time{}, ""},
		{"empty", []byte(""), time.Time{}, ""},
		{"parseTime value", at, at, ""},
		{"parseTime zero", time.Time{}, time.Time{}, ""},
		{"wall clock kept", local, at, ""},
		{"garbage", []byte("yesterday"), time.Time{}, `cannot parse timestamp "yesterday"`},
		{"wrong type", int64(5), time.Time{}, "cannot scan int64"},
	}
	for _, c := range cases {
		var d dbTime
		err := d.Scan(c.in)
		if c.err != "" {
			assert.ErrorContains(t, err, c.err, c.name)
			continue
		}
		assert.NoError(t, err, c.name)
		assert.True(t, c.want.Equal(d.t), "%s: got %v", c.name, d.t)
	}
}
