package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeSet is a replica set from NewReplicasThrottler of n replicas, r1..rn,
// each on its own *sql.DB of the fake driver with its own lag.
type fakeSet struct {
	m     *Multi
	fleet *discoFleet
	hosts []ReplicaHost
}

func newFakeSet(t *testing.T, n int, opts ...Option) *fakeSet {
	t.Helper()
	s := &fakeSet{fleet: newFleet()}
	dbs := map[string]*sql.DB{}
	for i := range n {
		h := ReplicaHost{ServerID: uint32(i + 2), Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 3306}
		db, err := s.fleet.open(fakeDSN(h))
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		s.hosts = append(s.hosts, h)
		dbs[fmt.Sprintf("r%d", i+1)] = db
	}
	var err error
	s.m, err = NewReplicasThrottler(dbs, time.Second, nil,
		append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour), WithMaxWait(0), WithLagSource(s.fleet)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.m.Close() })
	return s
}

// lag sets replica i's lag (0-based: r<i+1>) and measures it, once open.
func (s *fakeSet) lag(i int, d time.Duration) {
	s.fleet.set(s.hosts[i], lagOf(d), nil)
	_ = s.m.children[i].UpdateLag(context.Background())
}

func TestWithTolerateMembersIsForReplicaSets(t *testing.T) {
	_, err := NewReplicasThrottler(map[string]*sql.DB{"a": fakeDB, "b": fakeDB}, time.Second, nil, WithTolerateMembers(-1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithTolerateMembers(-1): the number of members tolerated must not be negative")
	assert.Equal(t, 1, strings.Count(err.Error(), "WithTolerateMembers"), "said once, for the set, not once per replica: %v", err)

	_, err = NewReplicasThrottler(map[string]*sql.DB{"a": fakeDB, "b": fakeDB}, time.Second, nil, WithTolerateMembers(2))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithTolerateMembers(2) tolerates every one of the 2 replicas")

	m, err := NewReplicasThrottler(map[string]*sql.DB{"a": fakeDB, "b": fakeDB}, time.Second, nil, WithTolerateMembers(1))
	require.NoError(t, err, "the replicas are built without it: they would reject it")
	assert.Equal(t, 1, m.rule.tolerate)

	_, err = NewReplicationThrottler(fakeDB, time.Second, nil, WithTolerateMembers(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithTolerateMembers does not apply to")
	_, err = NewLoad(fakeDB, LoadConfig{Threshold: 10}, nil, WithTolerateMembers(1))
	assert.ErrorContains(t, err, "WithTolerateMembers does not apply to")

	cfg := DiscoveryConfig{DSNTemplate: "u:p@tcp({{.Host}}:{{.Port}})/"}
	_, err = NewDiscovery(fakeDB, time.Second, cfg, nil, WithTolerateMembers(-2))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithTolerateMembers(-2)")
	d, err := NewDiscovery(fakeDB, time.Second, cfg, nil, WithTolerateMembers(5))
	require.NoError(t, err, "a Discovery cannot know its size before Open")
	assert.Equal(t, 5, d.rule.tolerate)
}

// TestReplicasTolerateMembers: tolerating one, the set throttles only while
// two replicas do; while one does, it is clear and Stats names it; waiters
// wake once the count is back to one.
func TestReplicasTolerateMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var changes changeLog
		s := newFakeSet(t, 3, WithTolerateMembers(1), WithOnChange(changes.add))
		m := s.m
		require.NoError(t, m.Open(ctx))

		s.lag(1, time.Minute)
		assert.False(t, m.IsThrottled(), "one lagging replica is tolerated")
		assert.Empty(t, m.ThrottleReason())
		st := m.Stats()
		assert.False(t, st.Throttled)
		assert.Empty(t, st.Reason)
		assert.Equal(t, []string{"r2: replica lag 1m0s >= 1s"}, st.Tolerated)
		assert.True(t, returned(contractWaiters(ctx, m, 5)))
		require.NoError(t, m.Wait(ctx))

		s.lag(2, 2*time.Minute)
		require.True(t, m.IsThrottled())
		want := "r2: replica lag 1m0s >= 1s; r3: replica lag 2m0s >= 1s"
		assert.Equal(t, want, m.ThrottleReason())
		st = m.Stats()
		assert.Equal(t, want, st.Reason)
		assert.Nil(t, st.Tolerated, "throttled: the reason names them all")

		done := contractWaiters(ctx, m, 20)
		require.False(t, returned(done))
		s.lag(1, 0)
		assert.True(t, returned(done), "back to one lagging replica: every waiter woken")
		assert.False(t, m.IsThrottled())
		assert.Equal(t, []string{"r3: replica lag 2m0s >= 1s"}, m.Stats().Tolerated)

		s.lag(2, 0)
		assert.Nil(t, m.Stats().Tolerated)
		assert.Equal(t, []bool{true, false}, changes.throttled(), "a tolerated replica is no change of the set")
	})
}

// TestReplicasTolerateMembersMaxWait: the replicas' cap still ends a wait
// while more than the tolerated replicas throttle.
func TestReplicasTolerateMembersMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newFakeSet(t, 3, WithTolerateMembers(1), WithMaxWait(time.Second))
		require.NoError(t, s.m.Open(context.Background()))
		s.lag(0, time.Minute)
		s.lag(1, time.Minute)
		start := time.Now()
		err := s.m.Wait(context.Background())
		assert.ErrorIs(t, err, ErrMaxWait)
		assert.ErrorContains(t, err, "r1: replica lag 1m0s >= 1s; r2: replica lag 1m0s >= 1s")
		assert.InDelta(t, time.Second, time.Since(start), float64(10*time.Millisecond))
	})
}

