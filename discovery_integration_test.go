package throttler_test

// Integration tests of Discovery against the real local MariaDB primary and
// its two replicas (internal/testenv; the second replica is started on
// demand). Without the pair they skip and say how to run them.

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/internal/testenv"
)

// discoveryEvery makes rediscovery quick enough for tests.
const discoveryEvery = 200 * time.Millisecond

// testLogWriter sends a throttler's log lines to the test's log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// twoReplicas returns the pair with its second replica, and both handles.
func twoReplicas(t *testing.T) (*testenv.Pair, *testenv.Node, *testenv.Node) {
	t.Helper()
	p := testenv.Require(t)
	second, err := p.SecondReplica(ctxTimeout(t, 60*time.Second))
	require.NoError(t, err)
	return p, p.Replica(), second
}

// monitorTemplate renders the monitoring user's DSN for any replica.
func monitorTemplate(p *testenv.Pair) string {
	return testenv.MonitorUser + ":" + p.MonitorPassword + "@tcp({{.Host}}:{{.Port}})/?timeout=2s"
}

// openDiscovery opens a Discovery that asks the primary as root, and closes
// it at cleanup.
func openDiscovery(t *testing.T, p *testenv.Pair, cfg throttler.DiscoveryConfig, tolerance time.Duration, opts ...throttler.Option) *throttler.Discovery {
	t.Helper()
	if cfg.DSNTemplate == "" {
		cfg.DSNTemplate = monitorTemplate(p)
	}
	if cfg.Every == 0 {
		cfg.Every = discoveryEvery
	}
	all := append([]throttler.Option{
		throttler.WithInterval(itInterval),
		throttler.WithStaleAfter(itStaleAfter),
		throttler.WithQueryTimeout(itQueryTimeout),
	}, opts...)
	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	d, err := throttler.NewDiscovery(openDB(t, p.Primary().AdminDSN()), tolerance, cfg, logger, all...)
	require.NoError(t, err)
	require.NoError(t, d.Open(context.Background()))
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func sortedAddrs(hs ...*testenv.Node) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Addr())
	}
	slices.Sort(out)
	return out
}

func TestIntegrationDiscoveryFindsBothReplicas(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	d := openDiscovery(t, p, throttler.DiscoveryConfig{}, 2*time.Second)
	assert.Equal(t, sortedAddrs(first, second), d.Replicas(), "MariaDB: SHOW REPLICAS fails to parse, SHOW SLAVE HOSTS lists both")
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		require.False(t, d.IsThrottled(), d.ThrottleReason())
		time.Sleep(50 * time.Millisecond)
	}
	assert.Less(t, d.Lag(), 2*time.Second)

	// Excluding a server id leaves the other replica.
	ex := openDiscovery(t, p, throttler.DiscoveryConfig{Exclude: []uint32{uint32(second.ServerID())}}, 2*time.Second)
	assert.Equal(t, []string{first.Addr()}, ex.Replicas())
}

// The monitoring user may not list the primary's replicas: Open fails and
// names the grant.
func TestIntegrationDiscoveryNeedsTheGrant(t *testing.T) {
	p := testenv.Require(t)
	d, err := throttler.NewDiscovery(openDB(t, p.Primary().DSN()), time.Second, throttler.DiscoveryConfig{DSNTemplate: monitorTemplate(p)}, nil)
	require.NoError(t, err)
	err = d.Open(ctxTimeout(t, 10*time.Second))
	require.ErrorIs(t, err, throttler.ErrAccessDenied)
	assert.Contains(t, err.Error(), "REPLICATION MASTER ADMIN")
	t.Logf("error: %v", err)
	assert.False(t, d.IsThrottled())
	require.NoError(t, d.Close())
}

func TestIntegrationDiscoveryLaggingReplica(t *testing.T) {
	p, first, second := twoReplicas(t)
	writer(t, p)
	d := openDiscovery(t, p, throttler.DiscoveryConfig{}, time.Second)
	require.False(t, d.IsThrottled(), d.ThrottleReason())

	// A stalled applier (a delay would leave the replica out: see
	// TestIntegrationDiscoveryDelayedReplica).
	unlock := stallApplier(t, second)
	want := second.Addr() + " (server_id 3): replica lag "
	eventually(t, "throttled by the second replica's stalled applier", 15*time.Second, func() bool {
		return strings.HasPrefix(d.ThrottleReason(), want)
	})
	reason := d.ThrottleReason()
	t.Logf("reason: %s", reason)
	assert.NotContains(t, reason, first.Addr(), "the healthy replica is not named")

	unlock()
	eventually(t, "clear once the applier resumes", 15*time.Second, func() bool { return !d.IsThrottled() })
}

