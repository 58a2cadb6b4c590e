// Package mysql8test emulates the part of a MySQL 8.0 replica that the
// throttler's performance_schema lag source reads, so that the real query runs
// over the real MySQL protocol through github.com/go-sql-driver/mysql.
//
// An Emulator is an in-process github.com/dolthub/go-mysql-server listening on
// 127.0.0.1 with a free port. It hosts a database named performance_schema
// holding MySQL 8.0's definitions of replication_connection_status (20
// columns) and replication_applier_status_by_worker (24 columns), minus
// ENGINE=PERFORMANCE_SCHEMA. Tests write the rows a real replica would show
// (InsertConnection, InsertWorker) and measure. For Group Replication members
// it also holds replication_group_members and replication_group_member_stats
// (InsertGroupMember, InsertGroupMemberStats), and global_variables and
// global_status, which hold only the rows a test sets (SetGlobalVariable,
// SetGlobalStatus).
//
// What it emulates beyond the tables, per Emulator: @@performance_schema (1
// unless SetPerformanceSchema(false)), @@version and @@version_comment
// ("8.0.36", "MySQL Community Server - GPL" unless WithVersion),
// @@server_uuid (DefaultServerUUID unless WithServerUUID), and the
// system time zone (time_zone=SYSTEM; the process's local zone unless
// WithTimeZone): NOW() and its synonyms show the statement's start in it,
// timestamps are written as wall clocks in it, and UNIX_TIMESTAMP converts
// them with its offset at each instant.
//
// Gaps of go-mysql-server that matter here (see shared/notes/mysql8-emulation.md):
//   - an unset timestamp is written as '0000-00-00 00:00:00': the engine
//     rejects the zero timestamp with a fraction that MySQL shows;
//   - TIMESTAMP columns hold wall clocks, not instants, so timestamps are
//     written as wall clocks in the emulator's zone, computed in Go (SQL date
//     arithmetic drops fractional seconds). In the hour repeated after a
//     fall-back switch a wall clock is ambiguous; UNIX_TIMESTAMP reads it as
//     the earlier instant (MySQL stores the instant and has no ambiguity);
//   - go-mysql-server's NOW() follows the process's local zone, and its
//     UNIX_TIMESTAMP(timestamp_column) converts every wall clock with the
//     zone's current offset: an hour off for a timestamp from the other side
//     of a daylight-saving switch. The emulator replaces both (NOW,
//     CURRENT_TIMESTAMP, LOCALTIME, LOCALTIMESTAMP, UNIX_TIMESTAMP) through
//     its database provider, which the engine asks before its built-ins; see
//     timezone.go. UNIX_TIMESTAMP of a TIMESTAMP(6) column, UNIX_TIMESTAMP()
//     and MICROSECOND(NOW(6)) then behave as on MySQL (a DECIMAL with six
//     digits, 0 for the zero timestamp);
//   - the in-memory database is not safe for concurrent statements: every
//     statement's commit writes back the tables it read, so a SELECT that
//     started before an UPDATE and ends after it undoes the UPDATE (a
//     throttler polling while a test writes lost the write now and then).
//     The emulator runs one statement at a time (see serializer);
//   - system variables are process-wide in go-mysql-server; the per-emulator
//     ones above are served by a wrapper registered once (see emuVar);
//   - starting an engine resets process-wide status variables, so emulators
//     must not be started while another one serves queries (tests in this
//     module do not run emulators in parallel).
package mysql8test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	gms "github.com/dolthub/go-mysql-server/sql"
	"github.com/dolthub/vitess/go/mysql"
	"github.com/dolthub/vitess/go/sqltypes"
	querypb "github.com/dolthub/vitess/go/vt/proto/query"
	"github.com/dolthub/vitess/go/vt/sqlparser"
	_ "github.com/go-sql-driver/mysql" // the client under test
	"github.com/sirupsen/logrus"
)

