package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PerformanceSchemaSource measures lag on MySQL 8.0 and later from
// performance_schema, per channel, with microsecond resolution and one clock:
// the replica's, read in the same query as the rows. Every instant is read
// as an absolute Unix time (UNIX_TIMESTAMP of the TIMESTAMP columns, and the
// statement's start time for "now"), so neither the session time zone nor a
// daylight-saving switch between two instants changes a difference. Commit
// timestamps are the immediate source's (the server this replica reads from),
// so every comparison between them uses one clock.
//
// A channel's lag is the largest of three latencies:
//
//   - applier latency: for each worker applying a transaction, now minus the
//     transaction's immediate commit time;
//   - receiver latency: while the receiver (IO) thread is still receiving a
//     transaction (QUEUEING_TRANSACTION set), now minus its immediate commit
//     time. In a busy, healthy stream it is milliseconds old; a huge
//     transaction still in transfer counts in full;
//   - queue latency: the age of what the receiver has queued in the relay
//     log but no worker has applied or is applying.
//
// The queue latency is:
//
//   - none when nothing was queued since the receiver started, or when some
//     worker applied or is applying the last queued transaction (matched by
//     GTID);
//   - exact when only the last queued transaction is pending: its GTID
//     (the source's UUID, on MySQL 8.4 optionally a tag, and a sequence
//     number n) follows the highest sequence number that the channel's
//     workers last applied for the same UUID and tag, n-1. It is then now
//     minus that transaction's immediate commit time;
//   - otherwise an upper bound: now minus the newest immediate commit time
//     that a worker has applied (the oldest pending transaction committed
//     after it). This covers several pending transactions, a GTID from
//     another source than the workers' last ones, and an unparseable GTID;
//   - with GTIDs off (ANONYMOUS), where transactions cannot be matched by id,
//     decided by time: there is a queue when the last queued transaction's
//     immediate commit is later than the newest that any worker applied,
//     and no worker is applying one at least as new; its latency is the same
//     upper bound;
//   - when the workers have applied nothing since they started (their
//     statistics are empty): now minus the last queued transaction's commit
//     time while that is under a minute old, and none once it is older (an
//     idle source, whose last transaction was applied before the applier
//     restarted; the receiver checks below still apply).
//
// The replica's lag is the worst flowing channel's.
//
// It never reads 0 for a replica it cannot observe: a receiver that is not
// ON, an applier whose workers are all stopped, and a caught-up channel whose
// receiver has heard neither a transaction nor a heartbeat for two minutes
// read as "not flowing"; a server with no channel is ErrNotReplica;
// performance_schema=OFF is ErrUnavailable.
//
// The exact queue rule assumes that the channel's stream numbers the
// source's transactions consecutively, as a single source does. A source
// that relays another UUID's transactions in between (chained replication
// through a server that also takes writes) could, while the applier has not
// yet picked them up, hide such a transaction between n-1 and n; the lag is
// then understated by at most the time between those two commits.
//
// Its Backlog counts transactions, summed over channels whatever their
// state: per channel, the sequence number of the last queued GTID
// (LAST_QUEUED_TRANSACTION) minus the highest that the channel's workers last
// applied (LAST_APPLIED_TRANSACTION) for the same UUID and tag, plus
// transactions of that source a worker is still applying below it
// (APPLYING_TRANSACTION; a transaction being applied is pending). The same
// single-stream assumption as the exact queue rule applies: another UUID's
// transactions relayed in between are not counted. The backlog is unknown
// (Known false) with GTIDs off (ANONYMOUS: transactions have no number), for
// a GTID that does not parse, and for a channel whose workers have applied
// nothing of the last queued transaction's source since they started (after
// a restart of the applier, until it applies one). performance_schema has no
// byte positions: Bytes is -1.
//
// With WithLagBeyondDelay, a channel's applier and queue latencies are read
// beyond its configured delay (DESIRED_DELAY, from
// replication_applier_configuration), and a delayed channel's backlog,
// which holds the delay's worth of transactions by design, is left out of
// Backlog; the receiver latency is not delayed and counts whole.
//
// On a Group Replication (InnoDB Cluster) member, recognised by its
// group_replication_applier and group_replication_recovery channels, it
// also reads this member's row (MEMBER_ID = @@server_uuid) of
// replication_group_members and replication_group_member_stats, and the
// flow control variables, into Measurement.GroupReplication. The member's
// state is the state of both of its Group Replication channels: on a member
// that is not ONLINE (RECOVERING, OFFLINE, ERROR, UNREACHABLE, or absent
// from the table) they read as not flowing, naming the state. On an ONLINE
// member the lag of group_replication_applier is measured as above without
// the receiver checks: the group communication layer feeds that channel, so
// it has no source connection and no heartbeats. The recovery channel, which
// runs only during distributed recovery and is OFF on every ONLINE member,
// is then not measured and never throttles (Ignored in
// Measurement.Channels). The applier channel's backlog is the member's
// applier queue (COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE), not GTID
// arithmetic: the group's transactions come from several members, each
// numbering its own block of GTIDs. Channels of ordinary replication on the
// same member are measured as on any replica. WithGroupApplierQueueLimit
// throttles on the applier queue.
//
// WithChannels selects among the Group Replication channels as among any
// others: leaving them out (Ignore both, or Only the member's ordinary
// channels) leaves the member's state, its applier lag and queue, and
// WithGroupApplierQueueLimit out of the verdict, which then rests on the
// channels that count.
//
// It needs SELECT on performance_schema.replication_connection_status and
// performance_schema.replication_applier_status_by_worker, with
// WithLagBeyondDelay on performance_schema.replication_applier_configuration,
// and on a Group Replication member on replication_group_members,
// replication_group_member_stats, global_variables and global_status.
func PerformanceSchemaSource() LagSource { return performanceSchemaSource{} }

