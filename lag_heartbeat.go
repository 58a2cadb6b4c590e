package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// HeartbeatConfig says which heartbeat HeartbeatSource reads.
type HeartbeatConfig struct {
	// Table is the heartbeat table, "table" or "database.table" (default
	// "heartbeat"). An unqualified name is looked up in the connection's
	// default database. Names are given unquoted and may hold letters,
	// digits, '_', '$' and '-'; they are quoted with backticks in the query.
	Table string
	// SourceServerID selects the row written by this server_id: the source
	// whose lag is wanted, as pt-heartbeat's --source-server-id
	// (--master-server-id) does. 0 reads the newest row of the table
	// (MAX(ts)): right with one writer, and after a failover, when the new
	// primary's row becomes the newest; with several live writers
	// (multi-source replication, or pt-heartbeat --update on the
	// intermediate replicas of a chain) the newest row is the least lagging
	// path, so set it.
	SourceServerID uint32
	// Location is the time zone ts is written in: nil means UTC, which is
	// what Heartbeat and pt-heartbeat --utc write. pt-heartbeat without
	// --utc writes the local time of the host it runs on: set Location to
	// that host's zone.
	//
	// Prefer a writer in UTC. In a zone with daylight saving time, the
	// autumn hour that the local clock repeats is ambiguous: its times are
	// read as the first occurrence, so during the second one the lag reads
	// an hour too high, and the replica throttles for that hour. (A lag
	// within a minute of a whole number of hours says so in the throttle
	// reason: it is more often a zone than a lag.)
	Location *time.Location
}

// HeartbeatSource measures lag from a pt-heartbeat table: a writer on the
// source (pt-heartbeat --update, or Heartbeat) stores its clock in its row
// every interval, the row replicates like any other, and the replica's lag is
// its own clock minus the replicated time. It returns an error wrapping
// ErrInvalidConfig when cfg is not valid.
//
// Because the heartbeat is ordinary replicated data, it measures what users
// of the replica see, end to end: through intermediate replicas, across
// MASTER_DELAY, with any replication mechanism, and with the resolution of
// the written timestamp (microseconds) instead of Seconds_Behind_Source's
// whole seconds. The replica's clock is its UTC_TIMESTAMP(6), read in the
// same query as the row, so the client's clock plays no part; the writer's
// clock (the primary's for Heartbeat, the pt-heartbeat host's for
// pt-heartbeat) and the replica's must be kept in step by NTP, as
// pt-heartbeat requires. The reading includes the time since the last beat,
// up to one writer interval: choose a lag tolerance well above it.
//
// A heartbeat that stops arriving, because replication stopped, stalled or
// broke, or because the writer itself stopped, reads as a lag that grows with
// the clock, never as a frozen healthy value: run the writer for as long as
// the work it protects. A ts more than 5s ahead of the replica's clock is an
// error (a wrong Location or clocks apart), not a lag of 0.
//
// It never sets Measurement.NotFlowing: a heartbeat cannot tell a stopped
// replication thread from a slow one until the lag shows it. When thread
// state must throttle at once, combine two throttlers on the replica in a
// Multi, one with this source and one with ReplicaStatusSource.
//
// It needs SELECT on the table and nothing else. A missing table is
// ErrUnavailable, a missing grant ErrAccessDenied; a table with no row (for
// SourceServerID, or at all) is an error that names the table and the
// server_id, as is a ts that cannot be parsed.
func HeartbeatSource(cfg HeartbeatConfig) (LagSource, error) {
	table, err := parseHeartbeatTable("HeartbeatConfig.Table", cfg.Table)
	if err != nil {
		return nil, configError([]error{err})
	}
	loc := cfg.Location
	if loc == nil {
		loc = time.UTC
	}
	s := &heartbeatSource{table: table, serverID: cfg.SourceServerID, loc: loc}
	// One statement, the id as a literal: the driver sends it in one round
	// trip instead of preparing it. MAX makes the result one row even when
	// no row matches, so "no heartbeat" and the replica's clock come back
	// together.
	s.query = "SELECT UTC_TIMESTAMP(6), MAX(ts) FROM " + table.quoted
	if s.serverID != 0 {
		s.query += " WHERE server_id = " + strconv.FormatUint(uint64(s.serverID), 10)
	}
	return s, nil
}

// heartbeatMaxSkew is how far a heartbeat may be ahead of the replica's clock
// and still read as no lag. Clocks kept by NTP are milliseconds apart; a ts
// further ahead means a Location that is not the writer's (hours) or clocks
// that are not synchronised, and clamping it to 0 would hide a stall for that
// long.
const heartbeatMaxSkew = 5 * time.Second

