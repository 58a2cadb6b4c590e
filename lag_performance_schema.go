package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"
)

// PerformanceSchemaSource measures lag on MySQL 8.0 and later from
// performance_schema, per channel, with microsecond resolution and one clock
// (the replica's NOW(6), read in the same query):
//
//   - applier latency: for each worker applying a transaction, now minus the
//     transaction's immediate commit time; the largest over the workers;
//   - queue latency: when the receiver's last queued transaction has not been
//     applied by any worker, now minus the most recent immediate commit time a
//     worker has applied. ANONYMOUS transactions (GTIDs off) cannot be matched
//     and contribute 0 here; their lag shows as applier latency;
//   - channel lag is the larger of the two; the replica's lag is the worst
//     channel's.
//
// Unlike the query Spirit ships, it never reads 0 for a replica it cannot
// observe: a receiver (IO) thread that is not ON, an applier whose workers are
// all stopped, and a connection that has heard neither a transaction nor a
// heartbeat for two minutes read as "not flowing"; a server with no channel is
// ErrNotReplica; performance_schema=OFF is ErrUnavailable.
//
// It needs SELECT on performance_schema.replication_connection_status and
// performance_schema.replication_applier_status_by_worker.
func PerformanceSchemaSource() LagSource { return performanceSchemaSource{} }

type performanceSchemaSource struct{}

func (performanceSchemaSource) String() string { return "performance_schema" }

// performanceSchemaQuery returns one row per channel and worker. The lag is
// computed in Go (performanceSchemaLag) so that every case can be tested from
// recorded rows, and so that unset timestamps ('0000-00-00 00:00:00.000000')
// need no SQL special-casing.
const performanceSchemaQuery = `SELECT NOW(6),
  c.CHANNEL_NAME, c.SERVICE_STATE, c.LAST_ERROR_NUMBER, c.LAST_ERROR_MESSAGE,
  c.LAST_HEARTBEAT_TIMESTAMP, c.LAST_QUEUED_TRANSACTION,
  c.LAST_QUEUED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP,
  c.LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP,
  w.WORKER_ID, w.SERVICE_STATE, w.LAST_ERROR_NUMBER, w.LAST_ERROR_MESSAGE,
  w.LAST_APPLIED_TRANSACTION, w.LAST_APPLIED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP,
  w.APPLYING_TRANSACTION, w.APPLYING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP
FROM performance_schema.replication_connection_status c
LEFT JOIN performance_schema.replication_applier_status_by_worker w
  ON w.CHANNEL_NAME = c.CHANNEL_NAME
ORDER BY c.CHANNEL_NAME, w.WORKER_ID`

// PerformanceSchemaRow is one row of the performance_schema lag query: a
// channel's connection status joined with one of its applier workers. It is
// exported for fixtures and tests; a zero time means the column was unset.
type PerformanceSchemaRow struct {
	Now time.Time `json:"now"`

	Channel           string    `json:"channel"`
	ReceiverState     string    `json:"receiver_state"` // ON, OFF, CONNECTING
	ReceiverErrNo     int64     `json:"receiver_errno,omitempty"`
	ReceiverError     string    `json:"receiver_error,omitempty"`
	LastHeartbeat     time.Time `json:"last_heartbeat"`
	LastQueued        string    `json:"last_queued"`
	LastQueuedCommit  time.Time `json:"last_queued_original_commit"`
	LastQueuedEnqueue time.Time `json:"last_queued_end_queue"`

	HasWorker       bool      `json:"has_worker"` // false: the channel has no worker row (LEFT JOIN)
	WorkerID        int64     `json:"worker_id"`
	WorkerState     string    `json:"worker_state"` // ON, OFF
	WorkerErrNo     int64     `json:"worker_errno,omitempty"`
	WorkerError     string    `json:"worker_error,omitempty"`
	LastApplied     string    `json:"last_applied"`
	LastAppliedAt   time.Time `json:"last_applied_immediate_commit"`
	Applying        string    `json:"applying"`
	ApplyingStarted time.Time `json:"applying_immediate_commit"`
}

// receiverSilenceLimit is how long a connected receiver may go without
// queueing a transaction or receiving a heartbeat before the channel reads as
// not flowing. Sources send a heartbeat every replica_net_timeout/2 (30s by
// default) while idle, so two minutes is four missed heartbeats.
const receiverSilenceLimit = 2 * time.Minute

// idleAfter is how old the last queued transaction must be for a channel
// whose workers have applied nothing since they started to read as idle.
const idleAfter = time.Minute