type performanceSchemaSource struct{ cfg channelConfig }

func (s performanceSchemaSource) String() string { return "performance_schema" + s.cfg.describe() }

func (s performanceSchemaSource) configured(cfg channelConfig) LagSource {
	return performanceSchemaSource{cfg: cfg}
}

// performanceSchemaQuery returns one row per channel and worker. The lag is
// computed in Go (performanceSchemaLag) so that every case can be tested from
// recorded rows.
//
// Instants are absolute: UNIX_TIMESTAMP of a TIMESTAMP column is its stored
// value (seconds since the epoch, with the column's six fractional digits, as
// a DECIMAL; 0 when unset), whatever the session time zone. "Now" is the
// statement's start in microseconds: UNIX_TIMESTAMP() (its whole seconds) and
// the microseconds of NOW(6), both of which MySQL takes from the statement's
// start time (time zone offsets are whole seconds). UNIX_TIMESTAMP(NOW(6))
// would convert NOW(6)'s wall clock back through the session time zone, which
// is ambiguous in the repeated hour after a daylight-saving switch.
const performanceSchemaQuery = `SELECT UNIX_TIMESTAMP() * 1000000 + MICROSECOND(NOW(6)),
  c.CHANNEL_NAME, c.SERVICE_STATE, c.LAST_ERROR_NUMBER, c.LAST_ERROR_MESSAGE,
  UNIX_TIMESTAMP(c.LAST_HEARTBEAT_TIMESTAMP), c.LAST_QUEUED_TRANSACTION,
  UNIX_TIMESTAMP(c.LAST_QUEUED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP),
  UNIX_TIMESTAMP(c.LAST_QUEUED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP),
  UNIX_TIMESTAMP(c.LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP),
  c.QUEUEING_TRANSACTION, UNIX_TIMESTAMP(c.QUEUEING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP),
  w.WORKER_ID, w.SERVICE_STATE, w.LAST_ERROR_NUMBER, w.LAST_ERROR_MESSAGE,
  w.LAST_APPLIED_TRANSACTION, UNIX_TIMESTAMP(w.LAST_APPLIED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP),
  w.APPLYING_TRANSACTION, UNIX_TIMESTAMP(w.APPLYING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP),
  %s
FROM performance_schema.replication_connection_status c
LEFT JOIN performance_schema.replication_applier_status_by_worker w
  ON w.CHANNEL_NAME = c.CHANNEL_NAME%s
ORDER BY c.CHANNEL_NAME, w.WORKER_ID`

