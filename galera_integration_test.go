package throttler_test

// Integration tests: the Galera throttler on a real 3-node MariaDB Galera
// cluster that internal/testenv runs on loopback (`make test` starts it
// with the pair). Without it they skip and say how to run them, unless
// THROTTLER_TESTENV_REQUIRED=1.

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
	"github.com/throttlekit/throttler/internal/testenv"
)

// galeraITOptions: poll every 100ms, trust a reading for 1s; a frozen node's
// query gives up after 500ms.
var galeraITOptions = []throttler.Option{
	throttler.WithInterval(100 * time.Millisecond),
	throttler.WithStaleAfter(time.Second),
	throttler.WithQueryTimeout(500 * time.Millisecond),
	throttler.WithMaxWait(0),
}

// galeraIT returns the cluster, healthy, and one open throttler per node
// (index i watches node i+1), watching with the monitoring user as in
// production.
func galeraIT(t *testing.T, cfg throttler.GaleraConfig) (*testenv.Cluster, []*throttler.Galera) {
	t.Helper()
	p := testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := p.Galera(ctx)
	require.NoError(t, err)
	var ths []*throttler.Galera
	for _, n := range c.Nodes() {
		db, err := sql.Open("mysql", n.DSN())
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		g, err := throttler.NewGalera(db, cfg, nil, append(galeraITOptions, throttler.WithName(n.Name()))...)
		require.NoError(t, err)
		octx, ocancel := context.WithCancel(context.Background())
		t.Cleanup(ocancel)
		require.NoError(t, g.Open(octx), "%s", n.Name())
		t.Cleanup(func() { _ = g.Close() })
		ths = append(ths, g)
	}
	return c, ths
}

// galeraITReasons is every throttler's state, for failure messages.
func galeraITReasons(ths []*throttler.Galera) string {
	var b strings.Builder
	for i, g := range ths {
		st := g.Status()
		fmt.Fprintf(&b, "[node %d: %s queue %d fc %.0f%% reason %q] ", i+1, st.StateComment, st.RecvQueue, st.FlowControl*100, g.ThrottleReason())
	}
	return b.String()
}

// galeraITEventually waits up to d for cond, naming every throttler's state
// when it does not come.
func galeraITEventually(t *testing.T, ths []*throttler.Galera, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not %s: %s", d, what, galeraITReasons(ths))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func galeraITAllClear(ths []*throttler.Galera) func() bool {
	return func() bool {
		for _, g := range ths {
			if g.IsThrottled() {
				return false
			}
		}
		return true
	}
}

// TestGaleraHealthyClusterIsClear: three Synced nodes, idle or written to
// at an ordinary pace, read clear on every node.
func TestGaleraHealthyClusterIsClear(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{})
	db, err := sql.Open("mysql", c.Node(1).AdminDSN())
	require.NoError(t, err)
	defer db.Close()
	for i := range 20 {
		_, err := db.Exec("INSERT INTO "+testenv.GaleraTable+" (v) VALUES (?)", fmt.Sprint("healthy ", i))
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
		require.True(t, galeraITAllClear(ths)(), galeraITReasons(ths))
	}
	for i, g := range ths {
		st := g.Status()
		assert.EqualValues(t, 4, st.State, "node %d", i+1)
		assert.Equal(t, "Synced", st.StateComment)
		assert.True(t, st.Ready)
		assert.Equal(t, "Primary", st.Cluster)
		assert.True(t, st.FlowControlKnown, "readings every 100ms give a share")
		assert.Zero(t, st.FlowControl)
	}
}

// TestGaleraDesyncedNodeThrottles: wsrep_desync takes a node out of flow
// control; its throttler says so, the others stay clear, and it clears by
// itself once the node is back in sync.
func TestGaleraDesyncedNodeThrottles(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{})
	ctx := context.Background()
	require.NoError(t, c.Node(3).Desync(ctx, true))
	galeraITEventually(t, ths, 5*time.Second, "node 3 throttled", ths[2].IsThrottled)
	assert.Equal(t, "galera: node not synced (Donor/Desynced)", ths[2].ThrottleReason())
	assert.False(t, ths[0].IsThrottled(), galeraITReasons(ths))
	assert.False(t, ths[1].IsThrottled(), galeraITReasons(ths))

	require.NoError(t, c.Node(3).Desync(ctx, false))
	galeraITEventually(t, ths, 10*time.Second, "all clear after desync OFF", galeraITAllClear(ths))
}

