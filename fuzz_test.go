package throttler

import (
	"database/sql"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fuzz targets for every parser of server output. Their property is the
// throttler's: never panic, and never read input that is not a healthy
// reading as a healthy one (a negative lag, lag 0 for a lag that is not 0, a
// garbage number accepted as a value). The seed corpora in testdata/fuzz run
// as unit tests under go test; make test also fuzzes each target briefly.

func FuzzParseFlavor(f *testing.F) {
	for _, v := range []string{"8.0.36", "10.11.6-MariaDB-0+deb12u1", "8.0.mysql_aurora.3.05.2", "5.7.44-log", "", "vitess"} {
		f.Add(v, "")
	}
	f.Fuzz(func(t *testing.T, version, comment string) {
		fl, err := ParseFlavor(version, comment)
		if err != nil {
			assert.Zero(t, fl.Major, "a version that does not parse has no major")
			assert.Zero(t, fl.Minor)
			return
		}
		assert.GreaterOrEqual(t, fl.Major, 0)
		assert.GreaterOrEqual(t, fl.Minor, 0)
		major, rest, _ := strings.Cut(version, ".")
		assert.True(t, allDigits(major) && major != "", "major %q accepted", major)
		assert.True(t, rest != "" && rest[0] >= '0' && rest[0] <= '9', "minor %q accepted", rest)
	})
}

// FuzzReplicaStatus feeds one SHOW REPLICA STATUS row (MariaDB's or MySQL's
// columns) through replicaStatusLag, GTID lists and sets included.
func FuzzReplicaStatus(f *testing.F) {
	f.Add(true, "Yes", "Yes", "42", "Slave_Pos", "0-1-7", "0-1-5", "mysql-bin.000001", "mysql-bin.000001", "1857", "1500", "2459")
	f.Add(false, "Yes", "Yes", "0", "", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7:9", "b.1", "b.2", "10", "20", "30")
	f.Add(true, "Connecting", "Yes", "", "No", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, mariadb bool, io, sqlRunning, behind, usingGtid, received, applied, readFile, execFile, readPos, execPos, space string) {
		r := statusRow{
			"Slave_IO_Running":      {String: io, Valid: true},
			"Slave_SQL_Running":     {String: sqlRunning, Valid: true},
			"Seconds_Behind_Master": {String: behind, Valid: behind != ""},
			"Master_Log_File":       {String: readFile, Valid: true},
			"Relay_Master_Log_File": {String: execFile, Valid: true},
			"Read_Master_Log_Pos":   {String: readPos, Valid: true},
			"Exec_Master_Log_Pos":   {String: execPos, Valid: true},
			"Relay_Log_Space":       {String: space, Valid: true},
		}
		if mariadb {
			r["Using_Gtid"] = sql.NullString{String: usingGtid, Valid: true}
			r["Gtid_IO_Pos"] = sql.NullString{String: received, Valid: true}
			r["Gtid_Slave_Pos"] = sql.NullString{String: applied, Valid: true}
		} else {
			r["Retrieved_Gtid_Set"] = sql.NullString{String: received, Valid: true}
			r["Executed_Gtid_Set"] = sql.NullString{String: applied, Valid: true}
		}
		m, err := replicaStatusLag(channelConfig{}, []statusRow{r})
		if err != nil {
			return
		}
		// Beyond a configured delay (any text in SQL_Delay): never
		// negative, never more than the whole lag.
		r["SQL_Delay"] = sql.NullString{String: space, Valid: true}
		beyond, err := replicaStatusLag(channelConfig{beyondDelay: true}, []statusRow{r})
		require.NoError(t, err, "SQL_Delay never makes a reading fail")
		assert.Equal(t, m.NotFlowing, beyond.NotFlowing)
		assert.GreaterOrEqual(t, beyond.Lag, time.Duration(0))
		assert.LessOrEqual(t, beyond.Lag, m.Lag)
		b := m.Backlog
		if b.Known {
			assert.GreaterOrEqual(t, b.Transactions, int64(-1))
			assert.GreaterOrEqual(t, b.Bytes, int64(-1))
			assert.False(t, b.Transactions < 0 && b.Bytes < 0, "a known backlog counts something")
		}
		if m.NotFlowing != "" {
			return
		}
		assert.Equal(t, "Yes", io, "only running threads flow")
		assert.Equal(t, "Yes", sqlRunning)
		require.NotEmpty(t, behind, "NULL lag never reads as flowing")
		assert.True(t, allDigits(behind), "Seconds_Behind %q accepted", behind)
		assert.GreaterOrEqual(t, m.Lag, time.Duration(0), "a lag is never negative")
		if strings.TrimLeft(behind, "0") != "" {
			assert.GreaterOrEqual(t, m.Lag, time.Second, "Seconds_Behind %q read as under a second", behind)
		}
	})
}

// FuzzGTIDSets checks the GTID parsers and the count of a set's difference,
// which must never go negative (a negative backlog would read as none).
func FuzzGTIDSets(f *testing.F) {
	f.Add("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10:12", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", "0-1-7,1-2-3", "0-1-5")
	f.Add("u:1-9223372036854775807", "u:1", "0-1-18446744073709551615", "")
	f.Fuzz(func(t *testing.T, received, executed, mariaReceived, mariaApplied string) {
		a, err1 := parseGTIDSet(received)
		b, err2 := parseGTIDSet(executed)
		if err1 == nil && err2 == nil {
			for source, ivs := range a {
				for _, iv := range ivs {
					assert.True(t, iv.first >= 1 && iv.last >= iv.first, "%+v", iv)
				}
				assert.GreaterOrEqual(t, countNotIn(ivs, b[source]), int64(0))
				assert.GreaterOrEqual(t, countNotIn(ivs, nil), countNotIn(ivs, b[source]), "a difference is no larger than the set")
			}
		}
		_, _ = parseMariaDBGTIDList(mariaReceived)
		_, _ = parseMariaDBGTIDList(mariaApplied)
	})
}

// FuzzPerformanceSchemaLag feeds one channel with one worker, its times as
// the server sends UNIX_TIMESTAMP text, through performanceSchemaLag.
func FuzzPerformanceSchemaLag(f *testing.F) {
	f.Add("ON", "ON", "1795441436.500000", "1795441436.400000", "1795441430", "u:7", "1795441436.0", "u:6", "1795441435.9", "", "")
	f.Add("ON", "ON", "1795441436.5", "", "", "ANONYMOUS", "", "ANONYMOUS", "1795441400", "ANONYMOUS", "1795441300")
	f.Fuzz(func(t *testing.T, receiver, worker, now, heartbeat, queuedAt, queued, appliedAt, applied, applyingAt, applying, queuedCommit string) {
		var ts [6]unixTime
		for i, s := range []string{now, heartbeat, queuedAt, appliedAt, applyingAt, queuedCommit} {
			if ts[i].Scan([]byte(s)) != nil {
				return // the row does not scan: an error, not a reading
			}
		}
		if ts[0].t.IsZero() {
			return // Measure refuses a row without the server's time
		}
		row := performanceSchemaRow{
			Now: ts[0].t, Channel: "", ReceiverState: receiver, LastHeartbeat: ts[1].t,
			LastQueued: queued, LastQueuedImmediateCommit: ts[2].t, LastQueuedCommit: ts[5].t, LastQueuedEnqueue: ts[2].t,
			HasWorker: true, WorkerState: worker, LastApplied: applied, LastAppliedAt: ts[3].t,
			Applying: applying, ApplyingStarted: ts[4].t,
		}
		m, err := performanceSchemaLag(channelConfig{}, []performanceSchemaRow{row}, nil)
		require.NoError(t, err, "one channel is a replica")
		assert.GreaterOrEqual(t, m.Lag, time.Duration(0), "a lag is never negative")
		if m.NotFlowing == "" {
			assert.True(t, strings.EqualFold(receiver, "ON") && strings.EqualFold(worker, "ON"), "only running threads flow")
		}
	})
}

// FuzzHeartbeat feeds a replica clock and a ts, as the server sends them,
// through the heartbeat source.
func FuzzHeartbeat(f *testing.F) {
	f.Add("2026-11-23 12:00:01.500000", "2026-11-23T12:00:00.250000")
	f.Add("2026-11-23 12:00:01", "2026-11-23 12:00:00")
	f.Add("2026-11-23 12:00:01", "garbage")
	src, err := HeartbeatSource(HeartbeatConfig{})
	require.NoError(f, err)
	hb := src.(*heartbeatSource)
	f.Fuzz(func(t *testing.T, now, ts string) {
		var w heartbeatWallTime
		if w.Scan([]byte(now)) != nil {
			return
		}
		m, err := hb.lag(heartbeatRow{Now: w.t, TS: &ts})
		if err != nil {
			return
		}
		assert.GreaterOrEqual(t, m.Lag, time.Duration(0), "a lag is never negative")
	})
}

// FuzzAuroraLag feeds one reader's row through auroraLag.
func FuzzAuroraLag(f *testing.F) {
	f.Add(4500.5, "2026-11-23 12:00:00.500000", "2026-11-23 12:00:00.300000", "5f3d1c2a", int64(0))
	f.Add(-1.0, "2026-11-23 12:00:00", "2026-11-23 12:00:00", "MASTER_SESSION_ID", int64(-1))
	f.Fuzz(func(t *testing.T, lag float64, now, last, session string, freshness int64) {
		var n, l heartbeatWallTime
		if n.Scan([]byte(now)) != nil || l.Scan([]byte(last)) != nil {
			return
		}
		row := auroraRow{Now: n.t, ServerID: "r1", SessionID: session, Lag: &lag, LastUpdate: l.t}
		m, err := auroraLag([]auroraRow{row}, AuroraConfig{Freshness: time.Duration(freshness)})
		if err != nil {
			return
		}
		assert.NotEqual(t, auroraWriterSession, session, "the writer has no lag to read")
		if m.NotFlowing != "" {
			return
		}
		assert.GreaterOrEqual(t, m.Lag, time.Duration(0), "a lag is never negative")
		assert.False(t, math.IsNaN(lag) || lag < 0, "lag %v read as a lag", lag)
		if lag >= 1 {
			assert.Positive(t, m.Lag, "a lag of %vms read as none", lag)
		}
	})
}

// FuzzParseReplicaHosts feeds one SHOW REPLICAS row through
// parseReplicaHosts.
func FuzzParseReplicaHosts(f *testing.F) {
	f.Add("2", "replica-a", "3306", true)
	f.Add("4294967296", "", "", false)
	f.Fuzz(func(t *testing.T, id, host, port string, portValid bool) {
		hosts, err := parseReplicaHosts([]statusRow{{
			"Server_Id": {String: id, Valid: true},
			"Host":      {String: host, Valid: true},
			"Port":      {String: port, Valid: portValid},
		}})
		if err != nil {
			return
		}
		require.Len(t, hosts, 1)
		sid, perr := strconv.ParseUint(id, 10, 32)
		require.NoError(t, perr, "Server_Id %q accepted", id)
		assert.EqualValues(t, sid, hosts[0].ServerID)
		assert.True(t, hosts[0].Port >= 0 && hosts[0].Port <= 65535, "port %d", hosts[0].Port)
		assert.Equal(t, host, hosts[0].Host)
	})
}

// FuzzLoadParseValue: a status value is a finite decimal number, read as
// strconv reads it, and exactly as an unsigned integer when it is one; or an
// error.
func FuzzLoadParseValue(f *testing.F) {
	for _, s := range []string{"17", "18446744073709551615", "18446744073709551616", "-3", "", "1.5", " 4", "NaN", "inf", "1e999", "0x10", "1_0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := loadParseValue(s)
		if err != nil {
			return
		}
		assert.False(t, math.IsNaN(v.f) || math.IsInf(v.f, 0), "%q read as %v", s, v.f)
		p, perr := strconv.ParseFloat(s, 64)
		require.NoError(t, perr, "%q accepted as a value", s)
		assert.Equal(t, p, v.f)
		if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil {
			assert.True(t, v.exact, "%q", s)
			assert.Equal(t, u, v.u, "%q", s)
		} else {
			assert.False(t, v.exact, "%q", s)
		}
	})
}

// FuzzQueryNumber: a query's answer is a finite number or an error.
func FuzzQueryNumber(f *testing.F) {
	for _, s := range []string{"3", "-0.50", "1e3", "1e999", "NaN", "Inf", "", "0x10", "１"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := queryNumber([]byte(s))
		if err != nil {
			return
		}
		assert.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%q read as %v", s, v)
	})
}