type heartbeatSource struct {
	table    heartbeatTable
	serverID uint32
	loc      *time.Location
	query    string
}

func (s *heartbeatSource) String() string {
	return "heartbeat " + s.table.name + " (" + s.rowName() + ")"
}

func (s *heartbeatSource) rowName() string {
	if s.serverID == 0 {
		return "newest row"
	}
	return "server_id " + strconv.FormatUint(uint64(s.serverID), 10)
}

func (s *heartbeatSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	return onSession(ctx, db, s.measure)
}

func (s *heartbeatSource) measure(ctx context.Context, db querier) (Measurement, error) {
	var row heartbeatRow
	var now heartbeatWallTime
	var ts heartbeatText
	if err := db.QueryRowContext(ctx, s.query).Scan(&now, &ts); err != nil {
		return Measurement{}, s.queryError(err)
	}
	row.Now = now.t
	if ts.valid {
		row.TS = &ts.s
	}
	return s.lag(row)
}

func (s *heartbeatSource) queryError(err error) error {
	switch mysqlErrorNumber(err) {
	case erNoSuchTable:
		return fmt.Errorf("%w: heartbeat table %s does not exist on this server: create it on the source (Heartbeat with Create, or pt-heartbeat --create-table) and let it replicate: %w", ErrUnavailable, s.table.name, err)
	case erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return fmt.Errorf("%w: grant SELECT ON %s to the monitoring user: %w", ErrAccessDenied, s.table.name, err)
	case erBadField:
		return fmt.Errorf("%w: %s has no ts or server_id column: not a pt-heartbeat table (the legacy id-keyed table is not supported): %w", ErrUnavailable, s.table.name, err)
	case erNoDB:
		return fmt.Errorf("%w: HeartbeatConfig.Table %q names no database and the connection has no default one: give it as \"database.%s\": %w", ErrInvalidConfig, s.table.name, s.table.name, err)
	}
	return fmt.Errorf("read heartbeat from %s: %w", s.table.name, err)
}

// heartbeatRow is what the heartbeat query returns: the replica's
// UTC_TIMESTAMP(6) and the newest ts of the selected rows, as the server
// sent it (nil when no row matched). Fixtures record it.
type heartbeatRow struct {
	Now time.Time `json:"now"`
	TS  *string   `json:"ts"`
}

// lag turns the query's row into a measurement. It does no I/O, so recorded
// rows test every case.
func (s *heartbeatSource) lag(row heartbeatRow) (Measurement, error) {
	if row.TS == nil {
		if s.serverID == 0 {
			return Measurement{}, fmt.Errorf("heartbeat table %s has no row: no heartbeat was ever written (is pt-heartbeat --update or Heartbeat running on the source?)", s.table.name)
		}
		return Measurement{}, fmt.Errorf("heartbeat table %s has no row for server_id %d: nothing writes that source's heartbeat (is pt-heartbeat --update or Heartbeat running on it, and is %d its @@server_id?)", s.table.name, s.serverID, s.serverID)
	}
	ts, err := parseHeartbeatTS(*row.TS, s.loc)
	if err != nil {
		return Measurement{}, fmt.Errorf("heartbeat table %s (%s): %w", s.table.name, s.rowName(), err)
	}
	lag := row.Now.Sub(ts)
	if lag < -heartbeatMaxSkew {
		return Measurement{}, fmt.Errorf("heartbeat table %s (%s): ts %q (read in %s) is %v ahead of the replica's clock (%s UTC): is HeartbeatConfig.Location the zone the writer uses, and are the clocks synchronised?",
			s.table.name, s.rowName(), *row.TS, s.loc, (-lag).Round(time.Millisecond), row.Now.UTC().Format("2006-01-02 15:04:05.000000"))
	}
	if lag < 0 { // clock skew within bounds: the heartbeat is current
		lag = 0
	}
	return Measurement{Lag: lag}, nil
}

// lagHinter is a LagSource that can suggest a cause for a lag that
// throttles; the Replication adds it to the reason.
type lagHinter interface {
	lagHint(lag time.Duration) string
}

// lagHint points at a time zone mismatch when the lag is within a minute of a
// whole number of hours (a writer west of UTC without --utc reads as hours of
// lag, a repeated daylight-saving hour as one): the reason would otherwise
// show a plausible "replica lag 5h0m0.1s".
func (s *heartbeatSource) lagHint(lag time.Duration) string {
	hours := lag.Round(time.Hour)
	if hours < time.Hour || (lag-hours).Abs() > time.Minute {
		return ""
	}
	return fmt.Sprintf("within a minute of %d whole hours: is ts written in %s, HeartbeatConfig.Location? pt-heartbeat without --utc writes its host's local time", hours/time.Hour, s.loc)
}

