package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
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
// never as lag 0. A value too large for a time.Duration (292 years)
// saturates at the longest one, which throttles; it never wraps.
//
// Its Backlog is what each channel has received but not applied, summed over
// channels, whether or not the channel flows (a stopped applier's queue is
// the backlog that matters most):
//
//   - Transactions, on MariaDB with GTIDs (Using_Gtid Slave_Pos or
//     Current_Pos): for each GTID domain of the channel's Gtid_IO_Pos (the
//     last GTID the receiver queued, per domain), its sequence number minus
//     that domain's in Gtid_Slave_Pos (the applied position, which MariaDB
//     shares between all connections: every row shows the same one).
//     Sequence numbers are per domain, whichever server wrote them. A
//     connection's Gtid_IO_Pos also lists other connections' domains at the
//     applied position it started from (a multi-source replica's "east"
//     connection showed "1-4-6,0-1-16" while the default one had received
//     0-1-18): a domain whose applied position is past the received one has
//     nothing of this connection's pending and counts 0.
//   - Transactions, on MySQL 5.7 and later with GTIDs: the number of GTIDs
//     in the channel's Retrieved_Gtid_Set that are not in Executed_Gtid_Set
//     (the server's gtid_executed). An empty Retrieved_Gtid_Set cannot be
//     told from GTID_MODE=OFF, so it counts bytes only.
//   - Without GTIDs (Using_Gtid No, or none of the columns above),
//     Transactions is -1 and only Bytes count.
//   - Bytes: Read_Source_Log_Pos minus Exec_Source_Log_Pos (Read_Master_Log_Pos
//     and Exec_Master_Log_Pos) while the receiver and the applier are in the
//     same binary log file of the source (Source_Log_File equals
//     Relay_Source_Log_File): exact. Otherwise Relay_Log_Space, an upper
//     bound: it counts every relay log not yet purged, the applied part of
//     the current one and the relay logs' own headers included (and, with
//     relay_log_purge off, relay logs already applied). A difference that
//     reads negative also falls back to Relay_Log_Space.
//
// Transactions or Bytes is -1 when one channel cannot count it. A GTID list
// that does not parse makes the whole backlog unknown (Known false), never
// an error and never 0; counts that overflow saturate at math.MaxInt64.
//
// It reports every channel's SQL_Delay (Measurement.Channels). With
// WithLagBeyondDelay a channel's lag is Seconds_Behind_Source minus its
// SQL_Delay, never below 0: Seconds_Behind_Source counts the delay (it is the
// age of the event the applier waits on, at most the delay while the applier
// keeps up; MariaDB then shows the SQL thread running, "Waiting until
// MASTER_DELAY seconds after master executed event"), and a delayed
// channel's backlog is left out of Backlog.
//
// It needs REPLICATION CLIENT on MySQL, and SLAVE MONITOR (or SUPER) on
// MariaDB 10.5 and later, where REPLICATION CLIENT is not enough.
func ReplicaStatusSource() LagSource {
	return &replicaStatusSource{stmts: spellings{stmts: replicaStatusStatements}}
}

type replicaStatusSource struct {
	stmts spellings
	cfg   channelConfig
}

// replicaStatusStatements are tried in order until one parses: MariaDB's
// multi-source form first (MySQL rejects it as a syntax error), then MySQL
// 8.0.22's spelling, then the one every version knows.
var replicaStatusStatements = []string{
	"SHOW ALL SLAVES STATUS",
	"SHOW REPLICA STATUS",
	"SHOW SLAVE STATUS",
}

func (s *replicaStatusSource) String() string { return "replica status" + s.cfg.describe() }

func (s *replicaStatusSource) configured(cfg channelConfig) LagSource {
	return &replicaStatusSource{stmts: spellings{stmts: replicaStatusStatements}, cfg: cfg}
}

func (s *replicaStatusSource) Measure(ctx context.Context, db *sql.DB) (Measurement, error) {
	return onSession(ctx, db, s.measure)
}