// Table definitions from the MySQL 8.0 reference manual (SHOW CREATE TABLE on
// 8.0.36), without ENGINE=PERFORMANCE_SCHEMA. The collation makes string
// comparisons case-insensitive, as on MySQL.
const (
	createConnectionStatus = "CREATE TABLE performance_schema.replication_connection_status (\n" +
		"  CHANNEL_NAME char(64) NOT NULL,\n" +
		"  GROUP_NAME char(36) NOT NULL,\n" +
		"  SOURCE_UUID char(36) NOT NULL,\n" +
		"  THREAD_ID bigint unsigned DEFAULT NULL,\n" +
		"  SERVICE_STATE enum('ON','OFF','CONNECTING') NOT NULL,\n" +
		"  COUNT_RECEIVED_HEARTBEATS bigint unsigned NOT NULL DEFAULT '0',\n" +
		"  LAST_HEARTBEAT_TIMESTAMP timestamp(6) NOT NULL COMMENT 'Shows when the most recent heartbeat signal was received.',\n" +
		"  RECEIVED_TRANSACTION_SET longtext NOT NULL,\n" +
		"  LAST_ERROR_NUMBER int NOT NULL,\n" +
		"  LAST_ERROR_MESSAGE varchar(1024) NOT NULL,\n" +
		"  LAST_ERROR_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_QUEUED_TRANSACTION char(57) DEFAULT NULL,\n" +
		"  LAST_QUEUED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_QUEUED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_QUEUED_TRANSACTION_START_QUEUE_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  QUEUEING_TRANSACTION char(57) DEFAULT NULL,\n" +
		"  QUEUEING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  QUEUEING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  QUEUEING_TRANSACTION_START_QUEUE_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  PRIMARY KEY (CHANNEL_NAME),\n" +
		"  KEY THREAD_ID (THREAD_ID)\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"

	createApplierStatusByWorker = "CREATE TABLE performance_schema.replication_applier_status_by_worker (\n" +
		"  CHANNEL_NAME char(64) NOT NULL,\n" +
		"  WORKER_ID bigint unsigned NOT NULL,\n" +
		"  THREAD_ID bigint unsigned DEFAULT NULL,\n" +
		"  SERVICE_STATE enum('ON','OFF') NOT NULL,\n" +
		"  LAST_ERROR_NUMBER int NOT NULL,\n" +
		"  LAST_ERROR_MESSAGE varchar(1024) NOT NULL,\n" +
		"  LAST_ERROR_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION char(57) DEFAULT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_START_APPLY_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_END_APPLY_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  APPLYING_TRANSACTION char(57) DEFAULT NULL,\n" +
		"  APPLYING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  APPLYING_TRANSACTION_IMMEDIATE_COMMIT_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  APPLYING_TRANSACTION_START_APPLY_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_RETRIES_COUNT bigint unsigned NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_LAST_TRANSIENT_ERROR_NUMBER int NOT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_LAST_TRANSIENT_ERROR_MESSAGE varchar(1024) DEFAULT NULL,\n" +
		"  LAST_APPLIED_TRANSACTION_LAST_TRANSIENT_ERROR_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  APPLYING_TRANSACTION_RETRIES_COUNT bigint unsigned NOT NULL,\n" +
		"  APPLYING_TRANSACTION_LAST_TRANSIENT_ERROR_NUMBER int NOT NULL,\n" +
		"  APPLYING_TRANSACTION_LAST_TRANSIENT_ERROR_MESSAGE varchar(1024) DEFAULT NULL,\n" +
		"  APPLYING_TRANSACTION_LAST_TRANSIENT_ERROR_TIMESTAMP timestamp(6) NOT NULL,\n" +
		"  PRIMARY KEY (CHANNEL_NAME,WORKER_ID),\n" +
		"  KEY THREAD_ID (THREAD_ID)\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"
)

