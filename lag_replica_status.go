package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ReplicaStatusSource measures lag with SHOW REPLICA STATUS and its older
// spellings, which every MySQL and MariaDB version has. It reads every channel
// (MariaDB's SHOW ALL SLAVES STATUS for multi-source) and reports the worst.
//
// It reads Seconds_Behind_Source (Seconds_Behind_Master), which has one second
// of resolution, overstates lag by the source's run time of a long statement,
// and is NULL whenever a replication thread is stopped. NULL, a stopped or
// connecting IO thread and a stopped SQL thread all read as "not flowing",
// never as lag 0.
//
// It needs REPLICATION CLIENT on MySQL, and SLAVE MONITOR (or SUPER) on
// MariaDB 10.5 and later, where REPLICATION CLIENT is not enough.
func ReplicaStatusSource() LagSource { return &replicaStatusSource{} }

type replicaStatusSource struct {
	// stmt is the index into replicaStatusStatements of the first statement
	// the server parsed; found once, then reused.
	stmt atomic.Int32
}

// replicaStatusStatements are tried in order until one parses: MariaDB's
// multi-source form first (MySQL rejects it as a syntax error), then MySQL
// 8.0.22's spelling, then the one every version knows.
var replicaStatusStatements = []string{
	"SHOW ALL SLAVES STATUS",
	"SHOW REPLICA STATUS",
	"SHOW SLAVE STATUS",
}

func (s *replicaStatusSource) String() string { return "replica status" }

func (s *replicaStatusSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	for i := int(s.stmt.Load()); i < len(replicaStatusStatements); i++ {
		rows, err := queryRowMaps(ctx, db, replicaStatusStatements[i])
		if mysqlErrorNumber(err) == erParseError && i+1 < len(replicaStatusStatements) {
			s.stmt.CompareAndSwap(int32(i), int32(i+1))
			continue
		}
		if err != nil {
			return Measurement{}, replicaStatusError(replicaStatusStatements[i], err)
		}
		return replicaStatusLag(rows)
	}
	panic("unreachable: the last statement's parse error is returned above")
}

func replicaStatusError(stmt string, err error) error {
	switch mysqlErrorNumber(err) {
	case erSpecificAccessDenied:
		return fmt.Errorf("%s: %w: grant SLAVE MONITOR (MariaDB 10.5+) or REPLICATION CLIENT (MySQL) to the monitoring user: %w", stmt, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s: %w", stmt, err)
}

// statusRow is one row of SHOW REPLICA STATUS, by column name. A NULL column
// is present with Valid false; a column the server did not send is absent.
type statusRow map[string]sql.NullString

// first returns the first of the named columns the row has.
func (r statusRow) first(names ...string) (sql.NullString, bool) {
	for _, n := range names {
		if v, ok := r[n]; ok {
			return v, true
		}
	}
	return sql.NullString{}, false
}

func (r statusRow) text(names ...string) string {
	v, _ := r.first(names...)
	return v.String
}

// replicaStatusLag turns SHOW REPLICA STATUS rows (one per channel) into a
// measurement. It does no I/O, so recorded outputs test it.
func replicaStatusLag(rows []statusRow) (Measurement, error) {
	if len(rows) == 0 {
		return Measurement{}, fmt.Errorf("%w: replica status has no rows", ErrNotReplica)
	}
	var m Measurement
	lagChannel, lagFound := "", false
	for _, r := range rows {
		channel := r.text("Channel_Name", "Connection_name")
		io, ok1 := r.first("Replica_IO_Running", "Slave_IO_Running")
		sqlRunning, ok2 := r.first("Replica_SQL_Running", "Slave_SQL_Running")
		behind, ok3 := r.first("Seconds_Behind_Source", "Seconds_Behind_Master")
		if !ok1 || !ok2 || !ok3 {
			return Measurement{}, fmt.Errorf("unrecognised replica status: no IO/SQL running or Seconds_Behind column among %d columns", len(r))
		}
		var why []string
		if io.String != "Yes" {
			why = append(why, threadState("receiver (IO) thread", io, r.text("Last_IO_Errno"), r.text("Last_IO_Error")))
		}
		if sqlRunning.String != "Yes" {
			why = append(why, threadState("applier (SQL) thread", sqlRunning, r.text("Last_SQL_Errno"), r.text("Last_SQL_Error")))
		}
		if len(why) == 0 && !behind.Valid {
			why = append(why, "lag unknown (Seconds_Behind_Source is NULL)")
		}
		if len(why) > 0 {
			if m.NotFlowing == "" { // the first channel that stopped names the reason
				m.NotFlowing, m.Channel = strings.Join(why, "; "), channel
			}
			continue
		}
		secs, err := strconv.ParseInt(behind.String, 10, 64)
		if err != nil || secs < 0 {
			return Measurement{}, fmt.Errorf("channel %q: Seconds_Behind_Source %q is not a number of seconds", channel, behind.String)
		}
		if lag := time.Duration(secs) * time.Second; !lagFound || lag > m.Lag {
			m.Lag, lagChannel, lagFound = lag, channel, true
		}
	}
	if m.NotFlowing == "" {
		m.Channel = lagChannel
	}
	return m, nil
}

func threadState(thread string, state sql.NullString, errno, msg string) string {
	s := "NULL"
	if state.Valid {
		s = state.String
	}
	if s == "No" {
		s = "not running"
	}
	out := thread + " " + s
	if errno != "" && errno != "0" {
		out += fmt.Sprintf(": error %s: %s", errno, msg)
	}
	return out
}

// queryRowMaps runs a statement whose columns are not known in advance and
// returns each row by column name.
func queryRowMaps(ctx context.Context, db *sql.DB, stmt string) ([]statusRow, error) {
	rows, err := db.QueryContext(ctx, stmt)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []statusRow
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		r := make(statusRow, len(cols))
		for i, c := range cols {
			r[c] = vals[i]
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
