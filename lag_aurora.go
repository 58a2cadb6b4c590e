package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
)

// AuroraConfig says which Aurora readers AuroraSource watches.
type AuroraConfig struct {
	// ServerID selects one reader by its SERVER_ID in replica_host_status
	// (its DB instance identifier, @@aurora_server_id on it). "" watches
	// every reader and reports the worst.
	ServerID string
	// Freshness is how recently a reader's row must have been updated, by
	// the server's clock, for its lag to count (default 1 minute; at most
	// a week). See AuroraSource.
	Freshness time.Duration
}

// defaultAuroraFreshness is a judgement, not a documented Aurora figure. AWS's
// drivers keep rows updated within 5 minutes and ProxySQL within 3, but they
// ask whether an instance still belongs to the cluster; a throttler asks
// whether a lag is still known, and must not act for minutes on the frozen
// lag of a reader that stopped reporting (rebooting, failed, deleted). Live
// readers' rows are what ProxySQL routes on every second, so a minute without
// an update is many missed updates. A cluster whose rows refresh more slowly
// needs AuroraConfig.Freshness raised; the error says which rows were stale.
const defaultAuroraFreshness = time.Minute

// auroraWriterSession is SESSION_ID on the writer's row.
const auroraWriterSession = "MASTER_SESSION_ID"

// auroraStatusTable is where Aurora MySQL reports every instance's lag.
const auroraStatusTable = "information_schema.replica_host_status"

// AuroraSource measures the replica lag of Aurora MySQL readers from
// information_schema.replica_host_status, which every instance of a cluster
// can read and which has one row per instance: SERVER_ID (the instance
// identifier), SESSION_ID ('MASTER_SESSION_ID' on the writer),
// REPLICA_LAG_IN_MILLISECONDS and LAST_UPDATE_TIMESTAMP.
//
// Aurora readers do not replay a binary log: they share the writer's storage
// and lag only in applying its changes to their caches, typically by tens of
// milliseconds. SHOW REPLICA STATUS is empty on them; this table is the
// signal. DefaultLagSource chooses this source, with AuroraConfig{}, when
// DetectFlavor finds Aurora.
//
// A row counts only while fresh: its LAST_UPDATE_TIMESTAMP within Freshness
// of the server's NOW(6), read in the same query (the clock AWS's drivers and
// ProxySQL compare it with). Rows of instances that stopped reporting stay in
// the table with their last lag; reading them as current would keep a frozen
// value alive. The writer's row has no lag and is skipped. With no ServerID
// the lag is the worst fresh reader's, and Measurement.Channel names that
// reader; with a ServerID, that reader's row must be present and fresh.
// No fresh reader row, or a missing or stale selected reader, is an error,
// never lag 0, so the throttler fails closed after its stale window. A fresh
// reader whose lag is NULL or negative has an unknown lag: it reads as not
// flowing; one too large for a time.Duration saturates at the longest one,
// which throttles.
//
// AWS notes that a lagging reader's own copy of the table may be out of
// date, and recommends querying the writer: give the throttler the cluster
// (writer) endpoint or the writer instance. On a server without the table
// (anything but Aurora MySQL) Measure fails with ErrUnavailable.
//
// It returns an error wrapping ErrInvalidConfig when cfg is not valid (a
// negative Freshness), as HeartbeatSource does: where the configuration is
// given, not at the first measurement.
func AuroraSource(cfg AuroraConfig) (LagSource, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return auroraSource{cfg: cfg}, nil
}

type auroraSource struct{ cfg AuroraConfig }

func (s auroraSource) String() string {
	if s.cfg.ServerID != "" {
		return "aurora replica_host_status (reader " + s.cfg.ServerID + ")"
	}
	return "aurora replica_host_status"
}

// auroraQuery reads every row; the filtering is done in Go (auroraLag) so
// that recorded rows test every case. A cluster has at most 16 instances.
const auroraQuery = `SELECT NOW(6), SERVER_ID, SESSION_ID, REPLICA_LAG_IN_MILLISECONDS, LAST_UPDATE_TIMESTAMP
FROM information_schema.replica_host_status`

// auroraRow is one row of auroraQuery. A nil Lag is NULL; a zero LastUpdate
// is NULL.
type auroraRow struct {
	Now        time.Time `json:"now"`
	ServerID   string    `json:"server_id"`
	SessionID  string    `json:"session_id"`
	Lag        *float64  `json:"replica_lag_in_milliseconds"`
	LastUpdate time.Time `json:"last_update_timestamp"`
}

func (s auroraSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	return onSession(ctx, db, s.measure)
}

