package promthrottler_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/promthrottler"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// collector must start none.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stub is a throttler whose Stats, Lag and Utilization the test sets.
type stub struct {
	throttler.Noop
	name  string
	stats throttler.Stats
	lag   time.Duration
	util  float64
}

func (s *stub) String() string         { return s.name }
func (s *stub) Stats() throttler.Stats { return s.stats }
func (s *stub) Lag() time.Duration     { return s.lag }
func (s *stub) Utilization() float64   { return s.util }
func (s *stub) IsThrottled() bool      { return s.stats.Throttled }

// bare is a throttler of another package: no Stats, no Lag, no name.
type bare struct{ throttled bool }

func (*bare) Open(context.Context) error      { return nil }
func (*bare) Close() error                    { return nil }
func (b *bare) IsThrottled() bool             { return b.throttled }
func (*bare) BlockWait(context.Context)       {}
func (*bare) UpdateLag(context.Context) error { return nil }

// TestCollectorExposition checks every metric, line by line: a throttler
// with everything, one of another package with nothing but IsThrottled,
// and two that share a name.
func TestCollectorExposition(t *testing.T) {
	byKind := map[string]time.Duration{"lag": 9500 * time.Millisecond, "not flowing": 2500 * time.Millisecond}
	full := &stub{name: "replica-a", lag: 2500 * time.Millisecond, util: 1.25, stats: throttler.Stats{
		Throttled: true, Kind: "lag", Reason: "replica lag 2.5s >= 2s", Episodes: 3,
		ThrottledTotal: 12 * time.Second, ThrottledByKind: byKind,
		Waits: 7, WaitedTotal: 11250 * time.Millisecond, MaxWaits: 1,
		Measurements: 120, Errors: 2,
	}}
	other := &bare{throttled: true}
	twin1, twin2 := &stub{name: "load", util: 0.5}, &stub{name: "load", util: 0}

	c := promthrottler.NewCollector(full, other, twin1, twin2)
	reg := prometheus.NewPedanticRegistry() // checks Collect against Describe
	require.NoError(t, reg.Register(c))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP throttler_episodes_total Throttled periods begun since Open.
# TYPE throttler_episodes_total counter
throttler_episodes_total{throttler="load #3"} 0
throttler_episodes_total{throttler="load #4"} 0
throttler_episodes_total{throttler="replica-a"} 3
# HELP throttler_lag_seconds The last lag the throttler measured, in seconds.
# TYPE throttler_lag_seconds gauge
throttler_lag_seconds{throttler="load #3"} 0
throttler_lag_seconds{throttler="load #4"} 0
throttler_lag_seconds{throttler="replica-a"} 2.5
# HELP throttler_measurement_errors_total Failed measurements.
# TYPE throttler_measurement_errors_total counter
throttler_measurement_errors_total{throttler="load #3"} 0
throttler_measurement_errors_total{throttler="load #4"} 0
throttler_measurement_errors_total{throttler="replica-a"} 2
# HELP throttler_measurements_total Successful measurements (readings, requests, flag file checks).
# TYPE throttler_measurements_total counter
throttler_measurements_total{throttler="load #3"} 0
throttler_measurements_total{throttler="load #4"} 0
throttler_measurements_total{throttler="replica-a"} 120
# HELP throttler_throttled Whether the throttler throttles now (1) or not (0).
# TYPE throttler_throttled gauge
throttler_throttled{throttler="load #3"} 0
throttler_throttled{throttler="load #4"} 0
throttler_throttled{throttler="replica-a"} 1
throttler_throttled{throttler="throttler 2"} 1
# HELP throttler_throttled_seconds_total Time the throttler has been throttled since Open, by kind of reason.
# TYPE throttler_throttled_seconds_total counter
throttler_throttled_seconds_total{kind="lag",throttler="replica-a"} 9.5
throttler_throttled_seconds_total{kind="not flowing",throttler="replica-a"} 2.5
# HELP throttler_utilization The throttler's signal as a fraction of its threshold: 1 or more throttles.
# TYPE throttler_utilization gauge
throttler_utilization{throttler="load #3"} 0.5
throttler_utilization{throttler="load #4"} 0
throttler_utilization{throttler="replica-a"} 1.25
# HELP throttler_wait_seconds_total Time BlockWait and Wait calls spent blocked, summed.
# TYPE throttler_wait_seconds_total counter
throttler_wait_seconds_total{throttler="load #3"} 0
throttler_wait_seconds_total{throttler="load #4"} 0
throttler_wait_seconds_total{throttler="replica-a"} 11.25
# HELP throttler_waits_total BlockWait and Wait calls that had to block.
# TYPE throttler_waits_total counter
throttler_waits_total{throttler="load #3"} 0
throttler_waits_total{throttler="load #4"} 0
throttler_waits_total{throttler="replica-a"} 7
`)))

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems, "the metrics break Prometheus' naming conventions")
}

// TestCollectorReadsStatsAtScrape runs a real Pause with a flag file (a
// throttler with measurements, errors, waits and kinds) under a Multi
// without a name, in a synctest bubble so that every duration is exact, and
// scrapes both as they go: the collector reads Stats at the scrape.
func TestCollectorReadsStatsAtScrape(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "dir")
		p, err := throttler.NewPause(throttler.PauseConfig{FlagFile: filepath.Join(dir, "pause")}, nil,
			throttler.WithInterval(time.Second), throttler.WithName("ops"))
		require.NoError(t, err)
		m := throttler.NewMulti(p)
		c := promthrottler.NewCollector(p, m)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		require.NoError(t, m.Open(ctx)) // opens p: its first flag file check
		defer m.Close()
		require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP throttler_episodes_total Throttled periods begun since Open.
# TYPE throttler_episodes_total counter
throttler_episodes_total{throttler="ops"} 0
throttler_episodes_total{throttler="multi"} 0
# HELP throttler_lag_seconds The last lag the throttler measured, in seconds.
# TYPE throttler_lag_seconds gauge
throttler_lag_seconds{throttler="multi"} 0
# HELP throttler_measurement_errors_total Failed measurements.
# TYPE throttler_measurement_errors_total counter
throttler_measurement_errors_total{throttler="ops"} 0
throttler_measurement_errors_total{throttler="multi"} 0
# HELP throttler_measurements_total Successful measurements (readings, requests, flag file checks).
# TYPE throttler_measurements_total counter
throttler_measurements_total{throttler="ops"} 1
throttler_measurements_total{throttler="multi"} 1
# HELP throttler_throttled Whether the throttler throttles now (1) or not (0).
# TYPE throttler_throttled gauge
throttler_throttled{throttler="ops"} 0
throttler_throttled{throttler="multi"} 0
# HELP throttler_utilization The throttler's signal as a fraction of its threshold: 1 or more throttles.
# TYPE throttler_utilization gauge
throttler_utilization{throttler="multi"} 0
# HELP throttler_wait_seconds_total Time BlockWait and Wait calls spent blocked, summed.
# TYPE throttler_wait_seconds_total counter
throttler_wait_seconds_total{throttler="ops"} 0
throttler_wait_seconds_total{throttler="multi"} 0
# HELP throttler_waits_total BlockWait and Wait calls that had to block.
# TYPE throttler_waits_total counter
throttler_waits_total{throttler="ops"} 0
throttler_waits_total{throttler="multi"} 0
`)))

		// The flag file is checked at 1s, 2s, 3s...: the steps fall between.
		// Paused by hand from 0 to 2.5s; a copier blocks from 0.5s.
		p.Pause("maintenance")
		time.Sleep(500 * time.Millisecond)
		go m.BlockWait(ctx)
		time.Sleep(2 * time.Second)
		p.Resume()
		// At 3s the flag file cannot be checked (its directory is a file):
		// a failed measurement, which throttles.
		require.NoError(t, os.WriteFile(dir, nil, 0o600))
		time.Sleep(time.Second)
		// At 4s the flag file exists: throttled still, for another kind.
		require.NoError(t, os.Remove(dir))
		require.NoError(t, os.Mkdir(dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "pause"), nil, 0o600))
		time.Sleep(2 * time.Second)
		synctest.Wait()

		// At 5.5s: checks at 0, 1, 2, 4 and 5 worked, the one at 3 failed.
		require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP throttler_episodes_total Throttled periods begun since Open.
