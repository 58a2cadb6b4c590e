package throttler

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// galeraSynced is the status of a healthy node whose flow-control counter
// reads pausedNS.
func galeraSynced(pausedNS uint64) map[string]string {
	return map[string]string{
		"wsrep_provider_name":          "Galera",
		"wsrep_local_state":            "4",
		"wsrep_local_state_comment":    "Synced",
		"wsrep_ready":                  "ON",
		"wsrep_cluster_status":         "Primary",
		"wsrep_local_recv_queue":       "0",
		"wsrep_flow_control_paused_ns": strconv.FormatUint(pausedNS, 10),
		"wsrep_cluster_size":           "3", // not asked for: the fake answers only what the statement names
	}
}

// with returns st with the given variables changed.
func with(st map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(st))
	for k, v := range st {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// newFakeGalera returns an unopened Galera on a fake node whose status is
// status, polling every hour: tests drive it with UpdateLag.
func newFakeGalera(t *testing.T, cfg GaleraConfig, status map[string]string, opts ...Option) (*Galera, *fakedb) {
	t.Helper()
	db, f := newFakedb(t)
	f.setStatus(status)
	all := append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour)}, opts...)
	g, err := NewGalera(db, cfg, nil, all...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	return g, f
}

func TestNewGaleraRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		nodb bool
		cfg  GaleraConfig
		opts []Option
		want string
	}{
		{"nil db", true, GaleraConfig{}, nil, "db *sql.DB is nil"},
		{"negative queue", false, GaleraConfig{RecvQueue: -1}, nil, "GaleraConfig.RecvQueue -1 must not be negative (0 means 16)"},
		{"negative share", false, GaleraConfig{FlowControl: -0.1}, nil, "GaleraConfig.FlowControl -0.1 must be a share in (0, 1] (0 means 0.2)"},
		{"share above one", false, GaleraConfig{FlowControl: 1.5}, nil, "GaleraConfig.FlowControl 1.5 must be a share in (0, 1]"},
		{"share NaN", false, GaleraConfig{FlowControl: math.NaN()}, nil, "GaleraConfig.FlowControl NaN"},
		{"share infinite", false, GaleraConfig{FlowControl: math.Inf(1)}, nil, "GaleraConfig.FlowControl +Inf"},
		{"replication option", false, GaleraConfig{}, []Option{WithLagSource(&fakeSource{})}, "WithLagSource does not apply to a Galera throttler"},
		{"pacing", false, GaleraConfig{}, []Option{WithPacing(0)}, "WithPacing does not apply to a Galera throttler"},
		{"bad option", false, GaleraConfig{}, []Option{WithInterval(0)}, "WithInterval(0s)"},
		{"two problems", true, GaleraConfig{RecvQueue: -5}, nil, "RecvQueue -5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, _ := newFakedb(t)
			if c.nodb {
				db = nil
			}
			g, err := NewGalera(db, c.cfg, nil, c.opts...)
			assert.Nil(t, g)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
			assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()), "wrapped once")
		})
	}
	g, _ := newFakeGalera(t, GaleraConfig{}, nil)
	assert.Equal(t, GaleraConfig{RecvQueue: 16, FlowControl: 0.2}, g.cfg, "zero means the defaults")
	assert.Equal(t, "galera", g.String())
}

// TestGaleraOpenOnAServerWithoutWsrep: Open says the server is no Galera
// node, as a configuration error, and leaves the throttler unthrottled.
func TestGaleraOpenOnAServerWithoutWsrep(t *testing.T) {
	cases := []struct {
		name   string
		status map[string]string
		want   string
	}{
		// What MariaDB 10.11 without a provider reports (measured).
		{"mariadb without provider", map[string]string{"wsrep_provider_name": "", "wsrep_ready": "OFF", "wsrep_cluster_status": "Disconnected"},
			"server is not a Galera node: no wsrep provider is loaded (wsrep_provider_name is empty: wsrep_on is OFF or wsrep_provider is none)"},
		{"mysql", map[string]string{"Threads_running": "1"},
			"server is not a Galera node: it has no wsrep_local_state status variable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, _ := newFakeGalera(t, GaleraConfig{}, c.status)
			err := g.Open(context.Background())
			require.ErrorIs(t, err, ErrNotGalera)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
			assert.False(t, g.IsThrottled())
		})
	}
}