// TestMultiSkip: a skipped child counts no more, at once (waking the
// waiters), is still measured, and counts again by itself exactly when its
// skip ends.
func TestMultiSkip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var changes changeLog
		s := newFakeSet(t, 2, WithOnChange(changes.add))
		m := s.m
		require.NoError(t, m.Open(ctx))
		s.lag(0, time.Minute)
		require.True(t, m.IsThrottled())
		done := contractWaiters(ctx, m, 20)
		require.False(t, returned(done))

		for _, d := range []time.Duration{0, -time.Second, 7*24*time.Hour + 1} {
			err := m.Skip("r1", d)
			assert.ErrorIs(t, err, ErrInvalidConfig, "%v", d)
			assert.ErrorContains(t, err, fmt.Sprintf(`Skip("r1", %v)`, d))
		}
		err := m.Skip("r9", time.Minute)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, `no child named "r9" (the children are r1, r2)`)
		assert.ErrorIs(t, m.Unskip("r9"), ErrInvalidConfig)
		assert.True(t, m.IsThrottled(), "bad input changes nothing")
		assert.Nil(t, m.Stats().Skipped)

		require.NoError(t, m.Skip("r1", time.Hour))
		until := time.Now().Add(time.Hour)
		assert.True(t, returned(done), "the skip wakes every waiter")
		assert.False(t, m.IsThrottled())
		assert.Empty(t, m.ThrottleReason())
		st := m.Stats()
		assert.Equal(t, []string{"r1 (until " + until.Format(time.RFC3339) + ")"}, st.Skipped)
		assert.Nil(t, st.Tolerated, "a skipped child is not tolerated either")

		s.lag(0, 2*time.Minute) // still measured while skipped
		assert.True(t, m.children[0].IsThrottled())
		assert.False(t, m.IsThrottled())
		s.lag(1, time.Minute)
		assert.Equal(t, "r2: replica lag 1m0s >= 1s", m.ThrottleReason(), "the others count")
		s.lag(1, 0)

		done = contractWaiters(ctx, m, 5)
		assert.True(t, returned(done))
		sleepWait(time.Hour - time.Nanosecond)
		assert.False(t, m.IsThrottled(), "not before the skip ends")
		sleepWait(time.Nanosecond)
		assert.True(t, m.IsThrottled(), "back by itself when the skip ends")
		assert.Equal(t, "r1: replica lag 2m0s >= 1s", m.ThrottleReason(), "as last measured")
		assert.Nil(t, m.Stats().Skipped)

		require.NoError(t, m.Skip("r1", time.Minute))
		require.NoError(t, m.Skip("r1", time.Hour))
		sleepWait(2 * time.Minute)
		assert.False(t, m.IsThrottled(), "a second Skip sets a new end")
		require.NoError(t, m.Unskip("r1"))
		assert.True(t, m.IsThrottled(), "Unskip counts it again now")
		done = contractWaiters(ctx, m, 5)
		assert.False(t, returned(done))
		require.NoError(t, m.Unskip("r1"), "not skipped: nothing to do")
		sleepWait(time.Hour)
		assert.True(t, m.IsThrottled(), "the ended skip's timer changes nothing")

		require.NoError(t, m.Close())
		assert.True(t, returned(done))
		assert.ErrorIs(t, m.Skip("r1", time.Minute), ErrClosed)
		assert.Nil(t, m.Stats().Skipped)
		// throttled (Open), clear (skip), throttled and clear (r2),
		// throttled (its end), clear (the second skip), throttled
		// (Unskip), released.
		assert.Equal(t, []bool{true, false, true, false, true, false, true, false}, changes.throttled())
	})
}