// The Group Replication tables, from the same manual and server: this
// member and its peers (replication_group_members, MySQL 8.0.27's eight
// columns), their certifier and applier statistics
// (replication_group_member_stats), and performance_schema's variable
// tables, which hold only what a test sets (SetGlobalVariable,
// SetGlobalStatus).
const (
	createGroupMembers = "CREATE TABLE performance_schema.replication_group_members (\n" +
		"  CHANNEL_NAME char(64) NOT NULL,\n" +
		"  MEMBER_ID char(36) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  MEMBER_HOST char(255) CHARACTER SET ascii NOT NULL,\n" +
		"  MEMBER_PORT int DEFAULT NULL,\n" +
		"  MEMBER_STATE char(64) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  MEMBER_ROLE char(64) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  MEMBER_VERSION char(64) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  MEMBER_COMMUNICATION_STACK char(64) COLLATE utf8mb4_bin NOT NULL\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"

	createGroupMemberStats = "CREATE TABLE performance_schema.replication_group_member_stats (\n" +
		"  CHANNEL_NAME char(64) NOT NULL,\n" +
		"  VIEW_ID char(60) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  MEMBER_ID char(36) COLLATE utf8mb4_bin NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_IN_QUEUE bigint unsigned NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_CHECKED bigint unsigned NOT NULL,\n" +
		"  COUNT_CONFLICTS_DETECTED bigint unsigned NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_ROWS_VALIDATING bigint unsigned NOT NULL,\n" +
		"  TRANSACTIONS_COMMITTED_ALL_MEMBERS longtext NOT NULL,\n" +
		"  LAST_CONFLICT_FREE_TRANSACTION text NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE bigint unsigned NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_REMOTE_APPLIED bigint unsigned NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_LOCAL_PROPOSED bigint unsigned NOT NULL,\n" +
		"  COUNT_TRANSACTIONS_LOCAL_ROLLBACK bigint unsigned NOT NULL\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"

	createGlobalVariables = "CREATE TABLE performance_schema.global_variables (\n" +
		"  VARIABLE_NAME varchar(64) NOT NULL,\n" +
		"  VARIABLE_VALUE varchar(1024) DEFAULT NULL,\n" +
		"  PRIMARY KEY (VARIABLE_NAME)\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"

	createGlobalStatus = "CREATE TABLE performance_schema.global_status (\n" +
		"  VARIABLE_NAME varchar(64) NOT NULL,\n" +
		"  VARIABLE_VALUE varchar(1024) DEFAULT NULL,\n" +
		"  PRIMARY KEY (VARIABLE_NAME)\n" +
		") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"
)

// Table names, for DropTable.
const (
	ConnectionStatusTable = "replication_connection_status"
	WorkerStatusTable     = "replication_applier_status_by_worker"
	GroupMembersTable     = "replication_group_members"
	GroupMemberStatsTable = "replication_group_member_stats"
	GlobalVariablesTable  = "global_variables"
	GlobalStatusTable     = "global_status"
)

// Defaults an Emulator reports unless WithVersion (or WithServerUUID) says
// otherwise.
const (
	DefaultVersion        = "8.0.36"
	DefaultVersionComment = "MySQL Community Server - GPL"
	DefaultServerUUID     = "8a94f357-aab4-11df-86ab-c80aa9429562"
)

// Connection is one row of performance_schema.replication_connection_status:
// the receiver (IO) thread of one channel. A zero time.Time is written as the
// unset timestamp; an empty ServiceState as ON. THREAD_ID is NULL when the
// state is OFF, as on MySQL, and a made-up thread id otherwise.
type Connection struct {
	Channel                   string // "" is the default channel
	GroupName                 string
	SourceUUID                string
	ServiceState              string // ON, OFF, CONNECTING
	CountReceivedHeartbeats   uint64
	LastHeartbeat             time.Time
	ReceivedTransactionSet    string
	LastErrorNumber           int
	LastErrorMessage          string
	LastErrorTime             time.Time
	LastQueued                string // a GTID, ANONYMOUS, or ""
	LastQueuedOriginalCommit  time.Time
	LastQueuedImmediateCommit time.Time
	LastQueuedStartQueue      time.Time
	LastQueuedEndQueue        time.Time
	Queueing                  string
	QueueingOriginalCommit    time.Time
	QueueingImmediateCommit   time.Time
	QueueingStartQueue        time.Time
}