// The query as sent: without the delay (whose table needs a grant of its
// own), and with it for WithLagBeyondDelay.
var (
	performanceSchemaPlainQuery = fmt.Sprintf(performanceSchemaQuery, "NULL", "")
	performanceSchemaDelayQuery = fmt.Sprintf(performanceSchemaQuery, "a.DESIRED_DELAY", `
LEFT JOIN performance_schema.replication_applier_configuration a
  ON a.CHANNEL_NAME = c.CHANNEL_NAME`)
)

// performanceSchemaRow is one row of the performance_schema lag query: a
// channel's connection status joined with one of its applier workers; the
// fixtures under testdata/performance_schema record it as JSON. A zero time
// means the column was unset.
// Times are instants (the query reads them as Unix times); their location
// does not matter.
type performanceSchemaRow struct {
	Now time.Time `json:"now"`

	Channel           string    `json:"channel"`
	ReceiverState     string    `json:"receiver_state"` // ON, OFF, CONNECTING
	ReceiverErrNo     int64     `json:"receiver_errno,omitempty"`
	ReceiverError     string    `json:"receiver_error,omitempty"`
	LastHeartbeat     time.Time `json:"last_heartbeat"`
	LastQueued        string    `json:"last_queued"` // a GTID, ANONYMOUS, or ""
	LastQueuedCommit  time.Time `json:"last_queued_original_commit"`
	LastQueuedEnqueue time.Time `json:"last_queued_end_queue"`
	// LastQueuedImmediateCommit is LAST_QUEUED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP.
	// When unset, LastQueuedCommit (the original commit, never later) stands in.
	LastQueuedImmediateCommit time.Time `json:"last_queued_immediate_commit,omitzero"`
	// Queueing is the transaction the receiver is receiving ("" when none).
	Queueing                string    `json:"queueing,omitempty"`
	QueueingImmediateCommit time.Time `json:"queueing_immediate_commit,omitzero"`

	HasWorker       bool      `json:"has_worker"` // false: the channel has no worker row (LEFT JOIN)
	WorkerID        int64     `json:"worker_id"`
	WorkerState     string    `json:"worker_state"` // ON, OFF
	WorkerErrNo     int64     `json:"worker_errno,omitempty"`
	WorkerError     string    `json:"worker_error,omitempty"`
	LastApplied     string    `json:"last_applied"`
	LastAppliedAt   time.Time `json:"last_applied_immediate_commit"`
	Applying        string    `json:"applying"`
	ApplyingStarted time.Time `json:"applying_immediate_commit"`

	// DesiredDelay is the channel's DESIRED_DELAY in seconds, read with
	// WithLagBeyondDelay only.
	DesiredDelay int64 `json:"desired_delay,omitempty"`
}

// receiverSilenceLimit is how long a connected receiver may go without
// queueing a transaction or receiving a heartbeat before the channel reads as
// not flowing. Sources send a heartbeat every replica_net_timeout/2 (30s by
// default) while idle, so two minutes is four missed heartbeats.
const receiverSilenceLimit = 2 * time.Minute

// idleAfter is how old the last queued transaction must be for a channel
// whose workers have applied nothing since they started to read as idle.
const idleAfter = time.Minute

func (s performanceSchemaSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	return onSession(ctx, db, s.measure)
}