// TestMultiSkipBeforeOpen: the skip's time counts before Open.
func TestMultiSkipBeforeOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newFakeSet(t, 2)
		require.NoError(t, s.m.Skip("r2", time.Hour))
		sleepWait(30 * time.Minute)
		s.fleet.set(s.hosts[1], lagOf(time.Minute), nil)
		require.NoError(t, s.m.Open(context.Background()))
		assert.False(t, s.m.IsThrottled())
		sleepWait(30 * time.Minute)
		assert.True(t, s.m.IsThrottled())
	})
}

// TestSkipAndTolerate: a skipped member is not one of the tolerated.
func TestSkipAndTolerate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newFakeSet(t, 3, WithTolerateMembers(1))
		require.NoError(t, s.m.Open(context.Background()))
		s.lag(0, time.Minute)
		s.lag(1, time.Minute)
		require.True(t, s.m.IsThrottled())
		require.NoError(t, s.m.Skip("r1", time.Hour))
		assert.False(t, s.m.IsThrottled())
		st := s.m.Stats()
		assert.Equal(t, []string{"r2: replica lag 1m0s >= 1s"}, st.Tolerated)
		assert.Len(t, st.Skipped, 1)
	})
}

func TestReplicaSetHotPathDoesNotAllocate(t *testing.T) {
	s := newFakeSet(t, 3, WithTolerateMembers(1))
	ctx := context.Background()
	require.NoError(t, s.m.Open(ctx))
	s.lag(0, time.Minute)
	require.NoError(t, s.m.Skip("r2", time.Hour))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = s.m.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { s.m.BlockWait(ctx) }))
}

func TestMultiOnlyRejectsBadNames(t *testing.T) {
	m, _ := newFakeMulti(t, 2)
	for _, c := range []struct {
		names []string
		want  string
	}{
		{nil, "no child named"},
		{[]string{"r1", "load"}, `no child named "load" (the children are r1, r2)`},
		{[]string{"r2", "r2"}, `"r2" named twice`},
	} {
		v, err := m.Only(c.names...)
		assert.Nil(t, v)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, c.want)
	}
	_, err := NewMulti(nil).Only("throttler 1")
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

// TestMultiOnly: a view waits on its children only, opens and closes none
// of them, measures only them, shares the Multi's skips, and is released
// with the Multi.
func TestMultiOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m, srcs := newFakeMulti(t, 3, WithMaxWait(0))
		v, err := m.Only("r3", "r1")
		require.NoError(t, err)
		assert.Equal(t, []string{"r1", "r3"}, v.names, "the Multi's order")
		require.NoError(t, v.Open(ctx), "before the Multi: nothing is open, nothing throttles")
		assert.False(t, v.IsThrottled())
		require.NoError(t, m.Open(ctx))

		setLag(t, m, srcs, 1, time.Minute) // r2: not in the view
		assert.True(t, m.IsThrottled())
		assert.False(t, v.IsThrottled())
		setLag(t, m, srcs, 2, time.Minute)
		assert.Equal(t, "r3: replica lag 1m0s >= 1s", v.ThrottleReason())

		r2 := m.children[1].(*Replication)
		before := r2.Stats().Measurements
		require.NoError(t, v.UpdateLag(ctx))
		assert.Equal(t, before, r2.Stats().Measurements, "the view measures its children only")

		require.NoError(t, m.Skip("r3", time.Hour))
		assert.False(t, v.IsThrottled(), "the Multi's skips are the view's")
		require.NoError(t, v.Unskip("r3"))
		assert.True(t, m.IsThrottled())
		assert.True(t, v.IsThrottled())

		require.NoError(t, v.Close())
		assert.False(t, v.IsThrottled())
		assert.True(t, m.IsThrottled(), "closing the view closes nothing else")
		require.NoError(t, m.children[2].UpdateLag(ctx), "its children stay open")

		w, err := m.Only("r3")
		require.NoError(t, err)
		require.NoError(t, w.Open(ctx))
		require.True(t, w.IsThrottled())
		done := contractWaiters(ctx, w, 10)
		require.False(t, returned(done))
		require.NoError(t, m.Close())
		assert.True(t, returned(done), "the Multi's release is the view's")
		assert.False(t, w.IsThrottled())
		assert.ErrorIs(t, w.Wait(ctx), ErrClosed)
		assert.ErrorIs(t, w.UpdateLag(ctx), ErrClosed)
		assert.True(t, w.Stats().Released)
		require.NoError(t, w.Close())

		x, err := m.Only("r1")
		require.NoError(t, err)
		assert.ErrorIs(t, x.Open(ctx), ErrClosed, "a view of a released Multi")
	})
}

