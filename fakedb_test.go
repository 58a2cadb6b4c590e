package throttler

// The package's one database/sql driver for unit tests, in the manner of the
// standard library's database/sql/fakedb_test.go: a registered driver
// ("throttlerfake") whose DSN names a fake server. A test sets the server's
// script (answer: the columns and rows, or the error, of each statement);
// a statement can hang until its context ends, and a privilege can be
// revoked per session. The server counts sessions, statements, statements in
// flight and closed *sql.DBs, and logs what it was sent, so tests of Load,
// Query, the heartbeat writer, discovery and the lag sources run with no
// server at all; the integration tests run the same code on MariaDB.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-sql-driver/mysql"
)

const fakedbDriverName = "throttlerfake"

func init() { sql.Register(fakedbDriverName, fakedbDriver{}) }

// fakedbServers maps a DSN to its server.
var (
	fakedbServers sync.Map // string -> *fakedb
	fakedbSeq     atomic.Int64
)

// fakedbResult is one answer: columns and rows, or an error; with hang the
// statement blocks until its context ends instead.
type fakedbResult struct {
	cols []string
	rows [][]driver.Value
	err  error
	hang bool
}

// fakedb is one fake server.
type fakedb struct {
	dsn     string
	mu      sync.Mutex
	answer  func(query string, args []driver.NamedValue) fakedbResult
	hang    bool // every answered statement blocks until its context ends
	kills   []int64
	hungIDs []int64 // sessions whose statement hung
	queries []string

	// revoked models a missing privilege the way MariaDB checks one: a
	// session opened while it is set answers every statement with error
	// 1227, and keeps doing so after it is cleared (a GRANT reaches new
	// sessions only).
	revoked  atomic.Bool
	connects atomic.Int64 // sessions opened
	closes   atomic.Int64 // *sql.DBs on this server closed

	nextID   atomic.Int64
	calls    atomic.Int64 // statements answered (not CONNECTION_ID or KILL)
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	hangs    atomic.Int64 // statements that waited for their context
}

// newFakeServer returns a server with no answer set: every statement fails.
func newFakeServer() *fakedb {
	f := &fakedb{dsn: fmt.Sprintf("fakedb-%d", fakedbSeq.Add(1))}
	f.set(func(string, []driver.NamedValue) fakedbResult {
		return fakedbResult{err: errors.New("fakedb: no answer set")}
	})
	fakedbServers.Store(f.dsn, f)
	return f
}

// newFakedb returns a *sql.DB on a new fake server, closed at the test's end.
func newFakedb(t testing.TB) (*sql.DB, *fakedb) {
	t.Helper()
	f := newFakeServer()
	db := f.open()
	t.Cleanup(func() {
		_ = db.Close()
		fakedbServers.Delete(f.dsn)
	})
	return db, f
}

// open returns a new *sql.DB on the server, the caller's to close.
func (f *fakedb) open() *sql.DB {
	db, err := sql.Open(fakedbDriverName, f.dsn)
	if err != nil {
		panic(err) // only an unknown DSN fails, and f registered its own
	}
	return db
}

func (f *fakedb) set(answer func(query string, args []driver.NamedValue) fakedbResult) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
}

// setValue answers every statement with one row of one column holding v.
func (f *fakedb) setValue(v driver.Value) {
	f.setResult(fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{v}}})
}

func (f *fakedb) setResult(r fakedbResult) {
	f.set(func(string, []driver.NamedValue) fakedbResult { return r })
}

// setStatus answers SHOW GLOBAL STATUS like a server whose status variables
// are status: it returns the rows the statement's IN list names.
func (f *fakedb) setStatus(status map[string]string) {
	f.setStatusFunc(func() map[string]string { return status })
}

// setStatusFunc is setStatus with variables that status gives anew for each
// statement, such as a counter that grows with the (fake) clock.
func (f *fakedb) setStatusFunc(status func() map[string]string) {
	f.set(func(q string, _ []driver.NamedValue) fakedbResult {
		if !strings.HasPrefix(q, "SHOW GLOBAL STATUS") {
			return fakedbResult{err: fmt.Errorf("fakedb: unexpected query %q", q)}
		}
		r := fakedbResult{cols: []string{"Variable_name", "Value"}}
		for name, v := range status() {
			if strings.Contains(strings.ToLower(q), "'"+strings.ToLower(name)+"'") {
				r.rows = append(r.rows, []driver.Value{[]byte(name), []byte(v)})
			}
		}
		return r
	})
}

func (f *fakedb) setHang(h bool) {
	f.mu.Lock()
	f.hang = h
	f.mu.Unlock()
}

func (f *fakedb) killed() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.kills...)
}

func (f *fakedb) hung() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.hungIDs...)
}

// log is every statement answered, in order.
func (f *fakedb) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}