// TestGaleraFlowControlThrottles: a node that cannot keep up (its applier
// does a full scan per row of a table without a key, and its gcs.fc_limit
// is 1) pauses the cluster with flow control; every node's throttler sees
// the pause, and all clear once the writer stops and the queues drain.
func TestGaleraFlowControlThrottles(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Node(3).SetFlowControlLimit(ctx, 1))
	stop, err := c.Node(1).StartCostlyWriter(ctx)
	require.NoError(t, err)
	defer stop()
	paused := func(g *throttler.Galera) func() bool {
		return func() bool { return strings.Contains(g.ThrottleReason(), "galera: flow control paused") }
	}
	galeraITEventually(t, ths, 15*time.Second, "node 3 throttled by flow control", paused(ths[2]))
	galeraITEventually(t, ths, 5*time.Second, "node 1, the writer, throttled by the cluster's flow control", paused(ths[0]))
	assert.Regexp(t, `^galera: flow control paused \d+% of the last \d+(\.\d+)?m?s >= 20%$`, ths[0].ThrottleReason())
	assert.Zero(t, ths[0].Status().RecvQueue, "the writer's own queue stays empty: the pause is the others' doing")
	stop()
	galeraITEventually(t, ths, 30*time.Second, "all clear once the writer stopped", galeraITAllClear(ths))
}

// TestGaleraRecvQueueThrottles: the same slow applier with the default flow
// control: the receive queues grow past a low threshold before flow
// control (at about 28 here) would pause anyone.
func TestGaleraRecvQueueThrottles(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{RecvQueue: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop, err := c.Node(1).StartCostlyWriter(ctx)
	require.NoError(t, err)
	defer stop()
	galeraITEventually(t, ths, 15*time.Second, "node 3 throttled by its receive queue", func() bool {
		return strings.HasPrefix(ths[2].ThrottleReason(), "galera: receive queue ")
	})
	assert.Regexp(t, `^galera: receive queue \d+ >= 2`, ths[2].ThrottleReason())
	stop()
	galeraITEventually(t, ths, 60*time.Second, "all clear once the queues drained", galeraITAllClear(ths))
}

// TestGaleraKilledNodeFailsClosedAndRejoins: a killed node's throttler
// fails closed, the others clear once the cluster has evicted it, and once
// it is restarted (it rejoins by IST) every throttler clears by itself.
func TestGaleraKilledNodeFailsClosedAndRejoins(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{})
	require.NoError(t, c.Node(3).Kill())
	galeraITEventually(t, ths, 5*time.Second, "node 3 throttled (fail closed)", ths[2].IsThrottled)
	assert.Contains(t, ths[2].ThrottleReason(), "no wsrep status reading for")
	galeraITEventually(t, ths, 15*time.Second, "nodes 1 and 2 clear without node 3", func() bool {
		return !ths[0].IsThrottled() && !ths[1].IsThrottled()
	})
	assert.True(t, ths[2].IsThrottled(), "still down: %s", ths[2].ThrottleReason())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Node(3).Restart(ctx))
	galeraITEventually(t, ths, 30*time.Second, "all clear after node 3 rejoined", galeraITAllClear(ths))
	assert.False(t, ths[2].Status().FlowControlKnown && ths[2].Status().FlowControl < 0)
}

// TestGaleraFrozenNodeFailsClosed: a frozen node answers nothing; its
// throttler throttles once its queries have timed out for the stale window,
// the others clear once the cluster has evicted it, and after the thaw and
// its rejoin every throttler is clear by itself. (Right after the thaw the
// node reports itself Synced for a few seconds before it notices it was
// evicted: a single node's status cannot tell; see Galera's doc.)
func TestGaleraFrozenNodeFailsClosed(t *testing.T) {
	c, ths := galeraIT(t, throttler.GaleraConfig{})
	require.NoError(t, c.Node(3).Freeze())
	defer func() { _ = c.Node(3).Thaw() }()
	galeraITEventually(t, ths, 5*time.Second, "node 3 throttled (frozen)", ths[2].IsThrottled)
	assert.Contains(t, ths[2].ThrottleReason(), "no wsrep status reading for")
	galeraITEventually(t, ths, 15*time.Second, "node 3 evicted, nodes 1 and 2 clear", func() bool {
		st, err := c.Node(1).WsrepStatus(context.Background())
		return err == nil && st["wsrep_cluster_size"] == "2" && !ths[0].IsThrottled() && !ths[1].IsThrottled()
	})
	require.True(t, ths[2].IsThrottled(), "still frozen")
	require.NoError(t, c.Node(3).Thaw())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.WaitHealthy(ctx), "the cluster is whole again")
	galeraITEventually(t, ths, 5*time.Second, "all clear after the rejoin", galeraITAllClear(ths))
}

// TestGaleraOpenOnANonGaleraServer: the pair's replica is MariaDB without
// wsrep: Open says so, as a configuration error.
func TestGaleraOpenOnANonGaleraServer(t *testing.T) {
	p := testenv.Require(t)
	db, err := sql.Open("mysql", p.Replica().DSN())
	require.NoError(t, err)
	defer db.Close()
	g, err := throttler.NewGalera(db, throttler.GaleraConfig{}, nil)
	require.NoError(t, err)
	defer g.Close()
	err = g.Open(context.Background())
	require.ErrorIs(t, err, throttler.ErrNotGalera)
	assert.ErrorIs(t, err, throttler.ErrInvalidConfig)
	assert.ErrorContains(t, err, "no wsrep provider is loaded")
	assert.False(t, g.IsThrottled())
}