// Worker is one row of performance_schema.replication_applier_status_by_worker:
// one applier worker of one channel (WORKER_ID 0 for a single-threaded
// applier, 1..N for replica_parallel_workers=N). Zero values as in Connection.
type Worker struct {
	Channel                          string
	WorkerID                         uint64
	ServiceState                     string // ON, OFF
	LastErrorNumber                  int
	LastErrorMessage                 string
	LastErrorTime                    time.Time
	LastApplied                      string
	LastAppliedOriginalCommit        time.Time
	LastAppliedImmediateCommit       time.Time
	LastAppliedStartApply            time.Time
	LastAppliedEndApply              time.Time
	Applying                         string
	ApplyingOriginalCommit           time.Time
	ApplyingImmediateCommit          time.Time
	ApplyingStartApply               time.Time
	LastAppliedRetries               uint64
	LastAppliedTransientErrorNumber  int
	LastAppliedTransientErrorMessage string
	LastAppliedTransientErrorTime    time.Time
	ApplyingRetries                  uint64
	ApplyingTransientErrorNumber     int
	ApplyingTransientErrorMessage    string
	ApplyingTransientErrorTime       time.Time
}

// GroupMember is one row of performance_schema.replication_group_members.
// An empty Channel is group_replication_applier, an empty State ONLINE; Role
// is written as given ("" as on an OFFLINE member).
type GroupMember struct {
	Channel            string
	MemberID           string // the member's @@server_uuid
	Host               string
	Port               int
	State              string // ONLINE, RECOVERING, OFFLINE, ERROR, UNREACHABLE
	Role               string // PRIMARY, SECONDARY
	Version            string
	CommunicationStack string // XCOM, MYSQL
}

// GroupMemberStats is one row of
// performance_schema.replication_group_member_stats. An empty Channel is
// group_replication_applier.
type GroupMemberStats struct {
	Channel              string
	ViewID               string
	MemberID             string
	InQueue              uint64 // COUNT_TRANSACTIONS_IN_QUEUE: waiting for certification
	Checked              uint64
	ConflictsDetected    uint64
	RowsValidating       uint64
	CommittedAllMembers  string
	LastConflictFree     string
	RemoteInApplierQueue uint64 // COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE
	RemoteApplied        uint64
	LocalProposed        uint64
	LocalRollback        uint64
}

// Option configures Start.
type Option func(*config)

type config struct {
	version, comment string
	serverUUID       string
	perfSchema       bool
	loc              *time.Location
}

// WithVersion sets what the emulator reports as @@version and
// @@version_comment, and in the protocol handshake.
func WithVersion(version, comment string) Option {
	return func(c *config) { c.version, c.comment = version, comment }
}

// WithServerUUID sets @@server_uuid (default DefaultServerUUID).
func WithServerUUID(uuid string) Option {
	return func(c *config) { c.serverUUID = uuid }
}

// WithPerformanceSchema sets @@performance_schema at start (default ON).
func WithPerformanceSchema(on bool) Option {
	return func(c *config) { c.perfSchema = on }
}

// WithTimeZone sets the emulated server's system time zone (default: the
// process's local zone), which sessions use with time_zone=SYSTEM. With
// TransitionZone it puts a daylight-saving switch between two rows' instants.
func WithTimeZone(loc *time.Location) Option {
	return func(c *config) { c.loc = loc }
}

// Emulator is a running emulated MySQL 8.0 replica.
type Emulator struct {
	// Addr is the host:port it listens on (127.0.0.1).
	Addr string
	// DSN connects as root to no default database, without parseTime.
	DSN string
	// DB is an admin pool for writing rows (default database
	// performance_schema, interpolateParams=true).
	DB *sql.DB

	// ServerUUID is what @@server_uuid reports.
	ServerUUID string

	version, comment string
	perfSchema       atomic.Bool
	loc              *time.Location // the system time zone

	engine   *sqle.Engine
	srv      *server.Server
	ln       *trackingListener
	served   chan struct{}
	mu       sync.Mutex
	dbs      []*sql.DB
	closed   bool
	closeErr error
}

// startMu serializes engine start-up: sqle.New resets process-wide status
// variables.
var startMu sync.Mutex