func TestGaleraVerdicts(t *testing.T) {
	ok := galeraSynced(0)
	cases := []struct {
		name   string
		status map[string]string
		reason string // "" means clear
		err    string // the reading's error, for an unusable answer
	}{
		{"synced", ok, "", ""},
		{"queue below", with(ok, "wsrep_local_recv_queue", "9"), "", ""},
		{"queue at threshold", with(ok, "wsrep_local_recv_queue", "10"), "galera: receive queue 10 >= 10", ""},
		{"queue huge", with(ok, "wsrep_local_recv_queue", "99999999999999999999"), "galera: receive queue 9223372036854775807 >= 10", ""},
		{"desynced", with(ok, "wsrep_local_state", "2", "wsrep_local_state_comment", "Donor/Desynced"), "galera: node not synced (Donor/Desynced)", ""},
		{"joining", with(ok, "wsrep_local_state", "1", "wsrep_local_state_comment", "Joining", "wsrep_ready", "OFF"), "galera: node not synced (Joining), not ready", ""},
		{"state without comment", with(ok, "wsrep_local_state", "3", "wsrep_local_state_comment", ""), "galera: node not synced (wsrep_local_state 3)", ""},
		{"state huge", with(ok, "wsrep_local_state", "18446744073709551620", "wsrep_local_state_comment", ""), "galera: node not synced (wsrep_local_state 9223372036854775807)", ""},
		{"evicted", with(ok, "wsrep_local_state", "0", "wsrep_local_state_comment", "Initialized", "wsrep_ready", "OFF", "wsrep_cluster_status", "non-Primary", "wsrep_local_recv_queue", "12"),
			"galera: node not synced (Initialized), not ready, cluster status non-Primary, receive queue 12 >= 10", ""},
		{"ready lower case", with(ok, "wsrep_ready", "on"), "", ""},
		{"state not a number", with(ok, "wsrep_local_state", "Synced"), `galera: status variable wsrep_local_state = "Synced": not an integer`, "not an integer"},
		{"queue negative", with(ok, "wsrep_local_recv_queue", "-1"), `galera: status variable wsrep_local_recv_queue = "-1": negative`, "negative"},
		{"paused not a number", with(ok, "wsrep_flow_control_paused_ns", "1.5"), `galera: status variable wsrep_flow_control_paused_ns = "1.5": not an integer`, "not an integer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, _ := newFakeGalera(t, GaleraConfig{RecvQueue: 10}, c.status)
			err := g.Open(context.Background())
			if c.err != "" {
				assert.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.reason != "", g.IsThrottled())
			assert.Equal(t, c.reason, g.ThrottleReason())
		})
	}
}

// TestGaleraMissingVariable: a node that answers without a variable the
// verdict needs throttles at once, saying which.
func TestGaleraMissingVariable(t *testing.T) {
	g, f := newFakeGalera(t, GaleraConfig{}, galeraSynced(0))
	require.NoError(t, g.Open(context.Background()))
	st := galeraSynced(0)
	delete(st, "wsrep_flow_control_paused_ns")
	f.setStatus(st)
	err := g.UpdateLag(context.Background())
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.True(t, g.IsThrottled())
	assert.Equal(t, "galera: the server has no global status variable wsrep_flow_control_paused_ns", g.ThrottleReason())

	// A node whose provider is unloaded while open: an observation,
	// throttled now.
	f.setStatus(map[string]string{"wsrep_provider_name": ""})
	assert.ErrorIs(t, g.UpdateLag(context.Background()), ErrNotGalera)
	assert.Contains(t, g.ThrottleReason(), "galera: server is not a Galera node: no wsrep provider is loaded")
}

// TestGaleraFlowControlShare: the share is the counter's growth over the
// time between two readings; the first reading and one after the counter
// went down have no share.
func TestGaleraFlowControlShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, f := newFakeGalera(t, GaleraConfig{}, galeraSynced(5e9))
		read := func(after time.Duration, paused uint64) {
			t.Helper()
			time.Sleep(after)
			f.setStatus(galeraSynced(paused))
			require.NoError(t, g.UpdateLag(context.Background()))
		}
		require.NoError(t, g.Open(context.Background()))
		assert.False(t, g.IsThrottled(), "the first reading has no baseline: 5s paused since the node started is no share")
		assert.False(t, g.Status().FlowControlKnown)

		read(time.Second, 5e9+450e6)
		assert.True(t, g.IsThrottled())
		assert.Equal(t, "galera: flow control paused 45% of the last 1s >= 20%", g.ThrottleReason())
		assert.InDelta(t, 0.45, g.Status().FlowControl, 1e-9)
		assert.Equal(t, time.Second, g.Status().Interval)

		read(0, 5e9+460e6) // no time since the last reading: its share stands, and its baseline
		assert.Equal(t, "galera: flow control paused 45% of the last 1s >= 20%", g.ThrottleReason())

		read(250*time.Millisecond, 5e9+450e6+40e6)
		assert.False(t, g.IsThrottled(), "16%% over the last 250ms: %s", g.ThrottleReason())
		assert.InDelta(t, 0.16, g.Status().FlowControl, 1e-9)

		read(250*time.Millisecond, 5e9+450e6+40e6+50e6)
		assert.Equal(t, "galera: flow control paused 20% of the last 250ms >= 20%", g.ThrottleReason(), "at the share throttles")

		read(time.Second, 1e6) // the node restarted: the counter went down
		assert.False(t, g.IsThrottled(), "no data for this interval, never a negative share: %s", g.ThrottleReason())
		assert.False(t, g.Status().FlowControlKnown)

		read(time.Second, 1e6+3e9) // more paused than time passed (clocks differ): at most all of it
		assert.Equal(t, "galera: flow control paused 100% of the last 1s >= 20%", g.ThrottleReason())

		read(time.Second, 1e6+3e9+2e6)
		assert.False(t, g.IsThrottled(), g.ThrottleReason())
		assert.Equal(t, 0.002, math.Round(g.Status().FlowControl*1e6)/1e6)

		f.setStatus(with(galeraSynced(0), "wsrep_flow_control_paused_ns", "18446744073709551616"))
		time.Sleep(time.Second)
		require.NoError(t, g.UpdateLag(context.Background()))
		assert.True(t, g.IsThrottled(), "a counter past 64 bits saturates toward throttled")
		assert.Equal(t, "galera: flow control paused 100% of the last instant >= 20%", g.ThrottleReason())

		read(time.Second, 7)
		assert.False(t, g.IsThrottled(), "after a counter that did not fit, a new baseline: %s", g.ThrottleReason())
	})
}