func (s *replicaStatusSource) measure(ctx context.Context, db querier) (Measurement, error) {
	stmt, rows, err := s.stmts.queryRows(ctx, db)
	if err != nil {
		return Measurement{}, replicaStatusError(stmt, err)
	}
	return replicaStatusLag(s.cfg, rows)
}

func replicaStatusError(stmt string, err error) error {
	switch mysqlErrorNumber(err) {
	case erSpecificAccessDenied:
		return fmt.Errorf("%s: %w: grant SLAVE MONITOR (MariaDB 10.5+) or REPLICATION CLIENT (MySQL) to the monitoring user: %w", stmt, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s: %w", stmt, err)
}

// replicaStatusLag turns SHOW REPLICA STATUS rows (one per channel) into a
// measurement, with cfg's channels and delay. It does no I/O, so recorded
// outputs test it.
func replicaStatusLag(cfg channelConfig, rows []statusRow) (Measurement, error) {
	if len(rows) == 0 {
		return Measurement{}, fmt.Errorf("%w: replica status has no rows", ErrNotReplica)
	}
	readings := make([]channelReading, 0, len(rows))
	for _, r := range rows {
		channel := r.text("Channel_Name", "Connection_name")
		io, ok1 := r.first("Replica_IO_Running", "Slave_IO_Running")
		sqlRunning, ok2 := r.first("Replica_SQL_Running", "Slave_SQL_Running")
		behind, ok3 := r.first("Seconds_Behind_Source", "Seconds_Behind_Master")
		if !ok1 || !ok2 || !ok3 {
			return Measurement{}, fmt.Errorf("unrecognised replica status: no IO/SQL running or Seconds_Behind column among %d columns", len(r))
		}
		reading := channelReading{name: channel, delay: sqlDelay(r)}
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
			reading.notFlowing = strings.Join(why, "; ")
			readings = append(readings, reading)
			continue
		}
		secs, err := strconv.ParseUint(behind.String, 10, 64)
		if err != nil && (behind.String == "" || !allDigits(behind.String)) { // else only too large: it saturates below
			return Measurement{}, fmt.Errorf("channel %q: Seconds_Behind_Source %q is not a number of seconds", channel, behind.String)
		} else if err != nil {
			secs = math.MaxUint64
		}
		// Saturating: 9223372037s and more would wrap to a negative lag.
		reading.lag = satMul(time.Second, saturate(secs))
		readings = append(readings, reading)
	}
	m, counted := combineChannels(cfg, readings)
	var backlog []statusRow
	for _, r := range rows {
		if counted[r.text("Channel_Name", "Connection_name")] && !(cfg.beyondDelay && sqlDelay(r) > 0) {
			backlog = append(backlog, r)
		}
	}
	m.Backlog = unknownBacklog()
	if len(backlog) > 0 {
		m.Backlog = replicaStatusBacklog(backlog)
	}
	return m, nil
}

// sqlDelay is the channel's configured delay, SQL_Delay (MASTER_DELAY,
// SOURCE_DELAY). A value that is missing, not a number, or too large for a
// time.Duration reads as no delay, which leaves the lag whole: toward
// throttled.
func sqlDelay(r statusRow) time.Duration {
	v, ok := r.first("SQL_Delay")
	if !ok || !v.Valid {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v.String), 10, 64)
	if err != nil {
		return 0
	}
	return delaySeconds(saturate(n))
}