// Start starts an emulator with empty tables and registers its Close with
// tb.Cleanup. It fails tb if the server cannot start.
func Start(tb testing.TB, opts ...Option) *Emulator {
	tb.Helper()
	e, err := New(opts...)
	if err != nil {
		tb.Fatalf("mysql8test: start: %v", err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("mysql8test: close: %v", err)
		}
	})
	return e
}

// New starts an emulator; the caller must Close it. Most tests want Start.
func New(opts ...Option) (*Emulator, error) {
	cfg := config{version: DefaultVersion, comment: DefaultVersionComment, serverUUID: DefaultServerUUID, perfSchema: true, loc: time.Local}
	for _, o := range opts {
		o(&cfg)
	}
	registerVariables()

	startMu.Lock()
	defer startMu.Unlock()
	if cfg.loc == nil {
		cfg.loc = time.Local
	}
	e := &Emulator{ServerUUID: cfg.serverUUID, version: cfg.version, comment: cfg.comment, loc: cfg.loc, served: make(chan struct{})}
	e.perfSchema.Store(cfg.perfSchema)

	pro := memory.NewDBProvider(memory.NewDatabase("performance_schema"))
	e.engine = sqle.NewDefault(emuProvider{memoryProvider: pro, fns: e.functions()})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.ln = &trackingListener{Listener: raw, open: map[*trackedConn]struct{}{}}
	e.Addr = raw.Addr().String()
	builder := memory.NewSessionBuilder(pro)
	sb := func(ctx context.Context, conn *mysql.Conn, addr string) (gms.Session, error) {
		s, err := builder(ctx, conn, addr)
		if err == nil {
			sessions.Store(s, e)
		}
		return s, err
	}
	var chain server.InterceptorChain
	chain.WithInterceptor(&serializer{})
	e.srv, err = server.NewServer(server.Config{
		Protocol: "tcp",
		Address:  e.Addr,
		Listener: e.ln,
		Version:  cfg.version,
		Options:  []server.Option{chain.Option()},
	}, e.engine, gms.NewContext, sb, nil)
	if err != nil {
		raw.Close()
		return nil, err
	}
	go func() {
		defer close(e.served)
		_ = e.srv.Start() // returns when the listener closes
	}()

	e.DSN = "root@tcp(" + e.Addr + ")/"
	// go-mysql-server resolves DELETE FROM db.table through the current
	// database, so the admin pool uses performance_schema.
	e.DB, err = sql.Open("mysql", e.DSN+"performance_schema?interpolateParams=true")
	if err == nil {
		e.dbs = append(e.dbs, e.DB)
		for _, q := range []string{createConnectionStatus, createApplierStatusByWorker,
			createGroupMembers, createGroupMemberStats, createGlobalVariables, createGlobalStatus} {
			if _, err = e.DB.Exec(q); err != nil {
				break
			}
		}
	}
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// Open returns a new client pool on the emulator, with params (for example
// "parseTime=true") appended to DSN. Close closes it.
func (e *Emulator) Open(tb testing.TB, params string) *sql.DB {
	tb.Helper()
	dsn := e.DSN
	if params != "" {
		dsn += "?" + params
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatalf("mysql8test: open %s: %v", dsn, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		db.Close()
		tb.Fatalf("mysql8test: open after Close")
	}
	e.dbs = append(e.dbs, db)
	return db
}

// Close closes every pool Open returned and DB, stops the server and waits
// until every server connection has been closed. It is idempotent.
func (e *Emulator) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.closeErr
	}
	e.closed = true
	var errs []error
	for _, db := range e.dbs {
		errs = append(errs, db.Close())
	}
	if e.srv != nil {
		errs = append(errs, e.srv.Close())
		<-e.served
	} else {
		errs = append(errs, e.ln.Close())
	}
	// The clients have hung up; give the handlers a moment to notice, then
	// hang up on whatever is left (a pool the test opened itself).
	if !e.ln.wait(500 * time.Millisecond) {
		e.ln.closeAll()
		if !e.ln.wait(3 * time.Second) {
			errs = append(errs, errors.New("server connections still open 3.5s after Close"))
		}
	}
	if err := e.engine.Close(); err != nil && !errors.Is(err, context.Canceled) {
		errs = append(errs, err) // its background threads stop with context.Canceled
	}
	sessions.Range(func(k, v any) bool {
		if v == e {
			sessions.Delete(k)
		}
		return true
	})
	e.closeErr = errors.Join(errs...)
	return e.closeErr
}