// TestGaleraFailsClosed: a node that cannot be read keeps the last verdict
// for the stale window, then throttles with the error; it clears by itself
// once it answers healthy again.
func TestGaleraFailsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, f := newFakeGalera(t, GaleraConfig{}, galeraSynced(0), WithInterval(time.Second), WithStaleAfter(3*time.Second))
		require.NoError(t, g.Open(context.Background()))
		require.False(t, g.IsThrottled())

		f.setResult(fakedbResult{err: errBoom})
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		assert.False(t, g.IsThrottled(), "inside the stale window the last verdict stands")
		time.Sleep(time.Second)
		synctest.Wait()
		assert.True(t, g.IsThrottled())
		assert.Contains(t, g.ThrottleReason(), "no wsrep status reading for")
		assert.Contains(t, g.ThrottleReason(), "SHOW GLOBAL STATUS: boom")

		f.setHang(true) // frozen: the query hangs until its timeout
		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.True(t, g.IsThrottled())

		f.setHang(false)
		f.setStatus(with(galeraSynced(0), "wsrep_local_state", "1", "wsrep_local_state_comment", "Joining"))
		time.Sleep(2 * time.Second) // the hung probe times out, and the next comes an interval later
		synctest.Wait()
		assert.Equal(t, "galera: node not synced (Joining)", g.ThrottleReason(), "back, still joining")
		f.setStatus(galeraSynced(1e6))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.False(t, g.IsThrottled(), "rejoined: clear by itself (%s)", g.ThrottleReason())
		require.NoError(t, g.Close())
	})
}

// TestGaleraLogsChangesOnly: one line per change of cause, none per
// reading.
func TestGaleraLogsChangesOnly(t *testing.T) {
	var buf syncBuffer
	db, f := newFakedb(t)
	f.setStatus(galeraSynced(0))
	g, err := NewGalera(db, GaleraConfig{RecvQueue: 5}, slog.New(slog.NewTextHandler(&buf, nil)), WithInterval(time.Hour), WithName("node-3"))
	require.NoError(t, err)
	require.NoError(t, g.Open(context.Background()))
	for _, q := range []string{"7", "9", "0", "0"} {
		f.setStatus(with(galeraSynced(0), "wsrep_local_recv_queue", q))
		require.NoError(t, g.UpdateLag(context.Background()))
	}
	f.setStatus(with(galeraSynced(0), "wsrep_local_state", "2", "wsrep_local_state_comment", "Donor/Desynced"))
	require.NoError(t, g.UpdateLag(context.Background()))
	require.NoError(t, g.Close())
	out := buf.String()
	assert.Equal(t, 2, strings.Count(out, "throttler: throttled"), out)
	assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)
	assert.Contains(t, out, `reason="galera: receive queue 7 >= 5"`)
	assert.Contains(t, out, `reason="galera: node not synced (Donor/Desynced)"`)
	assert.Equal(t, 5, strings.Count(out, "throttler=node-3"), out)
}

func TestGaleraHotPathDoesNotAllocate(t *testing.T) {
	g, _ := newFakeGalera(t, GaleraConfig{}, galeraSynced(0))
	require.NoError(t, g.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = g.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { g.BlockWait(ctx) }))
}

func TestGaleraPercent(t *testing.T) {
	for share, want := range map[float64]string{0: "0%", 0.2: "20%", 0.455: "46%", 1: "100%", 0.002: "0.2%", 0.0001234: "0.012%"} {
		assert.Equal(t, want, percent(share), "%v", share)
	}
}