func (s auroraSource) measure(ctx context.Context, db querier) (Measurement, error) {
	rows, err := db.QueryContext(ctx, auroraQuery)
	if err != nil {
		return Measurement{}, auroraError(err)
	}
	defer rows.Close()
	var recs []auroraRow
	for rows.Next() {
		var r auroraRow
		var now, last heartbeatWallTime
		var id, session sql.NullString
		var lag sql.NullFloat64
		if err := rows.Scan(&now, &id, &session, &lag, &last); err != nil {
			return Measurement{}, fmt.Errorf("read %s: %w", auroraStatusTable, err)
		}
		r.Now, r.ServerID, r.SessionID, r.LastUpdate = now.t, id.String, session.String, last.t
		if lag.Valid {
			r.Lag = &lag.Float64
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return Measurement{}, auroraError(err)
	}
	return auroraLag(recs, s.cfg)
}

func (c AuroraConfig) check() error {
	if err := checkSpan(fmt.Sprintf("AuroraConfig.Freshness %v", c.Freshness), c.Freshness, defaultAuroraFreshness.String()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func auroraError(err error) error {
	switch mysqlErrorNumber(err) {
	case erUnknownTable, erNoSuchTable: // 1109 is what a missing information_schema table gives
		return fmt.Errorf("%w: the server has no %s: it is not Aurora MySQL (use the source for its flavor, or DefaultLagSource): %w", ErrUnavailable, auroraStatusTable, err)
	case erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return fmt.Errorf("%w: the monitoring user may not read %s: %w", ErrAccessDenied, auroraStatusTable, err)
	}
	return fmt.Errorf("read %s: %w", auroraStatusTable, err)
}

// auroraLag computes a measurement from the table's rows. It does no I/O, so
// recorded rows test every case.
func auroraLag(rows []auroraRow, cfg AuroraConfig) (Measurement, error) {
	if err := cfg.check(); err != nil {
		return Measurement{}, err
	}
	freshness := cfg.Freshness
	if freshness == 0 {
		freshness = defaultAuroraFreshness
	}
	if len(rows) == 0 {
		return Measurement{}, fmt.Errorf("%s has no rows: not an Aurora MySQL cluster?", auroraStatusTable)
	}
	var (
		m                Measurement
		found, anyReader bool
		writer           string
		stale, ids       []string
	)
	for _, r := range rows {
		if r.SessionID == auroraWriterSession {
			if cfg.ServerID != "" && r.ServerID == cfg.ServerID {
				return Measurement{}, fmt.Errorf("AuroraConfig.ServerID %q is the cluster's writer: it has no replica lag; name a reader", cfg.ServerID)
			}
			writer = r.ServerID
			continue
		}
		anyReader = true
		ids = append(ids, r.ServerID)
		if cfg.ServerID != "" && r.ServerID != cfg.ServerID {
			continue
		}
		if why := auroraStale(r, freshness); why != "" {
			stale = append(stale, fmt.Sprintf("%s (%s)", r.ServerID, why))
			continue
		}
		if r.Lag == nil || *r.Lag < 0 || math.IsNaN(*r.Lag) || math.IsInf(*r.Lag, 0) {
			if m.NotFlowing == "" { // the first reader without a lag names the reason
				m.NotFlowing, m.Channel = "lag unknown (REPLICA_LAG_IN_MILLISECONDS is "+auroraLagText(r.Lag)+")", r.ServerID
			}
			continue
		}
		lag := floatDuration(*r.Lag, time.Millisecond) // saturating: 9.3e12 ms would wrap
		if !found || lag > m.Lag {
			m.Lag, found = lag, true
			if m.NotFlowing == "" {
				m.Channel = r.ServerID
			}
		}
	}
	if found || m.NotFlowing != "" {
		return m, nil
	}
	switch {
	case cfg.ServerID != "" && len(stale) > 0:
		return Measurement{}, fmt.Errorf("reader %s in %s: its status is older than the %v freshness window, so its lag is unknown", stale[0], auroraStatusTable, freshness)
	case cfg.ServerID != "":
		return Measurement{}, fmt.Errorf("reader %q is not in %s (readers: %s; writer: %q)", cfg.ServerID, auroraStatusTable, auroraList(ids), writer)
	case !anyReader:
		return Measurement{}, fmt.Errorf("%s has no reader instance (writer: %q): there is no replica lag to watch", auroraStatusTable, writer)
	}
	return Measurement{}, fmt.Errorf("no reader in %s updated its status within the %v freshness window, so no lag is known: %s", auroraStatusTable, freshness, strings.Join(stale, ", "))
}

// auroraStale says why a row is not fresh, or "" when it is. A timestamp as
// far in the future as the window is long is as untrustworthy as an old one
// (a session time zone that is not the one the table is written in).
func auroraStale(r auroraRow, freshness time.Duration) string {
	if r.LastUpdate.IsZero() {
		return "never updated"
	}
	age := r.Now.Sub(r.LastUpdate)
	switch {
	case age > freshness:
		return fmt.Sprintf("updated %v ago", age.Round(time.Millisecond))
	case age < -freshness:
		return fmt.Sprintf("updated %v ahead of the server's clock: time zone?", (-age).Round(time.Millisecond))
	}
	return ""
}

func auroraLagText(v *float64) string {
	if v == nil {
		return "NULL"
	}
	return fmt.Sprint(*v)
}

func auroraList(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

var _ LagSource = auroraSource{}
