package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GroupReplicationStatus is what a Group Replication (InnoDB Cluster) member
// reports of itself: its row of performance_schema.replication_group_members
// and of replication_group_member_stats (MEMBER_ID = @@server_uuid), and the
// group's flow control settings.
type GroupReplicationStatus struct {
	// MemberState is ONLINE, RECOVERING, OFFLINE, ERROR or UNREACHABLE; ""
	// when this member has no row in replication_group_members.
	MemberState string
	// MemberRole is PRIMARY or SECONDARY ("" when unknown).
	MemberRole string
	// ApplierQueue is COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE: transactions
	// received from the group and certified, waiting to be applied. -1 when
	// unknown (no stats row).
	ApplierQueue int64
	// CertificationQueue is COUNT_TRANSACTIONS_IN_QUEUE: transactions waiting
	// for conflict detection. -1 when unknown.
	CertificationQueue int64
	// FlowControl is the group's flow control, as this member sees it.
	FlowControl GroupFlowControl
}

// GroupFlowControl is Group Replication's flow control: with mode QUOTA,
// the group holds back its writers while a member's applier or
// certification queue is over its threshold.
type GroupFlowControl struct {
	// Mode is group_replication_flow_control_mode: QUOTA, DISABLED, or ""
	// when unknown.
	Mode string
	// ApplierThreshold and CertifierThreshold are
	// group_replication_flow_control_applier_threshold and
	// _certifier_threshold (in transactions); 0 when unknown.
	ApplierThreshold, CertifierThreshold int64
	// Triggered says this member's applier or certification queue is over
	// its threshold with mode QUOTA: the group's writers are being slowed
	// down for this member.
	Triggered bool
	// ThrottledSessions is the status variable
	// Gr_flow_control_throttle_active_count (sessions being held back now),
	// which only servers with the flow-control statistics component have;
	// -1 elsewhere.
	ThrottledSessions int64
}

// The channels a Group Replication member has. The applier channel is fed
// by the group communication layer, not by a source server: it receives no
// heartbeats, and its receiver's state says nothing the member state does
// not. The recovery channel runs only during distributed recovery: it is
// OFF on every ONLINE member.
const (
	groupApplierChannel  = "group_replication_applier"
	groupRecoveryChannel = "group_replication_recovery"
)

func isGroupChannel(name string) bool {
	return strings.EqualFold(name, groupApplierChannel) || strings.EqualFold(name, groupRecoveryChannel)
}

// groupMember is this member's row of the Group Replication query; the
// fixtures under testdata/performance_schema record it as JSON ("group").
type groupMember struct {
	Found bool `json:"found"` // false: no row for @@server_uuid
	// State and Role are MEMBER_STATE and MEMBER_ROLE.
	State string `json:"state"`
	Role  string `json:"role"`
	// HasStats is false when replication_group_member_stats has no row for
	// this member; the counts are then meaningless.
	HasStats          bool   `json:"has_stats"`
	CertQueue         int64  `json:"cert_queue"`
	ApplierQueue      int64  `json:"applier_queue"`
	RemoteApplied     int64  `json:"remote_applied"`
	FlowMode          string `json:"flow_control_mode,omitempty"`
	FlowApplier       int64  `json:"flow_control_applier_threshold,omitempty"`
	FlowCertifier     int64  `json:"flow_control_certifier_threshold,omitempty"`
	ThrottledSessions int64  `json:"throttled_sessions"` // -1: the server lacks the status variable
}

// groupMemberQuery reads this member's state, queues and flow control in
// one round trip. It runs only on a server that has the Group Replication
// channels. The flow control variables are read from performance_schema's
// variable tables, where a variable the server lacks is no row (NULL here)
// rather than an error.
const groupMemberQuery = `SELECT m.MEMBER_STATE, m.MEMBER_ROLE, s.MEMBER_ID,
  s.COUNT_TRANSACTIONS_IN_QUEUE, s.COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE, s.COUNT_TRANSACTIONS_REMOTE_APPLIED,
  (SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_flow_control_mode'),
  (SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_flow_control_applier_threshold'),
  (SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_flow_control_certifier_threshold'),
  (SELECT VARIABLE_VALUE FROM performance_schema.global_status WHERE VARIABLE_NAME = 'Gr_flow_control_throttle_active_count')
FROM performance_schema.replication_group_members m
LEFT JOIN performance_schema.replication_group_member_stats s ON s.MEMBER_ID = m.MEMBER_ID
WHERE m.MEMBER_ID = @@server_uuid`