// SetPerformanceSchema sets what @@performance_schema reports, at once, on
// every connection.
func (e *Emulator) SetPerformanceSchema(on bool) { e.perfSchema.Store(on) }

// Exec runs a statement on DB, failing tb on error.
func (e *Emulator) Exec(tb testing.TB, query string, args ...any) {
	tb.Helper()
	if _, err := e.DB.Exec(query, args...); err != nil {
		tb.Fatalf("mysql8test: %s: %v", firstLine(query), err)
	}
}

// Clear deletes every row of the replication tables (the state of a server
// that is not a replica, or of performance_schema=OFF).
func (e *Emulator) Clear(tb testing.TB) {
	tb.Helper()
	for _, table := range []string{ConnectionStatusTable, WorkerStatusTable, GroupMembersTable, GroupMemberStatsTable} {
		e.Exec(tb, "DELETE FROM performance_schema."+table)
	}
}

// DropTable drops one of the tables (for example ConnectionStatusTable, as
// on MariaDB, which lacks it).
func (e *Emulator) DropTable(tb testing.TB, name string) {
	tb.Helper()
	e.Exec(tb, "DROP TABLE performance_schema."+name)
}

// InsertConnection writes one replication_connection_status row.
func (e *Emulator) InsertConnection(tb testing.TB, c Connection) {
	tb.Helper()
	state := orDefault(c.ServiceState, "ON")
	e.Exec(tb, "INSERT INTO performance_schema."+ConnectionStatusTable+" VALUES ("+placeholders(20)+")",
		c.Channel, c.GroupName, c.SourceUUID, threadID(state, 30+uint64(len(c.Channel))), state,
		c.CountReceivedHeartbeats, e.Timestamp(c.LastHeartbeat), c.ReceivedTransactionSet,
		c.LastErrorNumber, c.LastErrorMessage, e.Timestamp(c.LastErrorTime),
		c.LastQueued, e.Timestamp(c.LastQueuedOriginalCommit), e.Timestamp(c.LastQueuedImmediateCommit),
		e.Timestamp(c.LastQueuedStartQueue), e.Timestamp(c.LastQueuedEndQueue),
		c.Queueing, e.Timestamp(c.QueueingOriginalCommit), e.Timestamp(c.QueueingImmediateCommit),
		e.Timestamp(c.QueueingStartQueue))
}

// InsertWorker writes one replication_applier_status_by_worker row.
func (e *Emulator) InsertWorker(tb testing.TB, w Worker) {
	tb.Helper()
	state := orDefault(w.ServiceState, "ON")
	e.Exec(tb, "INSERT INTO performance_schema."+WorkerStatusTable+" VALUES ("+placeholders(24)+")",
		w.Channel, w.WorkerID, threadID(state, 50+w.WorkerID), state,
		w.LastErrorNumber, w.LastErrorMessage, e.Timestamp(w.LastErrorTime),
		w.LastApplied, e.Timestamp(w.LastAppliedOriginalCommit), e.Timestamp(w.LastAppliedImmediateCommit),
		e.Timestamp(w.LastAppliedStartApply), e.Timestamp(w.LastAppliedEndApply),
		w.Applying, e.Timestamp(w.ApplyingOriginalCommit), e.Timestamp(w.ApplyingImmediateCommit),
		e.Timestamp(w.ApplyingStartApply),
		w.LastAppliedRetries, w.LastAppliedTransientErrorNumber, w.LastAppliedTransientErrorMessage,
		e.Timestamp(w.LastAppliedTransientErrorTime),
		w.ApplyingRetries, w.ApplyingTransientErrorNumber, w.ApplyingTransientErrorMessage,
		e.Timestamp(w.ApplyingTransientErrorTime))
}

