package mysql8test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
)

// A Group Replication member as MySQL 8.0 shows it (the reference manual's
// descriptions of the GR tables and channels): the group_replication_applier
// channel's receiver is ON while the member belongs to a group, is fed by
// the group communication layer (no source, so no heartbeat: its
// LAST_HEARTBEAT_TIMESTAMP stays the zero date), and carries GTIDs of the
// group's UUID; group_replication_recovery is ON only during distributed
// recovery and OFF on every ONLINE member. Each member has one row of
// replication_group_members and of replication_group_member_stats per group
// member, with MEMBER_ID its @@server_uuid.

const (
	groupUUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	peerUUID  = "9b1c2d3e-4f50-11ef-8293-a4b5c6d7e8f9"
	applierCh = "group_replication_applier"
	recoverCh = "group_replication_recovery"
)

func groupGTID(n int) string { return fmt.Sprintf("%s:%d", groupUUID, n) }

// groupApplier is the applier channel's receiver: the last transaction the
// group delivered, trx, committed on its originating member at commit; no
// heartbeat ever.
func groupApplier(trx string, commit time.Time) Connection {
	c := receiver(applierCh, trx, commit, time.Time{})
	c.GroupName, c.SourceUUID = groupUUID, groupUUID
	return c
}

// groupRecovery is the recovery channel: OFF (ONLINE member) or ON
// (RECOVERING, fetching from a donor).
func groupRecovery(state string) (Connection, Worker) {
	c := Connection{Channel: recoverCh, GroupName: groupUUID, ServiceState: state}
	return c, Worker{Channel: recoverCh, WorkerID: 0, ServiceState: state}
}

// groupState is what one member's tables hold besides the channels.
type groupState struct {
	state, role           string
	applierQueue, inQueue uint64
	applied               uint64
}

// writeGroup writes the member rows: this member (e.ServerUUID) with st, and
// an ONLINE primary peer.
func writeGroup(t *testing.T, e *Emulator, st groupState) {
	t.Helper()
	e.InsertGroupMember(t, GroupMember{MemberID: peerUUID, Host: "db1", Port: 3306, State: "ONLINE", Role: "PRIMARY"})
	e.InsertGroupMember(t, GroupMember{MemberID: e.ServerUUID, Host: "db2", Port: 3306, State: st.state, Role: st.role})
	for _, id := range []string{peerUUID, e.ServerUUID} {
		s := GroupMemberStats{ViewID: "17244051234567890:3", MemberID: id, CommittedAllMembers: groupUUID + ":1-100"}
		if id == e.ServerUUID {
			s.InQueue, s.RemoteInApplierQueue, s.RemoteApplied = st.inQueue, st.applierQueue, st.applied
		} else {
			s.RemoteInApplierQueue = 77 // a peer's queue: not this member's
		}
		e.InsertGroupMemberStats(t, s)
	}
	e.SetGlobalVariable(t, "group_replication_flow_control_mode", "QUOTA")
	e.SetGlobalVariable(t, "group_replication_flow_control_applier_threshold", "25000")
	e.SetGlobalVariable(t, "group_replication_flow_control_certifier_threshold", "25000")
}

// writeChannels returns a function that writes a member's channel rows to e,
// to be called with the rows a scenario returns.
func writeChannels(t *testing.T, e *Emulator) func([]Connection, []Worker) {
	return func(conns []Connection, workers []Worker) {
		t.Helper()
		for _, c := range conns {
			e.InsertConnection(t, c)
		}
		for _, w := range workers {
			e.InsertWorker(t, w)
		}
	}
}

type groupScenario struct {
	name  string
	state groupState
	rows  func(now time.Time) ([]Connection, []Worker)

	lag        time.Duration
	channel    string
	notFlowing []string
}

// onlineMember is an ONLINE secondary's channels: the applier's, with
// workers, and the recovery channel OFF.
func onlineMember(applier Connection, workers ...Worker) ([]Connection, []Worker) {
	rc, rw := groupRecovery("OFF")
	return []Connection{applier, rc}, append(workers, rw)
}

// idleMember is an ONLINE member of a group that last wrote 10 minutes ago.
func idleMember(now time.Time) ([]Connection, []Worker) {
	last := now.Add(-10 * time.Minute)
	return onlineMember(groupApplier(groupGTID(5000), last),
		worker(applierCh, 1, groupGTID(5000), last),
		worker(applierCh, 2, groupGTID(4999), last.Add(-time.Second)),
		worker(applierCh, 3, "", time.Time{}), worker(applierCh, 4, "", time.Time{}))
}