func (s performanceSchemaSource) measure(ctx context.Context, db querier) (Measurement, error) {
	query := performanceSchemaPlainQuery
	if s.cfg.beyondDelay {
		query = performanceSchemaDelayQuery
	}
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return Measurement{}, performanceSchemaError(err)
	}
	defer rows.Close()
	var recs []performanceSchemaRow
	for rows.Next() {
		var r performanceSchemaRow
		var nowMicros, cErrNo, wID, wErrNo, delay sql.NullInt64
		var hb, qCommit, qImmediate, qEnd, queueing, applied, applying unixTime
		var cErr, lastQueued, queueingTrx, wState, wErr, lastApplied, applyingTrx sql.NullString
		if err := rows.Scan(&nowMicros, &r.Channel, &r.ReceiverState, &cErrNo, &cErr,
			&hb, &lastQueued, &qCommit, &qImmediate, &qEnd, &queueingTrx, &queueing,
			&wID, &wState, &wErrNo, &wErr, &lastApplied, &applied, &applyingTrx, &applying, &delay); err != nil {
			return Measurement{}, fmt.Errorf("read row: %w", err)
		}
		if nowMicros.Int64 <= 0 {
			return Measurement{}, fmt.Errorf("read row: the server returned no current time (%d)", nowMicros.Int64)
		}
		r.Now = time.UnixMicro(nowMicros.Int64).UTC()
		r.LastHeartbeat, r.LastQueuedCommit, r.LastQueuedImmediateCommit, r.LastQueuedEnqueue = hb.t, qCommit.t, qImmediate.t, qEnd.t
		r.ReceiverErrNo, r.ReceiverError, r.LastQueued = cErrNo.Int64, cErr.String, lastQueued.String
		r.Queueing, r.QueueingImmediateCommit = queueingTrx.String, queueing.t
		r.HasWorker, r.WorkerID, r.WorkerState = wID.Valid, wID.Int64, wState.String
		r.WorkerErrNo, r.WorkerError = wErrNo.Int64, wErr.String
		r.LastApplied, r.LastAppliedAt = lastApplied.String, applied.t
		r.Applying, r.ApplyingStarted = applyingTrx.String, applying.t
		r.DesiredDelay = delay.Int64
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return Measurement{}, performanceSchemaError(err)
	}
	if len(recs) == 0 {
		// performance_schema=OFF leaves the tables empty without an error:
		// ask, so that it is not mistaken for "not a replica".
		var on sql.NullInt64
		if err := db.QueryRowContext(ctx, "SELECT @@performance_schema").Scan(&on); err == nil && on.Int64 == 0 {
			return Measurement{}, fmt.Errorf("%w: performance_schema is OFF on this server; start it with performance_schema=ON or use ReplicaStatusSource", ErrUnavailable)
		}
	}
	var member *groupMember
	if slices.ContainsFunc(recs, func(r performanceSchemaRow) bool { return isGroupChannel(r.Channel) }) {
		if member, err = readGroupMember(ctx, db); err != nil {
			return Measurement{}, err
		}
	}
	return performanceSchemaLag(s.cfg, recs, member)
}

func performanceSchemaError(err error) error {
	switch mysqlErrorNumber(err) {
	case erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return fmt.Errorf("%w: grant SELECT ON performance_schema.* (or on replication_connection_status and replication_applier_status_by_worker, and replication_applier_configuration for WithLagBeyondDelay) to the monitoring user: %w", ErrAccessDenied, err)
	case erNoSuchTable, erBadField:
		return fmt.Errorf("%w: the server lacks MySQL 8.0's replication tables or columns (MariaDB and MySQL 5.7 need ReplicaStatusSource): %w", ErrUnavailable, err)
	}
	return err
}

// performanceSchemaLag computes a measurement from the query's rows, with
// cfg's channels and delay, and on a Group Replication member (member not
// nil) from its member row. It does no I/O, so recorded rows test every case.
func performanceSchemaLag(cfg channelConfig, rows []performanceSchemaRow, member *groupMember) (Measurement, error) {
	if len(rows) == 0 {
		return Measurement{}, fmt.Errorf("%w: performance_schema.replication_connection_status has no channel", ErrNotReplica)
	}
	byChannel := map[string][]performanceSchemaRow{}
	var names []string
	for _, r := range rows {
		if _, ok := byChannel[r.Channel]; !ok {
			names = append(names, r.Channel)
		}
		byChannel[r.Channel] = append(byChannel[r.Channel], r)
	}
	sort.Strings(names)
	readings := make([]channelReading, 0, len(names))
	for _, name := range names {
		ws := byChannel[name]
		r := channelReading{name: name, delay: delaySeconds(ws[0].DesiredDelay), undelayed: receiverLatency(ws[0])}
		group := member != nil && isGroupChannel(name)
		switch {
		case group && member.notFlowing() != "":
			r.notFlowing = member.notFlowing()
		case group && !strings.EqualFold(name, groupApplierChannel):
			r.standby = true // the recovery channel of an ONLINE member
		default:
			r.lag, r.notFlowing = channelLag(ws, group)
		}
		readings = append(readings, r)
	}
	m, counted := combineChannels(cfg, readings)
	if member != nil {
		m.GroupReplication = member.status()
	}
	var backlog []string
	for _, r := range readings {
		if counted[r.name] && !(cfg.beyondDelay && r.delay > 0) {
			backlog = append(backlog, r.name)
		}
	}
	m.Backlog = unknownBacklog()
	if len(backlog) > 0 {
		m.Backlog = performanceSchemaBacklog(byChannel, backlog, member)
	}
	return m, nil
}