// A killed or frozen replica fails closed and is never dropped, although the
// primary unlists a killed one; it clears when the replica is back.
func TestIntegrationDiscoveryDeadReplica(t *testing.T) {
	for _, fault := range []string{"kill", "freeze"} {
		t.Run(fault, func(t *testing.T) {
			p, first, second := twoReplicas(t)
			writer(t, p)
			d := openDiscovery(t, p, throttler.DiscoveryConfig{}, 2*time.Second)
			require.False(t, d.IsThrottled(), d.ThrottleReason())

			if fault == "kill" {
				require.NoError(t, second.Kill())
			} else {
				require.NoError(t, second.Freeze())
			}
			named := second.Addr() + " (server_id 3"
			eventually(t, "fails closed naming the dead replica", 5*time.Second, func() bool {
				return strings.HasPrefix(d.ThrottleReason(), named)
			})
			assert.Contains(t, d.ThrottleReason(), "no lag measurement")
			if fault == "kill" {
				// The primary unlists it at its next write; rediscovery
				// keeps it, throttling.
				eventually(t, "unlisted by the primary, kept", 5*time.Second, func() bool {
					return strings.Contains(d.ThrottleReason(), "no longer listed by the primary")
				})
				time.Sleep(3 * discoveryEvery)
			}
			t.Logf("reason: %s", d.ThrottleReason())
			assert.True(t, d.IsThrottled())
			assert.Equal(t, sortedAddrs(first, second), d.Replicas(), "never dropped while it cannot be seen")
			assert.NotContains(t, d.ThrottleReason(), first.Addr())

			if fault == "kill" {
				require.NoError(t, second.Restart(ctxTimeout(t, 30*time.Second)))
			} else {
				require.NoError(t, second.Thaw())
			}
			eventually(t, "clear once the replica is back", 15*time.Second, func() bool { return !d.IsThrottled() })
			assert.Equal(t, sortedAddrs(first, second), d.Replicas())
		})
	}
}

// A DSN that does not work for a replica makes it a failed member: listed,
// throttling, named in the reason, never skipped.
func TestIntegrationDiscoveryBadDSN(t *testing.T) {
	p, first, second := twoReplicas(t)
	for name, tc := range map[string]struct{ template, want string }{
		"wrong password": {
			template: testenv.MonitorUser + `:{{if eq .ServerID 3}}wrong{{else}}` + p.MonitorPassword + `{{end}}@tcp({{.Host}}:{{.Port}})/?timeout=2s`,
			want:     "Access denied",
		},
		"wrong port": {
			template: testenv.MonitorUser + ":" + p.MonitorPassword + `@tcp({{.Host}}:{{if eq .ServerID 3}}1{{else}}{{.Port}}{{end}})/?timeout=2s`,
			want:     "connection refused",
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := openDiscovery(t, p, throttler.DiscoveryConfig{DSNTemplate: tc.template}, 2*time.Second)
			assert.Equal(t, sortedAddrs(first, second), d.Replicas(), "not skipped")
			assert.True(t, d.IsThrottled(), "fail closed")
			reason := d.ThrottleReason()
			t.Logf("reason: %s", reason)
			assert.True(t, strings.HasPrefix(reason, second.Addr()+" (server_id 3): cannot be watched: "), reason)
			assert.Contains(t, reason, tc.want)
			assert.NotContains(t, reason, first.Addr())
			err := d.UpdateLag(ctxTimeout(t, 5*time.Second))
			require.Error(t, err)
			assert.Contains(t, err.Error(), second.Addr())
		})
	}
}

// A replica that cannot be watched at Open (a missing grant) is retried and
// clears once the grant is back.
func TestIntegrationDiscoveryFailedMemberRecovers(t *testing.T) {
	p, _, second := twoReplicas(t)
	require.NoError(t, second.RevokeMonitorGrant(ctxTimeout(t, 10*time.Second)))
	d := openDiscovery(t, p, throttler.DiscoveryConfig{}, 2*time.Second)
	assert.True(t, d.IsThrottled())
	assert.Contains(t, d.ThrottleReason(), second.Addr()+" (server_id 3): cannot be watched")
	assert.Contains(t, d.ThrottleReason(), "SLAVE MONITOR", "the member's reason names the grant")
	t.Logf("reason: %s", d.ThrottleReason())

	waited := make(chan error, 1)
	go func() { waited <- d.Wait(context.Background()) }()
	require.NoError(t, second.RestoreMonitorGrant(ctxTimeout(t, 10*time.Second)))
	eventually(t, "clear once the grant is back", 10*time.Second, func() bool { return !d.IsThrottled() })
	select {
	case err := <-waited:
		assert.NoError(t, err, "a waiter wakes when the member can be watched")
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter is still blocked")
	}
}