func groupScenarios() []groupScenario {
	online := groupState{state: "ONLINE", role: "SECONDARY", applied: 5000}
	return []groupScenario{
		{
			name:    "idle member: recovery channel OFF, no heartbeat, last transaction 10 minutes ago",
			state:   online,
			rows:    idleMember,
			channel: applierCh,
		},
		{
			name:  "busy member: applying the group's last transaction, committed 20ms ago",
			state: groupState{state: "ONLINE", role: "SECONDARY", applierQueue: 1, applied: 9000},
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-20 * time.Millisecond)
				return onlineMember(groupApplier(groupGTID(9001), commit),
					worker(applierCh, 1, groupGTID(9000), now.Add(-25*time.Millisecond)).applying(groupGTID(9001), commit, now.Add(-5*time.Millisecond)),
					worker(applierCh, 2, groupGTID(8999), now.Add(-30*time.Millisecond)))
			},
			lag:     20 * time.Millisecond,
			channel: applierCh,
		},
		{
			name:  "member 30s behind: applying a transaction committed 30s ago, thousands queued",
			state: groupState{state: "ONLINE", role: "SECONDARY", applierQueue: 4000, applied: 60000},
			rows: func(now time.Time) ([]Connection, []Worker) {
				commit := now.Add(-30 * time.Second)
				return onlineMember(groupApplier(groupGTID(64000), now.Add(-10*time.Millisecond)),
					worker(applierCh, 1, groupGTID(60000), commit).applying(groupGTID(60001), commit, now.Add(-time.Millisecond)),
					worker(applierCh, 2, groupGTID(59999), commit.Add(-time.Millisecond)).applying(groupGTID(60002), commit, now.Add(-time.Millisecond)))
			},
			lag:     30 * time.Second,
			channel: applierCh,
		},
		{
			name:  "RECOVERING: distributed recovery from a donor on the recovery channel",
			state: groupState{state: "RECOVERING", role: "SECONDARY"},
			rows: func(now time.Time) ([]Connection, []Worker) {
				rc, rw := groupRecovery("ON")
				rc.LastHeartbeat = now.Add(-time.Second)
				a := groupApplier("", time.Time{})
				return []Connection{a, rc}, []Worker{worker(applierCh, 1, "", time.Time{}), rw}
			},
			channel:    applierCh,
			notFlowing: []string{"RECOVERING"},
		},
		{
			name:  "ERROR: the member's applier failed",
			state: groupState{state: "ERROR", role: "SECONDARY"},
			rows: func(now time.Time) ([]Connection, []Worker) {
				last := now.Add(-time.Minute)
				a := groupApplier(groupGTID(700), last)
				a.ServiceState = "OFF"
				rc, rw := groupRecovery("OFF")
				return []Connection{a, rc}, []Worker{worker(applierCh, 1, groupGTID(699), last).stopped(1062, "Duplicate entry", now.Add(-50*time.Second)), rw}
			},
			channel:    applierCh,
			notFlowing: []string{"ERROR"},
		},
		{
			name:       "OFFLINE: STOP GROUP_REPLICATION",
			state:      groupState{state: "OFFLINE", role: ""},
			rows:       idleMember,
			channel:    applierCh,
			notFlowing: []string{"OFFLINE"},
		},
		{
			name:       "UNREACHABLE: this member lost contact with the group",
			state:      groupState{state: "UNREACHABLE", role: "SECONDARY"},
			rows:       idleMember,
			channel:    applierCh,
			notFlowing: []string{"UNREACHABLE"},
		},
		{
			name:  "member that is also a replica of an outside source, 5s behind there",
			state: groupState{state: "ONLINE", role: "PRIMARY", applied: 5000},
			rows: func(now time.Time) ([]Connection, []Worker) {
				conns, workers := idleMember(now)
				commit := now.Add(-5 * time.Second)
				conns = append(conns, receiver("from_dc1", gtid(101), commit, now.Add(-100*time.Second)))
				workers = append(workers, worker("from_dc1", 1, gtid(100), commit.Add(-time.Second)).applying(gtid(101), commit, commit.Add(time.Millisecond)))
				return conns, workers
			},
			lag:     5 * time.Second,
			channel: "from_dc1",
		},
		{
			name:  "member that is also a replica of an outside source, whose receiver is stopped",
			state: online,
			rows: func(now time.Time) ([]Connection, []Worker) {
				conns, workers := idleMember(now)
				last := now.Add(-time.Minute)
				conns = append(conns, stoppedReceiver("from_dc1", gtid(100), last, last))
				workers = append(workers, worker("from_dc1", 1, gtid(100), last))
				return conns, workers
			},
			channel:    "from_dc1",
			notFlowing: []string{"receiver (IO) thread OFF"},
		},
	}
}