// performanceSchemaBacklog sums the channels' pending transactions (see
// PerformanceSchemaSource); one channel that cannot count them makes the
// backlog unknown. appliedTransactions sums, over the channels, the highest
// sequence number the workers last applied for the source of the channel's
// last queued transaction: it restarts when that source changes.
// performance_schema has no byte positions: Bytes is -1.
func performanceSchemaBacklog(byChannel map[string][]performanceSchemaRow, names []string, member *groupMember) Backlog {
	b := Backlog{Known: true, Bytes: -1, appliedBytes: -1}
	for _, name := range names {
		var pending, applied int64
		var ok bool
		switch {
		case member != nil && strings.EqualFold(name, groupRecoveryChannel):
			continue // distributed recovery's donor stream, not the group's
		case member != nil && strings.EqualFold(name, groupApplierChannel):
			pending, applied, ok = member.backlog()
		default:
			pending, applied, ok = channelPending(byChannel[name])
		}
		if !ok {
			return unknownBacklog()
		}
		b.Transactions = addCount(b.Transactions, pending)
		b.appliedTransactions = addCount(b.appliedTransactions, applied)
	}
	return b
}

// channelPending counts the transactions one channel has queued but not
// applied, whatever its state: the last queued GTID's sequence number minus
// the highest that the channel's workers last applied for the same source
// (UUID and tag), plus the transactions of that source that workers are
// still applying below it (out of order, with a multi-threaded applier). It
// also returns that highest applied number. It cannot count (false) with
// GTIDs off (ANONYMOUS), a GTID that does not parse, or when no worker
// applied or is applying a transaction of the last queued one's source
// since the workers started (an idle source after a restart, or a new
// source); nor when a worker applied past the last queued number, which a
// single stream does not do.
func channelPending(ws []performanceSchemaRow) (pending, highest int64, ok bool) {
	c := ws[0] // the connection columns repeat on every row
	if c.LastQueued == "" {
		return 0, 0, true // nothing queued since the receiver started
	}
	queued, ok := parseGTID(c.LastQueued)
	if !ok {
		return 0, 0, false
	}
	highest = -1
	var applying []int64 // of queued's source
	for _, w := range ws {
		if !w.HasWorker {
			continue
		}
		if g, ok := parseGTID(w.LastApplied); ok && strings.EqualFold(g.source, queued.source) {
			highest = max(highest, g.seq)
		}
		if g, ok := parseGTID(w.Applying); ok && strings.EqualFold(g.source, queued.source) {
			applying = append(applying, g.seq)
		}
	}
	if highest < 0 {
		if len(applying) == 0 {
			return 0, 0, false
		}
		// Nothing applied since the workers started, some of it applying:
		// the oldest transaction being applied is the first pending one.
		highest = slices.Min(applying) - 1
	}
	if highest > queued.seq {
		return 0, 0, false
	}
	pending = queued.seq - highest
	for _, seq := range applying {
		if seq <= highest {
			pending = addCount(pending, 1)
		}
	}
	return pending, max(highest, 0), true
}