// replicaStatusBacklog sums the channels' backlogs (see ReplicaStatusSource).
// appliedTransactions sums the applied position over the union of the
// channels' GTID domains (MySQL: source UUIDs and tags), so that a domain
// that several connections list counts once. appliedBytes sums the channels'
// Exec_Source_Log_Pos, and appliedFile names each channel's
// Relay_Source_Log_File, so that two readings compare only while no channel
// changed file.
func replicaStatusBacklog(rows []statusRow) Backlog {
	b := Backlog{Known: true, bytesExact: true}
	applied := map[string]int64{}
	files := make([]string, 0, len(rows))
	for _, r := range rows {
		b.delayed = b.delayed || sqlDelay(r) > 0
		txns, ok := channelTransactions(r, applied)
		if !ok {
			return unknownBacklog()
		}
		b.Transactions = addCount(b.Transactions, txns)
		bytes, exact := channelBytes(r)
		b.Bytes = addCount(b.Bytes, bytes)
		b.bytesExact = b.bytesExact && exact
		exec, execOK := logPosition(r, "Exec_Source_Log_Pos", "Exec_Master_Log_Pos")
		if !execOK {
			exec = -1
		}
		b.appliedBytes = addCount(b.appliedBytes, exec)
		file := r.text("Relay_Source_Log_File", "Relay_Master_Log_File")
		if channel := r.text("Channel_Name", "Connection_name"); channel != "" {
			file = channel + "/" + file
		}
		files = append(files, file)
	}
	keys := make([]string, 0, len(applied))
	for k := range applied {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.appliedTransactions = addCount(b.appliedTransactions, applied[k])
	}
	b.appliedFile = strings.Join(files, ",")
	b.Known = b.Transactions >= 0 || b.Bytes >= 0
	return b
}

// unknownBacklog is the backlog of a measurement that could not compare the
// received and applied positions.
func unknownBacklog() Backlog {
	return Backlog{Transactions: -1, Bytes: -1, appliedBytes: -1}
}

// addCount adds two non-negative counts, saturating at math.MaxInt64; -1
// (unknown) in either makes the sum unknown.
func addCount(a, b int64) int64 {
	switch {
	case a < 0 || b < 0:
		return -1
	case a > math.MaxInt64-b:
		return math.MaxInt64
	}
	return a + b
}

// channelTransactions counts one channel's received but unapplied
// transactions from its GTID positions, and records its applied positions in
// applied (by domain or source). It returns -1 when the channel replicates
// without GTIDs, and false when a GTID list does not parse.
func channelTransactions(r statusRow, applied map[string]int64) (int64, bool) {
	if ioPos, ok := r["Gtid_IO_Pos"]; ok { // MariaDB
		slavePos, ok := r["Gtid_Slave_Pos"]
		if !ok || strings.EqualFold(r.text("Using_Gtid"), "No") {
			return -1, true
		}
		received, err1 := parseMariaDBGTIDList(ioPos.String)
		done, err2 := parseMariaDBGTIDList(slavePos.String)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		var pending int64
		for domain, seq := range received {
			// Applied past received: this connection holds nothing of the
			// domain unapplied (see ReplicaStatusSource).
			if seq > done[domain] {
				pending = addCount(pending, saturate(seq-done[domain]))
			}
			applied[strconv.FormatUint(uint64(domain), 10)] = saturate(done[domain])
		}
		return pending, true
	}
	retrieved, ok1 := r["Retrieved_Gtid_Set"] // MySQL
	executed, ok2 := r["Executed_Gtid_Set"]
	if !ok1 || !ok2 || strings.TrimSpace(retrieved.String) == "" {
		return -1, true
	}
	received, err1 := parseGTIDSet(retrieved.String)
	done, err2 := parseGTIDSet(executed.String)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	var pending int64
	for source, ivs := range received {
		pending = addCount(pending, countNotIn(ivs, done[source]))
		applied[source] = countNotIn(done[source], nil)
	}
	return pending, true
}

// channelBytes is one channel's received but unapplied bytes of the source's
// binary log: exact within one file, else Relay_Log_Space (an upper bound);
// -1 when the columns are missing or not numbers. exact says it is not a
// bound.
func channelBytes(r statusRow) (n int64, exact bool) {
	readFile, ok1 := r.first("Source_Log_File", "Master_Log_File")
	execFile, ok2 := r.first("Relay_Source_Log_File", "Relay_Master_Log_File")
	read, ok3 := logPosition(r, "Read_Source_Log_Pos", "Read_Master_Log_Pos")
	exec, ok4 := logPosition(r, "Exec_Source_Log_Pos", "Exec_Master_Log_Pos")
	if ok1 && ok2 && ok3 && ok4 && readFile.String == execFile.String && read >= exec {
		return read - exec, true
	}
	if space, ok := logPosition(r, "Relay_Log_Space"); ok {
		return space, false
	}
	return -1, false
}