// TestGroupReplicationScenarios runs PerformanceSchemaSource().Measure on
// emulated Group Replication members.
func TestGroupReplicationScenarios(t *testing.T) {
	for _, sc := range groupScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			now := time.Now()
			e := Start(t)
			writeChannels(t, e)(sc.rows(now))
			writeGroup(t, e, sc.state)
			db := e.Open(t, "parseTime=true")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m, err := throttler.PerformanceSchemaSource().Measure(ctx, db)
			elapsed := time.Since(now)
			require.NoError(t, err)

			require.NotNil(t, m.GroupReplication)
			assert.Equal(t, sc.state.state, m.GroupReplication.MemberState)
			assert.Equal(t, sc.state.role, m.GroupReplication.MemberRole)
			assert.Equal(t, int64(sc.state.applierQueue), m.GroupReplication.ApplierQueue, "this member's queue, not a peer's")
			assert.Equal(t, int64(sc.state.inQueue), m.GroupReplication.CertificationQueue)
			assert.Equal(t, throttler.GroupFlowControl{Mode: "QUOTA", ApplierThreshold: 25000, CertifierThreshold: 25000, ThrottledSessions: -1},
				m.GroupReplication.FlowControl)
			assert.Equal(t, sc.channel, m.Channel)
			if len(sc.notFlowing) > 0 {
				for _, s := range sc.notFlowing {
					assert.Contains(t, m.NotFlowing, s)
				}
				return
			}
			assert.Empty(t, m.NotFlowing)
			assertLag(t, m.Lag, sc.lag, elapsed, "")
		})
	}
}

// TestGroupReplicationMemberNotInGroup: the channels exist, but this server
// has no row in replication_group_members.
func TestGroupReplicationMemberNotInGroup(t *testing.T) {
	e := Start(t)
	writeChannels(t, e)(idleMember(time.Now()))
	e.InsertGroupMember(t, GroupMember{MemberID: peerUUID, State: "ONLINE", Role: "PRIMARY"})
	m, err := throttler.PerformanceSchemaSource().Measure(context.Background(), e.Open(t, ""))
	require.NoError(t, err)
	assert.Contains(t, m.NotFlowing, "Group Replication is not running")
	assert.Equal(t, "", m.GroupReplication.MemberState)
}

// TestGroupReplicationFlowControl: the member's queue over the flow control
// threshold, and the statistics component's status variable, are reported.
func TestGroupReplicationFlowControl(t *testing.T) {
	e := Start(t)
	writeChannels(t, e)(idleMember(time.Now()))
	writeGroup(t, e, groupState{state: "ONLINE", role: "SECONDARY", inQueue: 30000})
	e.SetGlobalStatus(t, "Gr_flow_control_throttle_active_count", "3")
	m, err := throttler.PerformanceSchemaSource().Measure(context.Background(), e.Open(t, ""))
	require.NoError(t, err)
	assert.Equal(t, throttler.GroupFlowControl{Mode: "QUOTA", ApplierThreshold: 25000, CertifierThreshold: 25000, Triggered: true, ThrottledSessions: 3},
		m.GroupReplication.FlowControl)
}