# TYPE throttler_episodes_total counter
throttler_episodes_total{throttler="ops"} 2
throttler_episodes_total{throttler="multi"} 2
# HELP throttler_lag_seconds The last lag the throttler measured, in seconds.
# TYPE throttler_lag_seconds gauge
throttler_lag_seconds{throttler="multi"} 0
# HELP throttler_measurement_errors_total Failed measurements.
# TYPE throttler_measurement_errors_total counter
throttler_measurement_errors_total{throttler="ops"} 1
throttler_measurement_errors_total{throttler="multi"} 1
# HELP throttler_measurements_total Successful measurements (readings, requests, flag file checks).
# TYPE throttler_measurements_total counter
throttler_measurements_total{throttler="ops"} 5
throttler_measurements_total{throttler="multi"} 5
# HELP throttler_throttled Whether the throttler throttles now (1) or not (0).
# TYPE throttler_throttled gauge
throttler_throttled{throttler="ops"} 1
throttler_throttled{throttler="multi"} 1
# HELP throttler_throttled_seconds_total Time the throttler has been throttled since Open, by kind of reason.
# TYPE throttler_throttled_seconds_total counter
throttler_throttled_seconds_total{kind="flag file",throttler="ops"} 1.5
throttler_throttled_seconds_total{kind="flag file",throttler="multi"} 1.5
throttler_throttled_seconds_total{kind="flag file unreadable",throttler="ops"} 1
throttler_throttled_seconds_total{kind="flag file unreadable",throttler="multi"} 1
throttler_throttled_seconds_total{kind="paused",throttler="ops"} 2.5
throttler_throttled_seconds_total{kind="paused",throttler="multi"} 2.5
# HELP throttler_utilization The throttler's signal as a fraction of its threshold: 1 or more throttles.
# TYPE throttler_utilization gauge
throttler_utilization{throttler="multi"} 1
# HELP throttler_wait_seconds_total Time BlockWait and Wait calls spent blocked, summed.
# TYPE throttler_wait_seconds_total counter
throttler_wait_seconds_total{throttler="ops"} 2
throttler_wait_seconds_total{throttler="multi"} 2
# HELP throttler_waits_total BlockWait and Wait calls that had to block.
# TYPE throttler_waits_total counter
throttler_waits_total{throttler="ops"} 1
throttler_waits_total{throttler="multi"} 1
`)))
	})
}

// TestCollectorNilThrottler: a nil throttler fails the scrape with an error
// that names it, and does not panic.
func TestCollectorNilThrottler(t *testing.T) {
	var r *throttler.Replication
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(promthrottler.NewCollector(throttler.Noop{}, r)))
	_, err := reg.Gather()
	assert.ErrorContains(t, err, "promthrottler: throttler 2 is nil")
}