// parseHeartbeatTS reads pt-heartbeat's ts: "2006-01-02T15:04:05.000000"
// (no fraction when the writer's clock fell on a whole second), or a DATETIME
// column's "2006-01-02 15:04:05" in a legacy table, in loc.
func parseHeartbeatTS(s string, loc *time.Location) (time.Time, error) {
	v := strings.TrimSpace(s)
	layout := "2006-01-02T15:04:05" // Go accepts a fraction after the seconds
	if len(v) > 10 && v[10] == ' ' {
		layout = "2006-01-02 15:04:05"
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot parse heartbeat ts %q (want pt-heartbeat's 2006-01-02T15:04:05.000000)", s)
	}
	return t, nil
}

// heartbeatText scans ts as text: a varchar as sent, and a DATETIME that
// the driver parsed (parseTime=true) back into its wall clock.
type heartbeatText struct {
	s     string
	valid bool
}

func (h *heartbeatText) Scan(v any) error {
	h.s, h.valid = "", v != nil
	switch v := v.(type) {
	case nil:
	case []byte:
		h.s = string(v)
	case string:
		h.s = v
	case time.Time:
		h.s = v.Format("2006-01-02 15:04:05.999999")
	default:
		return fmt.Errorf("cannot scan %T into a heartbeat ts", v)
	}
	return nil
}

// heartbeatTable is a validated table name: quoted for SQL, plain for
// messages.
type heartbeatTable struct {
	quoted string // `db`.`table` or `table`
	name   string // db.table or table
}

const defaultHeartbeatTable = "heartbeat"

// parseHeartbeatTable validates "table" or "db.table" (empty: "heartbeat").
// field names the setting in the error, which the caller wraps (once) with
// configError.
func parseHeartbeatTable(field, s string) (heartbeatTable, error) {
	if s == "" {
		s = defaultHeartbeatTable
	}
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return heartbeatTable{}, fmt.Errorf("%s %q: want \"table\" or \"database.table\"", field, s)
	}
	quoted := make([]string, len(parts))
	for i, p := range parts {
		if err := checkHeartbeatIdent(p); err != nil {
			return heartbeatTable{}, fmt.Errorf("%s %q: %w", field, s, err)
		}
		quoted[i] = "`" + p + "`"
	}
	return heartbeatTable{quoted: strings.Join(quoted, "."), name: s}, nil
}

// checkHeartbeatIdent allows the characters of ordinary schema and table
// names, so that backtick quoting is always safe and names need no escaping.
func checkHeartbeatIdent(p string) error {
	if p == "" {
		return errors.New("empty name")
	}
	if len(p) > 64 {
		return fmt.Errorf("name %q is longer than MySQL's 64 characters", p)
	}
	for _, r := range p {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' && r != '$' && r != '-' {
			return fmt.Errorf("name %q has %q: give names unquoted, of letters, digits, '_', '$' and '-'", p, r)
		}
	}
	return nil
}

var _ LagSource = (*heartbeatSource)(nil)

// heartbeatWallTime scans a DATETIME or TIMESTAMP result as its wall clock,
// in UTC: as text, or as the time.Time a parseTime=true DSN makes of it
// (whatever location the DSN gives it). NULL, an empty value and the zero
// date are the zero time. The heartbeat and Aurora sources compare wall
// clocks of one frame (UTC_TIMESTAMP, or NOW and a DATETIME of the same
// server), so the location must not shift them.
type heartbeatWallTime struct{ t time.Time }

func (w *heartbeatWallTime) Scan(v any) error {
	w.t = time.Time{}
	var s string
	switch v := v.(type) {
	case nil:
		return nil
	case time.Time:
		if v.Year() > 1 {
			w.t = time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
		}
		return nil
	case []byte:
		s = string(v)
	case string:
		s = v
	default:
		return fmt.Errorf("cannot scan %T into a timestamp", v)
	}
	if s == "" || strings.HasPrefix(s, "0000-00-00") {
		return nil
	}
	t, err := time.Parse("2006-01-02 15:04:05", s) // a fraction is accepted
	if err != nil {
		return fmt.Errorf("cannot parse timestamp %q: %w", s, err)
	}
	w.t = t
	return nil
}
