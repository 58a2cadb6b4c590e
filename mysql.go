// This file holds what every query to a MySQL or MariaDB server shares: the
// session it runs on, row scanning, server error numbers, and statements
// spelled differently across servers and versions.

package throttler

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
)

// querier is what the library asks a server through: one session taken
// from a pool (*sql.Conn), or the pool itself.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// onSession runs f on one session taken from db's pool and returns what f
// returns. Every query the library sends to a server that can answer
// "access denied" goes through it.
//
// A session that answered access denied is closed instead of going back to
// the pool. MariaDB and MySQL copy a session's global privileges when it
// logs in, so a session that was denied stays denied after the privilege
// is granted again; a pool that keeps reusing it (one probe at a time keeps
// one idle session warm) would keep the throttler failing closed long
// after the grant, for ever without SetConnMaxLifetime. The next query
// logs in afresh and sees the grant. Other sessions go back to the pool as
// the pool's own queries would.
func onSession[T any](ctx context.Context, db *sql.DB, f func(context.Context, querier) (T, error)) (T, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := f(ctx, conn)
	if accessDenied(err) {
		// driver.ErrBadConn from Raw makes database/sql close the driver
		// connection rather than return it to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = conn.Close() // after Raw's ErrBadConn: sql.ErrConnDone, nothing to do
	return v, err
}

// exec runs one statement through onSession.
func exec(ctx context.Context, db *sql.DB, stmt string) error {
	_, err := onSession(ctx, db, func(ctx context.Context, q querier) (sql.Result, error) {
		return q.ExecContext(ctx, stmt)
	})
	return err
}

// accessDenied reports whether err is a server's "access denied" to a
// session, or a source's ErrAccessDenied that wraps one.
func accessDenied(err error) bool {
	switch mysqlErrorNumber(err) {
	case erSpecificAccessDenied, erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return true
	}
	return errors.Is(err, ErrAccessDenied)
}

// mysqlErrorNumber returns the server error number wrapped in err, or 0.
func mysqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Server error numbers the sources branch on.
const (
	erParseError           = 1064 // ER_PARSE_ERROR
	erSpecificAccessDenied = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
	erTableAccessDenied    = 1142 // ER_TABLEACCESS_DENIED_ERROR
	erColumnAccessDenied   = 1143 // ER_COLUMNACCESS_DENIED_ERROR
	erDBAccessDenied       = 1044 // ER_DBACCESS_DENIED_ERROR
	erNoSuchTable          = 1146 // ER_NO_SUCH_TABLE
	erBadField             = 1054 // ER_BAD_FIELD_ERROR
	erNoDB                 = 1046 // ER_NO_DB_ERROR: an unqualified table and no default database
	erUnknownTable         = 1109 // ER_UNKNOWN_TABLE: e.g. an information_schema table the server lacks
)

// parseDecimal reads a finite decimal number as MySQL writes one ("3",
// "-0.50", "1.5e3"): not hexadecimal, not "Inf" or "NaN", not "1_000", which
// strconv would take, and not a number out of float64's range.
func parseDecimal(s string) (float64, bool) {
	ok := s != ""
	for i := 0; i < len(s) && ok; i++ {
		c := s[i]
		ok = '0' <= c && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'
	}
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
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

// queryRowMaps runs a statement whose columns are not known in advance and
// returns each row by column name.
func queryRowMaps(ctx context.Context, db querier, stmt string) ([]statusRow, error) {
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

// spellings are statements that ask the same thing in the words of
// different servers and versions, tried in order until one parses: the
// first the server parsed is remembered and asked first from then on.
type spellings struct {
	stmts []string
	first atomic.Int32 // index into stmts of the first that parsed
}

// queryRows runs the first statement the server parses and returns it with
// its rows; a parse error of the last one is returned as any other error.
func (s *spellings) queryRows(ctx context.Context, q querier) (string, []statusRow, error) {
	for i := int(s.first.Load()); ; i++ {
		rows, err := queryRowMaps(ctx, q, s.stmts[i])
		if mysqlErrorNumber(err) == erParseError && i+1 < len(s.stmts) {
			s.first.CompareAndSwap(int32(i), int32(i+1))
			continue
		}
		return s.stmts[i], rows, err
	}
}

// showStatus runs a SHOW STATUS or SHOW VARIABLES statement and returns its
// values by lower-case name: the server compares names case-insensitively,
// and so do its readers.
func showStatus(ctx context.Context, db querier, stmt string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, stmt)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	vals := make(map[string]string)
	for rows.Next() {
		var name, value sql.NullString
		if err := rows.Scan(&name, &value); err != nil {
			return nil, err
		}
		vals[strings.ToLower(name.String)] = value.String
	}
	return vals, rows.Err()
}