// FuzzGaleraStatus feeds the wsrep status variables through the parser and
// the verdict: whatever the text, a reading is either an error or a status
// whose clear verdict means a Synced, ready, Primary node with a queue
// below the threshold.
func FuzzGaleraStatus(f *testing.F) {
	f.Add("Galera", "4", "Synced", "ON", "Primary", "0", "0", "0")
	f.Add("Galera", "2", "Donor/Desynced", "ON", "Primary", "69", "123456789", "123456790")
	f.Add("Galera", "0", "Initialized", "OFF", "non-Primary", "0", "18446744073709551615", "3")
	f.Add("", "", "", "OFF", "Disconnected", "", "", "")
	f.Add("Galera", "4", "Synced", "ON", "Primary", "-1", "99999999999999999999", "1e9")
	f.Fuzz(func(t *testing.T, provider, state, comment, ready, cluster, queue, paused1, paused2 string) {
		vals := map[string]string{"wsrep_provider_name": provider, "wsrep_local_state_comment": comment,
			"wsrep_ready": ready, "wsrep_cluster_status": cluster, "wsrep_local_recv_queue": queue}
		if state != "" {
			vals["wsrep_local_state"] = state
		}
		g := &Galera{cfg: GaleraConfig{RecvQueue: DefaultGaleraRecvQueue, FlowControl: DefaultGaleraFlowControl}}
		at := time.Unix(0, 0)
		for i, p := range []string{paused1, paused2} {
			vals["wsrep_flow_control_paused_ns"] = p
			r, err := parseGaleraStatus(vals)
			if err != nil {
				return
			}
			st := g.judgeFlowControl(r, at.Add(time.Duration(i)*time.Second))
			require.False(t, math.IsNaN(st.FlowControl))
			assert.True(t, st.FlowControl >= 0 && st.FlowControl <= 1, "share %v", st.FlowControl)
			assert.GreaterOrEqual(t, st.RecvQueue, int64(0))
			v := g.verdict(st)
			if v.Throttled {
				assert.True(t, strings.HasPrefix(v.Reason, "galera: "), v.Reason)
				continue
			}
			assert.Equal(t, "4", state, "only state 4 is synced")
			assert.True(t, strings.EqualFold(ready, "ON"))
			assert.Equal(t, "Primary", cluster)
			q, err := strconv.ParseInt(queue, 10, 64)
			require.NoError(t, err, "a clear verdict read the queue %q as a number", queue)
			assert.Less(t, q, int64(DefaultGaleraRecvQueue))
		}
	})
}