// InsertGroupMember writes one replication_group_members row.
func (e *Emulator) InsertGroupMember(tb testing.TB, m GroupMember) {
	tb.Helper()
	var port any
	if m.Port != 0 {
		port = m.Port
	}
	e.Exec(tb, "INSERT INTO performance_schema."+GroupMembersTable+" VALUES ("+placeholders(8)+")",
		orDefault(m.Channel, "group_replication_applier"), m.MemberID, m.Host, port,
		orDefault(m.State, "ONLINE"), m.Role, orDefault(m.Version, e.version),
		orDefault(m.CommunicationStack, "MYSQL"))
}

// InsertGroupMemberStats writes one replication_group_member_stats row.
func (e *Emulator) InsertGroupMemberStats(tb testing.TB, s GroupMemberStats) {
	tb.Helper()
	e.Exec(tb, "INSERT INTO performance_schema."+GroupMemberStatsTable+" VALUES ("+placeholders(13)+")",
		orDefault(s.Channel, "group_replication_applier"), s.ViewID, s.MemberID,
		s.InQueue, s.Checked, s.ConflictsDetected, s.RowsValidating,
		s.CommittedAllMembers, s.LastConflictFree,
		s.RemoteInApplierQueue, s.RemoteApplied, s.LocalProposed, s.LocalRollback)
}

// SetGlobalVariable sets a row of performance_schema.global_variables.
func (e *Emulator) SetGlobalVariable(tb testing.TB, name, value string) {
	tb.Helper()
	e.setVariableRow(tb, GlobalVariablesTable, name, value)
}

// SetGlobalStatus sets a row of performance_schema.global_status.
func (e *Emulator) SetGlobalStatus(tb testing.TB, name, value string) {
	tb.Helper()
	e.setVariableRow(tb, GlobalStatusTable, name, value)
}

func (e *Emulator) setVariableRow(tb testing.TB, table, name, value string) {
	tb.Helper()
	e.Exec(tb, "DELETE FROM performance_schema."+table+" WHERE VARIABLE_NAME = ?", name)
	e.Exec(tb, "INSERT INTO performance_schema."+table+" VALUES (?, ?)", name, value)
}

// ZeroTimestamp is how an unset timestamp is written. MySQL shows
// '0000-00-00 00:00:00.000000'; go-mysql-server rejects a zero timestamp with
// a fraction and accepts it without one.
const ZeroTimestamp = "0000-00-00 00:00:00"

// Timestamp formats t as an emulator in the process's local time zone (no
// WithTimeZone) must receive it: the local wall clock with microseconds, or
// ZeroTimestamp for the zero time. Emulator.Timestamp formats for any
// emulator, whatever its zone.
func Timestamp(t time.Time) string {
	return formatTimestamp(t, time.Local)
}

// Timestamp formats t as e must receive it: the wall clock in e's system
// time zone with microseconds, or ZeroTimestamp for the zero time.
func (e *Emulator) Timestamp(t time.Time) string {
	return formatTimestamp(t, e.loc)
}

func formatTimestamp(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return ZeroTimestamp
	}
	return t.In(loc).Format("2006-01-02 15:04:05.000000")
}

// memoryProvider is go-mysql-server's in-memory database provider, which
// emuProvider embeds.
type memoryProvider = memory.DbProvider

