package throttler

import (
	"context"
	"database/sql/driver"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// purgeRow answers the INNODB_METRICS statement like MariaDB 10.11 (column
// ENABLED, 1 or 0) or, with mysql set, like MySQL 8 (column STATUS).
func purgeRow(count string, enabled bool, mysql bool) fakedbResult {
	col, on := "ENABLED", map[bool]string{true: "1", false: "0"}[enabled]
	if mysql {
		col, on = "STATUS", map[bool]string{true: "enabled", false: "disabled"}[enabled]
	}
	return fakedbResult{
		cols: []string{"NAME", "SUBSYSTEM", "COUNT", "MAX_COUNT", col, "TYPE", "COMMENT"},
		rows: [][]driver.Value{{[]byte(purgeCounter), []byte("transaction"), []byte(count), nil, []byte(on), []byte("value"), []byte("Length of the TRX_RSEG_HISTORY list")}},
	}
}

// newFakePurge returns an unopened PurgeLag on a fake server answering r,
// polling every hour: tests drive it with UpdateLag.
func newFakePurge(t *testing.T, maxHistory int64, r fakedbResult, opts ...Option) (*PurgeLag, *fakedb) {
	t.Helper()
	db, f := newFakedb(t)
	f.setResult(r)
	p, err := NewPurgeLag(db, maxHistory, nil, append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, f
}

func TestNewPurgeLagRejectsBadInput(t *testing.T) {
	db, _ := newFakedb(t)
	for _, c := range []struct {
		name string
		err  func() error
		want string
	}{
		{"negative", func() error { _, err := NewPurgeLag(db, -5, nil); return err }, "maxHistory -5 must be positive"},
		{"zero", func() error { _, err := NewPurgeLag(db, 0, nil); return err }, "maxHistory 0 must be positive"},
		{"nil db", func() error { _, err := NewPurgeLag(nil, 10, nil); return err }, "db *sql.DB is nil"},
		{"bad option", func() error { _, err := NewPurgeLag(db, 10, nil, WithInterval(0)); return err }, "WithInterval(0s)"},
		{"foreign option", func() error { _, err := NewPurgeLag(db, 10, nil, WithPacing(0)); return err }, "does not apply to a PurgeLag throttler"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.err()
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
			assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()), "wrapped once: %v", err)
		})
	}
}

func TestPurgeLagVerdicts(t *testing.T) {
	for _, flavor := range []struct {
		name  string
		mysql bool
	}{{"MariaDB", false}, {"MySQL", true}} {
		t.Run(flavor.name, func(t *testing.T) {
			p, f := newFakePurge(t, 100000, purgeRow("1234", true, flavor.mysql))
			assert.Zero(t, p.Length(), "0 before the first reading")
			require.NoError(t, p.Open(context.Background()))
			assert.False(t, p.IsThrottled(), p.ThrottleReason())
			assert.EqualValues(t, 1234, p.Length())
			assert.Equal(t, "purge lag", p.String())
			assert.Equal(t, []string{purgeStatement}, f.log())

			f.setResult(purgeRow("123456", true, flavor.mysql))
			require.NoError(t, p.UpdateLag(context.Background()))
			assert.Equal(t, "history list length 123456 >= 100000", p.ThrottleReason())
			f.setResult(purgeRow("100000", true, flavor.mysql))
			require.NoError(t, p.UpdateLag(context.Background()))
			assert.True(t, p.IsThrottled(), "at the threshold")
			f.setResult(purgeRow("99999", true, flavor.mysql))
			require.NoError(t, p.UpdateLag(context.Background()))
			assert.False(t, p.IsThrottled(), p.ThrottleReason())

			// Disabled at run time: the count is frozen, so it is
			// unknown, and throttles at once.
			f.setResult(purgeRow("5", false, flavor.mysql))
			err := p.UpdateLag(context.Background())
			assert.ErrorContains(t, err, "SET GLOBAL innodb_monitor_enable = 'trx_rseg_history_len'")
			assert.True(t, p.IsThrottled())
			assert.Contains(t, p.ThrottleReason(), "history list length unknown: the InnoDB monitor counter trx_rseg_history_len is disabled")
			assert.EqualValues(t, 99999, p.Length(), "a value that cannot be used is not stored")
		})
	}
}

func TestPurgeLagOpenFailsOnAnUnusableCounter(t *testing.T) {
	for _, c := range []struct {
		name string
		r    fakedbResult
		is   error
		want string
	}{
		{"disabled", purgeRow("0", false, false), nil, "the InnoDB monitor counter trx_rseg_history_len is disabled (ENABLED/STATUS \"0\"): its value is stale; enable it with SET GLOBAL innodb_monitor_enable = 'trx_rseg_history_len'"},
		{"no row", fakedbResult{cols: []string{"NAME", "COUNT", "ENABLED"}}, ErrUnavailable, "has 0 rows for trx_rseg_history_len"},
		{"NULL count", func() fakedbResult { r := purgeRow("", true, false); r.rows[0][2] = nil; return r }(), nil, `trx_rseg_history_len COUNT "" is not a length`},
		{"negative count", purgeRow("-1", true, false), nil, `COUNT "-1" is not a length`},
		{"no PROCESS", fakedbResult{err: &mysql.MySQLError{Number: 1227, Message: "Access denied; you need (at least one of) the PROCESS privilege(s) for this operation"}}, ErrAccessDenied, "grant PROCESS to the monitoring user"},
		{"query error", fakedbResult{err: errBoom}, errBoom, "INNODB_METRICS: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _ := newFakePurge(t, 10, c.r)
			err := p.Open(context.Background())
			require.Error(t, err)
			assert.ErrorContains(t, err, c.want)
			if c.is != nil {
				assert.ErrorIs(t, err, c.is)
			}
			assert.False(t, p.IsThrottled())
			assert.ErrorIs(t, p.UpdateLag(context.Background()), ErrNotOpen)
		})
	}
}

func TestPurgeLagHotPathDoesNotAllocate(t *testing.T) {
	p, _ := newFakePurge(t, 10, purgeRow("1", true, false))
	require.NoError(t, p.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = p.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { p.BlockWait(ctx) }))
}