// readGroupMember runs groupMemberQuery. No row is a member that is not in
// the group's table (Found false), not an error.
func readGroupMember(ctx context.Context, db querier) (*groupMember, error) {
	var state, role, statsID, mode, applierT, certifierT, throttled sql.NullString
	var cert, applier, applied sql.NullString // BIGINT UNSIGNED: saturated below
	err := db.QueryRowContext(ctx, groupMemberQuery).Scan(&state, &role, &statsID,
		&cert, &applier, &applied, &mode, &applierT, &certifierT, &throttled)
	if errors.Is(err, sql.ErrNoRows) {
		return &groupMember{ThrottledSessions: -1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Group Replication member: %w", performanceSchemaError(err))
	}
	g := &groupMember{Found: true, State: state.String, Role: role.String, HasStats: statsID.Valid,
		FlowMode: mode.String, ThrottledSessions: -1}
	g.CertQueue, g.ApplierQueue, g.RemoteApplied = serverCount(cert), serverCount(applier), serverCount(applied)
	g.FlowApplier, g.FlowCertifier = serverCount(applierT), serverCount(certifierT)
	if throttled.Valid {
		g.ThrottledSessions = serverCount(throttled)
	}
	return g, nil
}

// serverCount parses an unsigned count the server sent as text: 0 when
// NULL or not a number, math.MaxInt64 when it does not fit (toward
// throttled).
func serverCount(s sql.NullString) int64 {
	if !s.Valid {
		return 0
	}
	v := strings.TrimSpace(s.String)
	if !allDigits(v) || v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return math.MaxInt64 // only digits: out of range
	}
	return n
}

// status is what the measurement reports of the member.
func (g *groupMember) status() *GroupReplicationStatus {
	s := &GroupReplicationStatus{MemberState: strings.ToUpper(g.State), MemberRole: strings.ToUpper(g.Role),
		ApplierQueue: -1, CertificationQueue: -1}
	s.FlowControl = GroupFlowControl{Mode: strings.ToUpper(g.FlowMode), ApplierThreshold: g.FlowApplier,
		CertifierThreshold: g.FlowCertifier, ThrottledSessions: g.ThrottledSessions}
	if g.HasStats {
		s.ApplierQueue, s.CertificationQueue = g.ApplierQueue, g.CertQueue
		fc := &s.FlowControl
		// Flow control acts on queues above the thresholds.
		fc.Triggered = fc.Mode == "QUOTA" &&
			(fc.ApplierThreshold > 0 && g.ApplierQueue > fc.ApplierThreshold ||
				fc.CertifierThreshold > 0 && g.CertQueue > fc.CertifierThreshold)
	}
	return s
}

// notFlowing says why a member that is not ONLINE does not replicate ("" when
// it is ONLINE). Only ONLINE members are "fully synchronized with the group,
// and participating in it" (the manual's Group Replication Server States).
func (g *groupMember) notFlowing() string {
	state := strings.ToUpper(g.State)
	switch {
	case !g.Found:
		return "Group Replication is not running: this member (@@server_uuid) is not in performance_schema.replication_group_members"
	case state == "ONLINE":
		return ""
	case state == "RECOVERING":
		return "Group Replication member is RECOVERING (distributed recovery: catching up with the group)"
	case state == "OFFLINE":
		return "Group Replication member is OFFLINE (not in a group)"
	case state == "ERROR":
		return "Group Replication member is in ERROR (not applying the group's transactions)"
	case state == "UNREACHABLE":
		return "Group Replication member is UNREACHABLE (the group cannot contact it)"
	}
	return fmt.Sprintf("Group Replication member state %q", g.State)
}

// groupBacklog is the applier channel's backlog from the member's stats: the
// applier queue, and the count of remote transactions applied as the counter
// that grows while the applier applies. GTID arithmetic does not fit this
// channel: its transactions come from several members, each numbering its
// own block of the group's GTIDs.
func (g *groupMember) backlog() (pending, applied int64, ok bool) {
	if g == nil || !g.Found || !g.HasStats {
		return 0, 0, false
	}
	return g.ApplierQueue, g.RemoteApplied, true
}

// groupApplierQueue is the member's applier queue where it counts toward the
// verdict: -1 on a replica that is not a Group Replication member, and on a
// member whose group_replication_applier channel WithChannels leaves out (the
// queue is that channel's backlog).
func (m *Measurement) groupApplierQueue() int64 {
	if m.GroupReplication == nil {
		return -1
	}
	for _, c := range m.Channels {
		if c.Ignored && strings.EqualFold(c.Name, groupApplierChannel) {
			return -1
		}
	}
	return m.GroupReplication.ApplierQueue
}