func threadID(state string, id uint64) any {
	if strings.EqualFold(state, "OFF") {
		return nil
	}
	return id
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// --- per-emulator system variables ---

// sessions maps each go-mysql-server session to the Emulator that built it.
var sessions sync.Map // gms.Session -> *Emulator

var registerOnce sync.Once

// registerVariables replaces, once per process, the system variables an
// Emulator answers for itself. go-mysql-server keeps system variables in one
// process-wide registry, copies them into each session when it starts, and
// reads an unqualified @@name through the variable's session scope. The
// wrapper's scope asks the session's Emulator first, so each Emulator has its
// own values and a change shows at once on every connection. Its
// performance_schema defaults to 1 (go-mysql-server's own is 0, because it
// has no performance_schema).
func registerVariables() {
	registerOnce.Do(func() {
		// go-mysql-server logs every connection at Info level, failed
		// queries and its start-up advice at Warn.
		logrus.SetLevel(logrus.ErrorLevel)
		var vars []gms.SystemVariable
		for _, name := range []string{"performance_schema", "version", "version_comment", "server_uuid"} {
			v, _, ok := gms.SystemVariables.GetGlobal(name)
			msv, isMySQL := v.(*gms.MysqlSystemVariable)
			if !ok || !isMySQL {
				panic(fmt.Sprintf("mysql8test: go-mysql-server has no system variable %s", name))
			}
			cp := *msv
			if name == "performance_schema" {
				cp.Default = int8(1)
			}
			vars = append(vars, emuVar{&cp})
		}
		gms.SystemVariables.AddSystemVariables(vars)
	})
}

type emuVar struct{ *gms.MysqlSystemVariable }

func (v emuVar) GetSessionScope() gms.SystemVariableScope {
	return emuScope{gms.GetMysqlScope(gms.SystemVariableScope_Session)}
}

type emuScope struct{ *gms.MysqlScope }

func (s emuScope) GetValue(ctx *gms.Context, name string, coll gms.CollationID) (any, error) {
	if e, ok := sessions.Load(ctx.Session); ok {
		if v, ok := e.(*Emulator).variable(name); ok {
			return v, nil
		}
	}
	return s.MysqlScope.GetValue(ctx, name, coll)
}

func (e *Emulator) variable(name string) (any, bool) {
	switch strings.ToLower(name) {
	case "performance_schema":
		if e.perfSchema.Load() {
			return int8(1), true
		}
		return int8(0), true
	case "version":
		return e.version, true
	case "version_comment":
		return e.comment, true
	case "server_uuid":
		return e.ServerUUID, true
	}
	return nil, false
}

// --- one statement at a time ---

// serializer runs an emulator's statements one at a time: go-mysql-server's
// in-memory database loses an UPDATE that commits while another session's
// statement runs (that statement's commit writes back the table as it read
// it). Result sets here are small, so a statement never holds the lock
// waiting for a client to read.
type serializer struct{ mu sync.Mutex }

var _ server.Interceptor = (*serializer)(nil)

func (s *serializer) Priority() int { return 0 }

func (s *serializer) Query(ctx context.Context, chain server.Chain, c *mysql.Conn, query string, callback func(*sqltypes.Result, bool) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return chain.ComQuery(ctx, c, query, callback)
}

// ParsedQuery is not called: the interceptor chain's handler does not offer
// parsed queries to the protocol layer.
func (s *serializer) ParsedQuery(chain server.Chain, c *mysql.Conn, query string, _ sqlparser.Statement, callback func(*sqltypes.Result, bool) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return chain.ComQuery(context.Background(), c, query, callback)
}

func (s *serializer) MultiQuery(ctx context.Context, chain server.Chain, c *mysql.Conn, query string, callback func(*sqltypes.Result, bool) error) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return chain.ComMultiQuery(ctx, c, query, callback)
}

func (s *serializer) Prepare(ctx context.Context, chain server.Chain, c *mysql.Conn, query string, prepare *mysql.PrepareData) ([]*querypb.Field, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return chain.ComPrepare(ctx, c, query, prepare)
}

func (s *serializer) StmtExecute(ctx context.Context, chain server.Chain, c *mysql.Conn, prepare *mysql.PrepareData, callback func(*sqltypes.Result) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return chain.ComStmtExecute(ctx, c, prepare, callback)
}

// --- connection tracking, so that Close leaves no goroutine behind ---

type trackingListener struct {
	net.Listener
	mu   sync.Mutex
	open map[*trackedConn]struct{}
	wg   sync.WaitGroup
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.open[tc] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	return tc, nil
}

// wait reports whether every accepted connection was closed within d.
func (l *trackingListener) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.open {
		_ = c.Conn.Close() // the handler's own Close still marks it done
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

// Close is the last thing go-mysql-server's connection handler does.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.open, c)
		c.l.mu.Unlock()
		c.l.wg.Done()
	})
	return err
}