// TestDiscoveryTolerateMembers: a Discovery tolerating one member counts a
// member that cannot be watched like a lagging one; its stale replica list
// is never tolerated.
func TestDiscoveryTolerateMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFleet(hostA, hostB, hostC)
		f.setOpenErr(hostC, errors.New("connection refused"))
		d := newDisco(t, f, nil, nil, WithTolerateMembers(1), WithMaxWait(0))
		require.NoError(t, d.Open(ctx))
		defer d.Close()
		failed := "10.0.0.3:3306 (server_id 4): cannot be watched: open its *sql.DB: connection refused"
		assert.False(t, d.IsThrottled(), "one member that cannot be watched is tolerated")
		assert.Empty(t, d.ThrottleReason())
		assert.Equal(t, []string{failed}, d.Stats().Tolerated)

		f.set(hostA, lagOf(time.Minute), nil)
		update(t, d)
		require.True(t, d.IsThrottled())
		assert.Equal(t, "10.0.0.1:3306 (server_id 2): replica lag 1m0s >= 1s; "+failed, d.ThrottleReason())
		assert.Equal(t, d.ThrottleReason(), d.Stats().Reason)
		assert.Nil(t, d.Stats().Tolerated)
		done := contractWaiters(ctx, d, 10)
		require.False(t, returned(done))
		f.set(hostA, lagOf(0), nil)
		update(t, d)
		assert.True(t, returned(done))
		assert.False(t, d.IsThrottled())

		f.setListErr(errBoom)
		sleepWait(3 * time.Hour) // three failed listings, on the monitor's hourly tick
		assert.True(t, d.IsThrottled(), "a stale replica list is never tolerated")
		assert.Contains(t, d.ThrottleReason(), "the primary could not be asked for its replicas")
		require.NoError(t, d.Skip("10.0.0.3:3306", time.Hour))
		assert.True(t, d.IsThrottled(), "nor skipped")
	})
}

// TestDiscoverySkip: a skipped member counts no more, at once, and again by
// itself when its skip ends.
func TestDiscoverySkip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFleet(hostA, hostB)
		d := newDisco(t, f, nil, nil, WithMaxWait(0))
		defer d.Close()
		assert.ErrorIs(t, d.Skip("10.0.0.1:3306", time.Minute), ErrNotOpen, "no members before Open")
		require.NoError(t, d.Open(ctx))
		f.set(hostA, lagOf(time.Minute), nil)
		update(t, d)
		require.True(t, d.IsThrottled())
		done := contractWaiters(ctx, d, 10)
		require.False(t, returned(done))

		err := d.Skip("10.0.0.9:3306", time.Minute)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, `no member named "10.0.0.9:3306" (the members are 10.0.0.1:3306, 10.0.0.2:3306)`)
		assert.ErrorIs(t, d.Skip("10.0.0.1:3306", 8*24*time.Hour), ErrInvalidConfig)
		assert.True(t, d.IsThrottled())

		require.NoError(t, d.Skip("10.0.0.1:3306", time.Hour))
		until := time.Now().Add(time.Hour)
		assert.True(t, returned(done), "the skip wakes every waiter")
		assert.False(t, d.IsThrottled())
		assert.Empty(t, d.ThrottleReason())
		assert.Equal(t, []string{"10.0.0.1:3306 (until " + until.Format(time.RFC3339) + ")"}, d.Stats().Skipped)

		f.set(hostB, lagOf(time.Minute), nil)
		update(t, d)
		assert.Equal(t, "10.0.0.2:3306 (server_id 3): replica lag 1m0s >= 1s", d.ThrottleReason(), "the others count")
		f.set(hostB, lagOf(0), nil)
		update(t, d)

		sleepWait(time.Hour - time.Nanosecond)
		assert.False(t, d.IsThrottled())
		sleepWait(time.Nanosecond)
		assert.True(t, d.IsThrottled(), "back by itself when the skip ends")
		assert.Nil(t, d.Stats().Skipped)

		require.NoError(t, d.Skip("10.0.0.1:3306", time.Hour))
		require.NoError(t, d.Unskip("10.0.0.1:3306"))
		assert.True(t, d.IsThrottled())
		require.NoError(t, d.Close())
		assert.ErrorIs(t, d.Skip("10.0.0.1:3306", time.Minute), ErrClosed)
	})
}

// TestDiscoverySkipAfterARetriedOpen: a failed Open releases the
// Discovery, not its skips for good: the retry's members can be skipped.
func TestDiscoverySkipAfterARetriedOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(hostA)
		d := newDisco(t, f, nil, nil)
		defer d.Close()
		f.setListErr(errBoom)
		require.ErrorIs(t, d.Open(context.Background()), errBoom)
		f.setListErr(nil)
		require.NoError(t, d.Open(context.Background()))
		require.NoError(t, d.Skip("10.0.0.1:3306", time.Minute))
		assert.Len(t, d.Stats().Skipped, 1)
	})
}
