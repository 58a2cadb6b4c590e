package throttler

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
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