// channelLag measures one channel from its rows (one per worker, or one with
// HasWorker false). It returns a reason instead when the channel is not
// flowing. A Group Replication channel (group) has no receiver connected to
// a source: its receiver state and heartbeats are not checked (the member
// state is).
func channelLag(ws []performanceSchemaRow, group bool) (time.Duration, string) {
	c := ws[0] // the connection columns repeat on every row
	now := c.Now
	if !group && !strings.EqualFold(c.ReceiverState, "ON") {
		why := "receiver (IO) thread " + strings.ToUpper(c.ReceiverState)
		if c.ReceiverErrNo != 0 {
			why += fmt.Sprintf(": error %d: %s", c.ReceiverErrNo, c.ReceiverError)
		}
		return 0, why
	}

	anonymous := strings.EqualFold(c.LastQueued, "ANONYMOUS")
	queued, queuedOK := parseGTID(c.LastQueued)
	lastQueuedAt := c.LastQueuedImmediateCommit
	if lastQueuedAt.IsZero() {
		lastQueuedAt = c.LastQueuedCommit // the original commit: never later
	}

	var applier time.Duration // applier latency: the oldest transaction being applied
	var newestApplied, newestApplying time.Time
	var highestApplied int64 = -1 // for queued's source, over the workers' last applied
	running, caughtUp, anyWorker := false, false, false
	var stopped []string
	for _, w := range ws {
		if !w.HasWorker {
			continue
		}
		anyWorker = true
		if !strings.EqualFold(w.WorkerState, "ON") {
			if w.WorkerErrNo != 0 {
				stopped = append(stopped, fmt.Sprintf("worker %d: error %d: %s", w.WorkerID, w.WorkerErrNo, w.WorkerError))
			}
			continue
		}
		running = true
		if w.Applying != "" && !w.ApplyingStarted.IsZero() {
			applier = max(applier, since(now, w.ApplyingStarted))
			if w.ApplyingStarted.After(newestApplying) {
				newestApplying = w.ApplyingStarted
			}
		}
		// The last queued transaction applied, or being applied (its
		// latency is then the applier's), leaves no queue behind it.
		// ANONYMOUS names every transaction alike: it matches nothing.
		if c.LastQueued != "" && !anonymous &&
			(strings.EqualFold(w.LastApplied, c.LastQueued) || strings.EqualFold(w.Applying, c.LastQueued)) {
			caughtUp = true
		}
		if w.LastAppliedAt.After(newestApplied) {
			newestApplied = w.LastAppliedAt
		}
		if g, ok := parseGTID(w.LastApplied); ok && queuedOK && strings.EqualFold(g.source, queued.source) {
			highestApplied = max(highestApplied, g.seq)
		}
	}
	switch {
	case !anyWorker:
		return 0, "applier (SQL) thread not running: no applier worker reported"
	case !running:
		why := "applier (SQL) thread not running"
		if len(stopped) > 0 {
			why += ": " + strings.Join(stopped, "; ")
		}
		return 0, why
	}

	// A source older than MySQL 8.0 sends no commit timestamps: every
	// latency above would read 0 however far behind the replica is.
	if (c.LastQueued != "" && lastQueuedAt.IsZero()) || (newestApplying.IsZero() && applyingWithoutTime(ws)) {
		return 0, "lag unknown: the source sends no commit timestamps (a source older than MySQL 8.0?); use ReplicaStatusSource or HeartbeatSource"
	}

	receiving := receiverLatency(c)

	var queue time.Duration // queue latency: queued but neither applied nor being applied
	switch {
	case c.LastQueued == "" || caughtUp:
		// Nothing queued since the receiver started, or applied.
	case anonymous && (lastQueuedAt.IsZero() || !lastQueuedAt.After(newestApplied) ||
		(!newestApplying.IsZero() && !newestApplying.Before(lastQueuedAt))):
		// GTIDs off: by the immediate commit times, the last queued
		// transaction is no later than one applied, or one being applied
		// (whose latency is the applier's).
	case !anonymous && queuedOK && highestApplied == queued.seq-1 && !lastQueuedAt.IsZero():
		// Exactly one transaction pending, the last queued: exact.
		queue = since(now, lastQueuedAt)
	case !newestApplied.IsZero():
		// Pending transactions, the oldest committed after the newest
		// applied one: an upper bound.
		queue = since(now, newestApplied)
	case !lastQueuedAt.IsZero() && since(now, lastQueuedAt) >= idleAfter:
		// The workers have applied nothing since they started, and the
		// last queued transaction is old: an idle source, whose last
		// transaction was applied before the applier restarted. The
		// receiver is ON; the silence check below covers a dead link.
	case !lastQueuedAt.IsZero():
		// Applied nothing yet, and the queued transaction is recent: at
		// least this much behind.
		queue = since(now, lastQueuedAt)
	}
	lag := max(applier, receiving, queue)

	if lag == 0 && !group {
		// Caught up. That is only believable while the receiver hears from
		// the source: a transaction or a heartbeat within the limit.
		heard := c.LastHeartbeat
		if c.LastQueuedEnqueue.After(heard) {
			heard = c.LastQueuedEnqueue
		}
		if !heard.IsZero() && since(now, heard) > receiverSilenceLimit {
			return 0, fmt.Sprintf("receiver (IO) thread has heard nothing from the source for %s (no transaction, no heartbeat)", since(now, heard).Round(time.Second))
		}
	}
	return lag, ""
}