func (performanceSchemaSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	rows, err := db.QueryContext(ctx, performanceSchemaQuery)
	if err != nil {
		return Measurement{}, performanceSchemaError(err)
	}
	defer rows.Close()
	var recs []PerformanceSchemaRow
	for rows.Next() {
		var r PerformanceSchemaRow
		var now, hb, qCommit, qEnd, applied, applying dbTime
		var cErrNo, wID, wErrNo sql.NullInt64
		var cErr, wState, wErr, lastApplied, applyingTrx, lastQueued sql.NullString
		if err := rows.Scan(&now, &r.Channel, &r.ReceiverState, &cErrNo, &cErr,
			&hb, &lastQueued, &qCommit, &qEnd,
			&wID, &wState, &wErrNo, &wErr, &lastApplied, &applied, &applyingTrx, &applying); err != nil {
			return Measurement{}, fmt.Errorf("read row: %w", err)
		}
		r.Now, r.LastHeartbeat, r.LastQueuedCommit, r.LastQueuedEnqueue = now.t, hb.t, qCommit.t, qEnd.t
		r.ReceiverErrNo, r.ReceiverError, r.LastQueued = cErrNo.Int64, cErr.String, lastQueued.String
		r.HasWorker, r.WorkerID, r.WorkerState = wID.Valid, wID.Int64, wState.String
		r.WorkerErrNo, r.WorkerError = wErrNo.Int64, wErr.String
		r.LastApplied, r.LastAppliedAt = lastApplied.String, applied.t
		r.Applying, r.ApplyingStarted = applyingTrx.String, applying.t
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
	return performanceSchemaLag(recs)
}

func performanceSchemaError(err error) error {
	switch mysqlErrorNumber(err) {
	case erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return fmt.Errorf("%w: grant SELECT ON performance_schema.* (or on replication_connection_status and replication_applier_status_by_worker) to the monitoring user: %w", ErrAccessDenied, err)
	case erNoSuchTable, erBadField:
		return fmt.Errorf("%w: the server lacks MySQL 8.0's replication tables or columns (MariaDB and MySQL 5.7 need ReplicaStatusSource): %w", ErrUnavailable, err)
	}
	return err
}

// performanceSchemaLag computes a measurement from the query's rows. It does
// no I/O, so recorded rows test every case.
func performanceSchemaLag(rows []PerformanceSchemaRow) (Measurement, error) {
	if len(rows) == 0 {
		return Measurement{}, fmt.Errorf("%w: performance_schema.replication_connection_status has no channel", ErrNotReplica)
	}
	byChannel := map[string][]PerformanceSchemaRow{}
	var names []string
	for _, r := range rows {
		if _, ok := byChannel[r.Channel]; !ok {
			names = append(names, r.Channel)
		}
		byChannel[r.Channel] = append(byChannel[r.Channel], r)
	}
	sort.Strings(names)
	var m Measurement
	lagChannel, lagFound := "", false
	for _, name := range names {
		lag, why := channelLag(byChannel[name])
		if why != "" {
			if m.NotFlowing == "" {
				m.NotFlowing, m.Channel = why, name
			}
			continue
		}
		if !lagFound || lag > m.Lag {
			m.Lag, lagChannel, lagFound = lag, name, true
		}
	}
	if m.NotFlowing == "" {
		m.Channel = lagChannel
	}
	return m, nil
}

// channelLag measures one channel from its rows (one per worker, or one with
// HasWorker false). It returns a reason instead when the channel is not
// flowing.
func channelLag(ws []PerformanceSchemaRow) (time.Duration, string) {
	c := ws[0] // the connection columns repeat on every row
	now := c.Now
	if !strings.EqualFold(c.ReceiverState, "ON") {
		why := "receiver (IO) thread " + strings.ToUpper(c.ReceiverState)
		if c.ReceiverErrNo != 0 {
			why += fmt.Sprintf(": error %d: %s", c.ReceiverErrNo, c.ReceiverError)
		}
		return 0, why
	}

	var applier time.Duration // applier latency: the oldest transaction being applied
	var newestApplied time.Time
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
		}
		// The last queued transaction applied, or being applied (its
		// latency is then the applier's), leaves no queue behind it.
		if c.LastQueued != "" && (strings.EqualFold(w.LastApplied, c.LastQueued) || strings.EqualFold(w.Applying, c.LastQueued)) {
			caughtUp = true
		}
		if w.LastAppliedAt.After(newestApplied) {
			newestApplied = w.LastAppliedAt
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

	var queue time.Duration // queue latency: queued but not yet applied
	switch {
	case c.LastQueued == "" || strings.EqualFold(c.LastQueued, "ANONYMOUS") || caughtUp:
		// Nothing queued since the receiver started, GTIDs off (queued
		// transactions cannot be matched to applied ones), or applied.
	case !newestApplied.IsZero():
		queue = since(now, newestApplied)
	case !c.LastQueuedCommit.IsZero() && since(now, c.LastQueuedCommit) >= idleAfter:
		// The workers have applied nothing since they started, and the
		// last queued transaction is old: an idle source, whose last
		// transaction was applied before the applier restarted. The
		// receiver is ON; the silence check below covers a dead link.
	case !c.LastQueuedCommit.IsZero():
		// Applied nothing yet, and the queued transaction is recent: at
		// least this much behind.
		queue = since(now, c.LastQueuedCommit)
	}
	lag := max(applier, queue)

	if lag == 0 {
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

// since is now - t, never negative: clock skew between the source (commit
// timestamps) and the replica (NOW(6)) must not produce a negative lag.
func since(now, t time.Time) time.Duration {
	if d := now.Sub(t); d > 0 {
		return d
	}
	return 0
}

// dbTime scans a DATETIME/TIMESTAMP whether or not the DSN has parseTime, and
// maps MySQL's zero timestamp to the zero time.Time.
type dbTime struct{ t time.Time }

func (d *dbTime) Scan(v any) error {
	d.t = time.Time{}
	switch v := v.(type) {
	case nil:
		return nil
	case time.Time:
		if v.Year() > 1 {
			// Only differences matter and both operands come from the same
			// session time zone: keep the wall clock, drop the location.
			d.t = time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
		}
		return nil
	case []byte:
		return d.parse(string(v))
	case string:
		return d.parse(v)
	}
	return fmt.Errorf("cannot scan %T into a timestamp", v)
}

func (d *dbTime) parse(s string) error {
	if s == "" || strings.HasPrefix(s, "0000-00-00") {
		return nil
	}
	t, err := time.Parse("2006-01-02 15:04:05.999999999", s)
	if err != nil {
		return fmt.Errorf("cannot parse timestamp %q: %w", s, err)
	}
	d.t = t
	return nil
}