// count is the number of statements answered that start with prefix.
func (f *fakedb) count(prefix string) int {
	n := 0
	for _, q := range f.log() {
		if strings.HasPrefix(q, prefix) {
			n++
		}
	}
	return n
}

func (f *fakedb) lastQuery() string {
	q := f.log()
	if len(q) == 0 {
		return ""
	}
	return q[len(q)-1]
}

type fakedbDriver struct{}

func (fakedbDriver) Open(dsn string) (driver.Conn, error) {
	c, err := fakedbDriver{}.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

func (fakedbDriver) OpenConnector(dsn string) (driver.Connector, error) {
	f, ok := fakedbServers.Load(dsn)
	if !ok {
		return nil, fmt.Errorf("fakedb: no server %q", dsn)
	}
	return fakedbConnector{f.(*fakedb)}, nil
}

type fakedbConnector struct{ f *fakedb }

func (c fakedbConnector) Connect(context.Context) (driver.Conn, error) {
	c.f.connects.Add(1)
	return &fakedbConn{f: c.f, id: c.f.nextID.Add(1), denied: c.f.revoked.Load()}, nil
}

func (c fakedbConnector) Driver() driver.Driver { return fakedbDriver{} }

// Close is called by sql.DB.Close.
func (c fakedbConnector) Close() error { c.f.closes.Add(1); return nil }

// fakedbConn is one session.
type fakedbConn struct {
	f      *fakedb
	id     int64
	denied bool // opened while the privilege was revoked
}

// errFakedbDenied is what a denied session answers: MariaDB's error 1227.
var errFakedbDenied = &mysql.MySQLError{Number: erSpecificAccessDenied, SQLState: [5]byte{'4', '2', '0', '0', '0'},
	Message: "Access denied; you need (at least one of) the SUPER, SLAVE MONITOR privilege(s) for this operation"}

func (c *fakedbConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("fakedb: no prepared statements")
}
func (c *fakedbConn) Close() error              { return nil }
func (c *fakedbConn) Begin() (driver.Tx, error) { return nil, errors.New("fakedb: no transactions") }

func (c *fakedbConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if c.denied {
		return nil, errFakedbDenied
	}
	var id int64
	if _, err := fmt.Sscanf(q, "KILL QUERY %d", &id); err == nil {
		c.f.mu.Lock()
		c.f.kills = append(c.f.kills, id)
		c.f.mu.Unlock()
		return driver.RowsAffected(0), nil
	}
	if _, err := c.run(ctx, q, args); err != nil {
		return nil, err
	}
	return driver.RowsAffected(1), nil
}

func (c *fakedbConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if q == "SELECT CONNECTION_ID()" {
		return &fakedbRows{cols: []string{"CONNECTION_ID()"}, rows: [][]driver.Value{{c.id}}}, nil
	}
	if c.denied {
		return nil, errFakedbDenied
	}
	r, err := c.run(ctx, q, args)
	if err != nil {
		return nil, err
	}
	return &fakedbRows{cols: r.cols, rows: r.rows}, nil
}

// run answers one statement from the script.
func (c *fakedbConn) run(ctx context.Context, q string, args []driver.NamedValue) (fakedbResult, error) {
	c.f.calls.Add(1)
	n := c.f.inFlight.Add(1)
	defer c.f.inFlight.Add(-1)
	for {
		old := c.f.maxSeen.Load()
		if n <= old || c.f.maxSeen.CompareAndSwap(old, n) {
			break
		}
	}
	c.f.mu.Lock()
	answer, hang := c.f.answer, c.f.hang
	c.f.queries = append(c.f.queries, q)
	c.f.mu.Unlock()
	r := fakedbResult{hang: true}
	if !hang {
		r = answer(q, args)
	}
	if r.hang {
		c.f.hangs.Add(1)
		c.f.mu.Lock()
		c.f.hungIDs = append(c.f.hungIDs, c.id)
		c.f.mu.Unlock()
		<-ctx.Done()
		return fakedbResult{}, ctx.Err()
	}
	return r, r.err
}

type fakedbRows struct {
	cols []string
	rows [][]driver.Value
	i    int
}

func (r *fakedbRows) Columns() []string { return r.cols }
func (r *fakedbRows) Close() error      { return nil }

func (r *fakedbRows) Next(dest []driver.Value) error {
	if r.i >= len(r.rows) {
		return io.EOF
	}
	copy(dest, r.rows[r.i])
	r.i++
	return nil
}

// newFakedbAnswering is newFakedb with answer as the script.
func newFakedbAnswering(t testing.TB, answer func(query string, args []driver.NamedValue) fakedbResult) (*sql.DB, *fakedb) {
	t.Helper()
	db, f := newFakedb(t)
	f.set(answer)
	return db, f
}