// logPosition reads a byte count or binary log position, saturating at
// math.MaxInt64 (the server's counters are unsigned 64-bit).
func logPosition(r statusRow, names ...string) (int64, bool) {
	v, ok := r.first(names...)
	if !ok || !v.Valid {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v.String), 10, 64)
	if err != nil {
		return 0, false
	}
	return saturate(n), true
}

// saturate converts an unsigned count to int64, saturating at math.MaxInt64.
func saturate(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}

// parseMariaDBGTIDList parses a MariaDB GTID position, "domain-server-seq"
// entries separated by commas, into the sequence number per domain. "" is
// the empty position. A domain listed twice keeps its highest number.
func parseMariaDBGTIDList(s string) (map[uint32]uint64, error) {
	out := map[uint32]uint64{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, entry := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(entry), "-")
		if len(parts) != 3 {
			return nil, fmt.Errorf("cannot parse GTID %q in %q", entry, s)
		}
		domain, err1 := strconv.ParseUint(parts[0], 10, 32)
		_, err2 := strconv.ParseUint(parts[1], 10, 32)
		seq, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("cannot parse GTID %q in %q", entry, s)
		}
		out[uint32(domain)] = max(out[uint32(domain)], seq)
	}
	return out, nil
}

// seqInterval is an inclusive range of GTID sequence numbers.
type seqInterval struct{ first, last int64 }

// parseGTIDSet parses a MySQL GTID set ("uuid:1-5:7,uuid2:1-3", on MySQL 8.4
// also "uuid:1-5:tag:1-3"; MySQL breaks lines after the commas) into
// intervals per source: the lower-cased UUID, followed by ":tag" for tagged
// GTIDs. "" is the empty set.
func parseGTIDSet(s string) (map[string][]seqInterval, error) {
	out := map[string][]seqInterval{}
	bad := func() (map[string][]seqInterval, error) { return nil, fmt.Errorf("cannot parse GTID set %q", s) }
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, member := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(member), ":")
		uuid := strings.ToLower(parts[0])
		if len(parts) < 2 || uuid == "" {
			return bad()
		}
		source := uuid
		for _, p := range parts[1:] {
			if p == "" {
				return bad()
			}
			if p[0] < '0' || p[0] > '9' { // a tag: the intervals after it are its own
				source = uuid + ":" + strings.ToLower(p)
				continue
			}
			lo, hi, isRange := strings.Cut(p, "-")
			if !isRange {
				hi = lo
			}
			first, err1 := strconv.ParseInt(lo, 10, 64)
			last, err2 := strconv.ParseInt(hi, 10, 64)
			if err1 != nil || err2 != nil || first < 1 || last < first {
				return bad()
			}
			out[source] = append(out[source], seqInterval{first, last})
		}
	}
	return out, nil
}

// countNotIn counts the sequence numbers in ivs that are not in minus.
func countNotIn(ivs, minus []seqInterval) int64 {
	var n int64
	minus = mergeIntervals(minus)
	for _, iv := range mergeIntervals(ivs) {
		size := iv.last - iv.first + 1
		for _, m := range minus {
			if lo, hi := max(iv.first, m.first), min(iv.last, m.last); lo <= hi {
				size -= hi - lo + 1
			}
		}
		n = addCount(n, size)
	}
	return n
}

// mergeIntervals sorts intervals and merges those that overlap or touch.
func mergeIntervals(ivs []seqInterval) []seqInterval {
	sorted := append([]seqInterval(nil), ivs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].first < sorted[j].first })
	var out []seqInterval
	for _, iv := range sorted {
		if n := len(out); n > 0 && iv.first-1 <= out[n-1].last { // first >= 1: no overflow
			out[n-1].last = max(out[n-1].last, iv.last)
			continue
		}
		out = append(out, iv)
	}
	return out
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