// receiverLatency is the age of a transaction still in transfer from the
// source; 0 when none is.
func receiverLatency(c performanceSchemaRow) time.Duration {
	if c.Queueing != "" && !c.QueueingImmediateCommit.IsZero() {
		return since(c.Now, c.QueueingImmediateCommit)
	}
	return 0
}

// applyingWithoutTime reports whether a running worker applies a transaction
// that carries no immediate commit timestamp.
func applyingWithoutTime(ws []performanceSchemaRow) bool {
	for _, w := range ws {
		if w.HasWorker && strings.EqualFold(w.WorkerState, "ON") && w.Applying != "" && w.ApplyingStarted.IsZero() {
			return true
		}
	}
	return false
}

// since is now - t, never negative: clock skew between the source (commit
// timestamps) and the replica (now) must not produce a negative lag.
func since(now, t time.Time) time.Duration {
	if d := now.Sub(t); d > 0 {
		return d
	}
	return 0
}

// gtid is a parsed global transaction ID: "<source>:<seq>", where source is
// the originating server's UUID, followed on MySQL 8.4 by ":<tag>" for a
// tagged transaction.
type gtid struct {
	source string
	seq    int64
}

// parseGTID splits a GTID at its last colon. ANONYMOUS, "" and anything
// without a positive sequence number do not parse.
func parseGTID(s string) (gtid, bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return gtid{}, false
	}
	n, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || n <= 0 {
		return gtid{}, false
	}
	return gtid{source: s[:i], seq: n}, true
}

// unixTime scans UNIX_TIMESTAMP(column): seconds since the epoch, as the
// DECIMAL text MySQL sends ("1795441436.052842"), an integer, or a float. It
// keeps microseconds exactly; 0 (MySQL's answer for an unset timestamp) and
// NULL (a worker column of a channel without workers) are the zero time.
type unixTime struct{ t time.Time }

// maxUnixSeconds keeps seconds * 1e6 within an int64.
const maxUnixSeconds = math.MaxInt64 / 1_000_000

func (u *unixTime) Scan(v any) error {
	u.t = time.Time{}
	var micros int64
	switch v := v.(type) {
	case nil:
		return nil
	case []byte:
		m, err := parseUnixMicros(string(v))
		if err != nil {
			return err
		}
		micros = m
	case string:
		m, err := parseUnixMicros(v)
		if err != nil {
			return err
		}
		micros = m
	case int64:
		if v < 0 || v > maxUnixSeconds {
			return fmt.Errorf("cannot use Unix time %d", v)
		}
		micros = v * 1e6
	case uint64:
		if v > maxUnixSeconds {
			return fmt.Errorf("cannot use Unix time %d", v)
		}
		micros = int64(v) * 1e6
	case float64:
		if math.IsNaN(v) || v < 0 || v > maxUnixSeconds {
			return fmt.Errorf("cannot use Unix time %v", v)
		}
		micros = int64(math.Round(v * 1e6))
	default:
		return fmt.Errorf("cannot scan %T into a Unix time", v)
	}
	if micros != 0 {
		u.t = time.UnixMicro(micros).UTC()
	}
	return nil
}

// parseUnixMicros parses a non-negative decimal number of seconds into
// microseconds without going through a float: digits past the sixth
// fractional one round half up.
func parseUnixMicros(s string) (int64, error) {
	bad := func() (int64, error) { return 0, fmt.Errorf("cannot parse Unix time %q", s) }
	intPart, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	if intPart == "" && frac == "" || !allDigits(intPart) || !allDigits(frac) || len(intPart) > 12 {
		return bad()
	}
	var sec int64
	if intPart != "" {
		var err error
		if sec, err = strconv.ParseInt(intPart, 10, 64); err != nil {
			return bad()
		}
	}
	var us int64
	for i := 0; i < 6; i++ {
		us *= 10
		if i < len(frac) {
			us += int64(frac[i] - '0')
		}
	}
	if len(frac) > 6 && frac[6] >= '5' {
		us++
	}
	return sec*1e6 + us, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
