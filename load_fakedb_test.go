package throttler

// A minimal database/sql driver for the unit tests of Load and Query: it
// answers each query from a function the test sets, can hang until the
// query's context ends, and counts what it saw. It needs no server, so these
// tests run everywhere; the integration tests run the same code on MariaDB.

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

// fakedbResult is one answer: columns and rows, or an error.
type fakedbResult struct {
	cols []string
	rows [][]driver.Value
	err  error
}

type fakedb struct {
	mu      sync.Mutex
	answer  func(query string, args []driver.NamedValue) fakedbResult
	hang    bool // the answered query blocks until its context ends
	kills   []int64
	hungIDs []int64 // connections whose query hung
	queries []string

	// revoked models a missing privilege the way MariaDB checks one: a
	// session opened while it is set answers every query with error 1227,
	// and keeps doing so after it is cleared (a GRANT reaches new sessions
	// only). connects counts the sessions opened.
	revoked  atomic.Bool
	connects atomic.Int64

	nextID   atomic.Int64
	calls    atomic.Int64 // queries answered by answer (not CONNECTION_ID or KILL)
	inFlight atomic.Int64
	maxSeen  atomic.Int64
}

// newFakedb returns a *sql.DB on a new fake, closed at the test's end.
func newFakedb(t testing.TB) (*sql.DB, *fakedb) {
	t.Helper()
	f := &fakedb{}
	f.set(func(string, []driver.NamedValue) fakedbResult {
		return fakedbResult{err: errors.New("fakedb: no answer set")}
	})
	db := sql.OpenDB(fakedbConnector{f})
	t.Cleanup(func() { _ = db.Close() })
	return db, f
}

func (f *fakedb) set(answer func(query string, args []driver.NamedValue) fakedbResult) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
}

// setValue answers every query with one row of one column holding v.
func (f *fakedb) setValue(v driver.Value) {
	f.set(func(string, []driver.NamedValue) fakedbResult {
		return fakedbResult{cols: []string{"v"}, rows: [][]driver.Value{{v}}}
	})
}

func (f *fakedb) setResult(r fakedbResult) {
	f.set(func(string, []driver.NamedValue) fakedbResult { return r })
}

// setStatus answers SHOW GLOBAL STATUS like a server whose status variables
// are status: it returns the rows the statement's IN list names.
func (f *fakedb) setStatus(status map[string]string) {
	f.set(func(q string, _ []driver.NamedValue) fakedbResult {
		if !strings.HasPrefix(q, "SHOW GLOBAL STATUS") {
			return fakedbResult{err: fmt.Errorf("fakedb: unexpected query %q", q)}
		}
		r := fakedbResult{cols: []string{"Variable_name", "Value"}}
		for name, v := range status {
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

func (f *fakedb) lastQuery() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queries) == 0 {
		return ""
	}
	return f.queries[len(f.queries)-1]
}

type fakedbConnector struct{ f *fakedb }

func (c fakedbConnector) Connect(context.Context) (driver.Conn, error) {
	c.f.connects.Add(1)
	return &fakedbConn{f: c.f, id: c.f.nextID.Add(1), denied: c.f.revoked.Load()}, nil
}

func (c fakedbConnector) Driver() driver.Driver { return fakedbDriver{} }

type fakedbDriver struct{}

func (fakedbDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("fakedb: use sql.OpenDB")
}

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

func (c *fakedbConn) ExecContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Result, error) {
	if c.denied {
		return nil, errFakedbDenied
	}
	var id int64
	if _, err := fmt.Sscanf(q, "KILL QUERY %d", &id); err != nil {
		return nil, fmt.Errorf("fakedb: unexpected statement %q", q)
	}
	c.f.mu.Lock()
	c.f.kills = append(c.f.kills, id)
	c.f.mu.Unlock()
	return driver.RowsAffected(0), nil
}

func (c *fakedbConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if q == "SELECT CONNECTION_ID()" {
		return &fakedbRows{cols: []string{"CONNECTION_ID()"}, rows: [][]driver.Value{{c.id}}}, nil
	}
	if c.denied {
		return nil, errFakedbDenied
	}
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
	if hang {
		c.f.mu.Lock()
		c.f.hungIDs = append(c.f.hungIDs, c.id)
		c.f.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r := answer(q, args)
	if r.err != nil {
		return nil, r.err
	}
	return &fakedbRows{cols: r.cols, rows: r.rows}, nil
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