// TestGroupReplicationThrottler drives a throttler that chose its source
// itself (no WithLagSource) on an idle ONLINE member, then grows its applier
// queue past WithGroupApplierQueueLimit, then takes it out of the group.
func TestGroupReplicationThrottler(t *testing.T) {
	e := Start(t)
	writeChannels(t, e)(idleMember(time.Now()))
	writeGroup(t, e, groupState{state: "ONLINE", role: "SECONDARY", applied: 5000})
	db := e.Open(t, "parseTime=true")

	thr, err := throttler.NewReplicationThrottler(db, 5*time.Second, nil,
		throttler.WithInterval(20*time.Millisecond), throttler.WithStaleAfter(5*time.Second),
		throttler.WithQueryTimeout(2*time.Second), throttler.WithGroupApplierQueueLimit(1000))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, thr.Open(ctx))
	defer thr.Close()
	assert.Equal(t, throttler.PerformanceSchemaSource().String(), thr.Source().String())
	assert.False(t, thr.IsThrottled(), thr.ThrottleReason())
	m, _, ok := thr.LastMeasurement()
	require.True(t, ok)
	require.NotNil(t, m.GroupReplication)
	assert.Equal(t, "ONLINE", m.GroupReplication.MemberState)

	e.Exec(t, "UPDATE "+GroupMemberStatsTable+" SET COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE = 1500 WHERE MEMBER_ID = ?", e.ServerUUID)
	require.Eventually(t, func() bool {
		return thr.IsThrottled() && strings.Contains(thr.ThrottleReason(), "applier queue 1500 transactions >= 1000")
	}, 5*time.Second, 5*time.Millisecond, "last reason: %q", thr.ThrottleReason())

	e.Exec(t, "UPDATE "+GroupMemberStatsTable+" SET COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE = 0 WHERE MEMBER_ID = ?", e.ServerUUID)
	require.Eventually(t, func() bool { return !thr.IsThrottled() }, 5*time.Second, 5*time.Millisecond, "last reason: %q", thr.ThrottleReason())

	e.Exec(t, "UPDATE "+GroupMembersTable+" SET MEMBER_STATE = 'UNREACHABLE' WHERE MEMBER_ID = ?", e.ServerUUID)
	require.Eventually(t, func() bool {
		return thr.IsThrottled() && strings.Contains(thr.ThrottleReason(), `replication not flowing (channel "group_replication_applier"): Group Replication member is UNREACHABLE`)
	}, 5*time.Second, 5*time.Millisecond, "last reason: %q", thr.ThrottleReason())
	require.NoError(t, thr.Close())
}

// TestGroupReplicationWithChannels: the Group Replication channels are
// selected like any other. A RECOVERING member with a long applier queue
// that is also a replica of an outside source throttles by default; with
// WithChannels Only that source's channel, neither its state nor its queue
// (WithGroupApplierQueueLimit) counts, and both are still reported.
func TestGroupReplicationWithChannels(t *testing.T) {
	e := Start(t)
	now := time.Now()
	rc, rw := groupRecovery("ON")
	rc.LastHeartbeat = now.Add(-time.Second)
	commit := now.Add(-5 * time.Second)
	writeChannels(t, e)(
		[]Connection{groupApplier("", time.Time{}), rc, receiver("from_dc1", gtid(101), commit, now.Add(-time.Second))},
		[]Worker{worker(applierCh, 1, "", time.Time{}), rw,
			worker("from_dc1", 1, gtid(100), commit.Add(-time.Second)).applying(gtid(101), commit, commit.Add(time.Millisecond))})
	writeGroup(t, e, groupState{state: "RECOVERING", role: "SECONDARY", applierQueue: 5000})
	db := e.Open(t, "parseTime=true")
	measure := func(opts ...throttler.Option) (*throttler.Replication, throttler.Measurement) {
		t.Helper()
		opts = append(opts, throttler.WithInterval(time.Hour), throttler.WithQueryTimeout(2*time.Second),
			throttler.WithGroupApplierQueueLimit(1000))
		thr, err := throttler.NewReplicationThrottler(db, 10*time.Second, nil, opts...)
		require.NoError(t, err)
		require.NoError(t, thr.Open(context.Background()))
		t.Cleanup(func() { _ = thr.Close() })
		m, _, ok := thr.LastMeasurement()
		require.True(t, ok)
		return thr, m
	}

	thr, _ := measure()
	assert.True(t, thr.IsThrottled())
	assert.Contains(t, thr.ThrottleReason(), "Group Replication member is RECOVERING")

	thr, m := measure(throttler.WithChannels(throttler.Channels{Only: []string{"from_dc1"}}))
	assert.False(t, thr.IsThrottled(), thr.ThrottleReason())
	assert.Equal(t, "from_dc1", m.Channel)
	assert.InDelta(t, 5*time.Second, m.Lag, float64(time.Second))
	require.NotNil(t, m.GroupReplication)
	assert.Equal(t, "RECOVERING", m.GroupReplication.MemberState)
	assert.Equal(t, int64(5000), m.GroupReplication.ApplierQueue)
	require.Len(t, m.Channels, 3)
	for _, c := range m.Channels {
		if c.Name == "from_dc1" {
			assert.False(t, c.Ignored)
			continue
		}
		assert.True(t, c.Ignored, c.Name)
		assert.Contains(t, c.NotFlowing, "RECOVERING", c.Name)
	}
}
