package throttler

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hbPrimaryAnswer plays a primary with server_id 42 on which every write
// succeeds.
func hbPrimaryAnswer(q string, _ []driver.NamedValue) fakedbResult {
	if q == "SELECT @@server_id" {
		return fakedbResult{cols: []string{"@@server_id"}, rows: [][]driver.Value{{int64(42)}}}
	}
	return fakedbResult{}
}

func hbMySQLErr(n uint16, msg string) error { return &mysql.MySQLError{Number: n, Message: msg} }

// hbLogRecorder keeps the messages logged through it.
type hbLogRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *hbLogRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *hbLogRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *hbLogRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *hbLogRecorder) WithGroup(string) slog.Handler      { return l }

func (l *hbLogRecorder) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

func TestNewHeartbeatConfig(t *testing.T) {
	db, _ := newFakedbAnswering(t, hbPrimaryAnswer)
	bad := []struct {
		name string
		db   *sql.DB
		cfg  HeartbeatWriterConfig
		want string
	}{
		{"nil db", nil, HeartbeatWriterConfig{}, "primary *sql.DB is nil"},
		{"three parts", db, HeartbeatWriterConfig{Table: "a.b.c"}, `HeartbeatWriterConfig.Table "a.b.c"`},
		{"backtick", db, HeartbeatWriterConfig{Table: "db.hb`; DROP TABLE x"}, "give names unquoted"},
		{"empty database", db, HeartbeatWriterConfig{Table: ".heartbeat"}, "empty name"},
		{"space", db, HeartbeatWriterConfig{Table: "my db.heartbeat"}, `has ' '`},
		{"too long", db, HeartbeatWriterConfig{Table: strings.Repeat("x", 65)}, "longer than MySQL's 64"},
		{"negative interval", db, HeartbeatWriterConfig{Interval: -time.Second}, "HeartbeatWriterConfig.Interval -1s must be positive (0 means 1s)"},
		{"tiny interval", db, HeartbeatWriterConfig{Interval: time.Millisecond}, "HeartbeatWriterConfig.Interval 1ms must be at least 10ms"},
		{"interval past a day", db, HeartbeatWriterConfig{Interval: 25 * time.Hour}, "HeartbeatWriterConfig.Interval 25h0m0s must be at most 24h0m0s"},
	}
	for _, c := range bad {
		h, err := NewHeartbeat(c.db, c.cfg, nil)
		assert.Nil(t, h, c.name)
		assert.ErrorIs(t, err, ErrInvalidConfig, c.name)
		assert.ErrorContains(t, err, c.want, c.name)
	}

	good := []struct {
		cfg              HeartbeatWriterConfig
		quoted           string
		interval, expire time.Duration
	}{
		{HeartbeatWriterConfig{}, "`heartbeat`", time.Second, time.Second},
		{HeartbeatWriterConfig{Table: "percona.heartbeat", Interval: 100 * time.Millisecond}, "`percona`.`heartbeat`", 100 * time.Millisecond, time.Second},
		{HeartbeatWriterConfig{Table: "my-app$1.hb_2", Interval: 2 * time.Second}, "`my-app$1`.`hb_2`", 2 * time.Second, 2 * time.Second},
		{HeartbeatWriterConfig{Table: "données.pouls", Interval: time.Minute}, "`données`.`pouls`", time.Minute, 5 * time.Second},
	}
	for _, c := range good {
		h, err := NewHeartbeat(db, c.cfg, nil)
		require.NoError(t, err, "%+v", c.cfg)
		assert.Equal(t, c.quoted, h.table.quoted)
		assert.Equal(t, c.interval, h.interval)
		assert.Equal(t, c.expire, h.timeout, "the write timeout is the interval, within [1s, 5s]")
		assert.Zero(t, h.Beats())
		assert.NoError(t, h.LastError())
		assert.NoError(t, h.Close(), "Close before Open")
	}
}

func TestHeartbeatLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // beats on a fake clock
		db, f := newFakedbAnswering(t, hbPrimaryAnswer)
		logs := &hbLogRecorder{}
		h, err := NewHeartbeat(db, HeartbeatWriterConfig{Table: "percona.heartbeat", Interval: 10 * time.Millisecond, Create: true}, slog.New(logs))
		require.NoError(t, err)
		assert.Zero(t, h.ServerID(), "not read before Open")

		require.NoError(t, h.Open(context.Background()))
		t.Cleanup(func() { _ = h.Close() })
		// The first beat was written by Open itself, after the table and the
		// server id.
		q := f.log()
		require.Len(t, q, 3, "%q", q)
		assert.True(t, strings.HasPrefix(q[0], "CREATE TABLE IF NOT EXISTS `percona`.`heartbeat` (\n  ts                    varchar(26) NOT NULL,\n  server_id             int unsigned NOT NULL PRIMARY KEY,"), q[0])
		assert.Contains(t, q[0], "relay_master_log_file varchar(255) DEFAULT NULL")
		assert.Equal(t, "SELECT @@server_id", q[1])
		assert.Equal(t, "REPLACE INTO `percona`.`heartbeat` (ts, server_id) VALUES (DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f'), 42)", q[2])
		assert.EqualValues(t, 42, h.ServerID())
		assert.EqualValues(t, 1, h.Beats())
		assert.NoError(t, h.LastError())

		err = h.Open(context.Background())
		assert.ErrorIs(t, err, ErrAlreadyOpen)

		time.Sleep(40 * time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 5, h.Beats(), "the writer beats every interval")
		assert.Equal(t, 1, f.count("CREATE"), "the table is created once")
		assert.Equal(t, 1, f.count("SELECT @@server_id"), "the server id is read once")

		require.NoError(t, h.Close())
		writes := f.count("REPLACE")
		assert.EqualValues(t, writes, h.Beats(), "every write succeeded and was counted")
		time.Sleep(30 * time.Millisecond) // three intervals: nothing may write after Close returned
		synctest.Wait()
		assert.Equal(t, writes, f.count("REPLACE"), "no write after Close")
		require.NoError(t, h.Close(), "Close is idempotent")
		assert.ErrorIs(t, h.Open(context.Background()), ErrClosed)
		assert.Equal(t, 1, logs.count("heartbeat: open"))
		assert.Equal(t, 1, logs.count("heartbeat: closed"))
		assert.Zero(t, logs.count("write failed"))
	})
}

func TestHeartbeatConfiguredServerID(t *testing.T) {
	db, f := newFakedbAnswering(t, hbPrimaryAnswer)
	h, err := NewHeartbeat(db, HeartbeatWriterConfig{ServerID: 7, Interval: time.Hour}, nil)
	require.NoError(t, err)
	require.NoError(t, h.Open(context.Background()))
	defer h.Close()
	assert.Equal(t, []string{"REPLACE INTO `heartbeat` (ts, server_id) VALUES (DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f'), 7)"}, f.log(),
		"no CREATE without Create, no @@server_id with a ServerID")
	assert.EqualValues(t, 7, h.ServerID())
}

func TestHeartbeatOpenErrors(t *testing.T) {
	errRefused := errors.New("dial tcp 10.0.0.5:3306: connect: connection refused")
	onWrite := func(err error) func(q string) error {
		return func(q string) error {
			if strings.HasPrefix(q, "REPLACE") {
				return err
			}
			return nil
		}
	}
	cases := []struct {
		name   string
		cfg    HeartbeatWriterConfig
		fail   func(q string) error
		is     error
		want   []string
		writes int // REPLACE statements sent
	}{
		{
			name:   "missing table without Create",
			cfg:    HeartbeatWriterConfig{Table: "percona.heartbeat"},
			fail:   onWrite(hbMySQLErr(1146, "Table 'percona.heartbeat' doesn't exist")),
			is:     ErrUnavailable,
			want:   []string{"heartbeat table percona.heartbeat does not exist on the primary", "HeartbeatWriterConfig.Create", "Error 1146"},
			writes: 1,
		},
		{
			name:   "no INSERT grant",
			cfg:    HeartbeatWriterConfig{Table: "percona.heartbeat"},
			fail:   onWrite(hbMySQLErr(1142, "INSERT command denied to user 'copier'@'%' for table 'heartbeat'")),
			is:     ErrAccessDenied,
			want:   []string{"grant INSERT, DELETE ON percona.heartbeat"},
			writes: 1,
		},
		{
			name: "no CREATE grant",
			cfg:  HeartbeatWriterConfig{Table: "percona.heartbeat", Create: true},
			fail: func(q string) error {
				if strings.HasPrefix(q, "CREATE") {
					return hbMySQLErr(1142, "CREATE command denied")
				}
				return nil
			},
			is:   ErrAccessDenied,
			want: []string{"grant CREATE ON percona.heartbeat"},
		},
		{
			name: "server id unreadable",
			cfg:  HeartbeatWriterConfig{},
			fail: func(q string) error {
				if q == "SELECT @@server_id" {
					return errRefused
				}
				return nil
			},
			is:   errRefused,
			want: []string{"read @@server_id"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken := true
			var mu sync.Mutex
			db, f := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
				mu.Lock()
				b := broken
				mu.Unlock()
				if b {
					if err := c.fail(q); err != nil {
						return fakedbResult{err: err}
					}
				}
				return hbPrimaryAnswer(q, nil)
			})
			h, err := NewHeartbeat(db, c.cfg, nil)
			require.NoError(t, err)
			err = h.Open(context.Background())
			require.ErrorIs(t, err, c.is)
			for _, w := range c.want {
				assert.ErrorContains(t, err, w)
			}
			assert.Zero(t, h.Beats())
			assert.ErrorIs(t, h.LastError(), c.is)
			assert.Equal(t, c.writes, f.count("REPLACE"))

			// Fixed, a failed Open may be retried.
			mu.Lock()
			broken = false
			mu.Unlock()
			require.NoError(t, h.Open(context.Background()))
			assert.EqualValues(t, 1, h.Beats())
			assert.NoError(t, h.LastError())
			require.NoError(t, h.Close())
		})
	}
}

// Write errors are retried every beat but logged once per change, and
// LastError follows them.
func TestHeartbeatWriteErrorsLoggedOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // beats on a fake clock
		var mu sync.Mutex
		var writeErr error
		db, f := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
			mu.Lock()
			err := writeErr
			mu.Unlock()
			if strings.HasPrefix(q, "REPLACE") && err != nil {
				return fakedbResult{err: err}
			}
			return hbPrimaryAnswer(q, nil)
		})
		setErr := func(err error) {
			mu.Lock()
			writeErr = err
			mu.Unlock()
		}
		// beats lets n intervals pass: n beats, written or failed.
		beats := func(n int) {
			time.Sleep(time.Duration(n) * 10 * time.Millisecond)
			synctest.Wait()
		}
		logs := &hbLogRecorder{}
		h, err := NewHeartbeat(db, HeartbeatWriterConfig{Interval: 10 * time.Millisecond}, slog.New(logs))
		require.NoError(t, err)
		require.NoError(t, h.Open(context.Background()))
		defer h.Close()

		readOnly := hbMySQLErr(1290, "The MariaDB server is running with the --read-only option so it cannot execute this statement")
		setErr(readOnly)
		start := f.count("REPLACE")
		beats(5)
		assert.Equal(t, start+5, f.count("REPLACE"), "failed writes are retried every beat")
		assert.EqualValues(t, 1, h.Beats(), "Open's beat only")
		assert.ErrorIs(t, h.LastError(), readOnly)
		assert.ErrorContains(t, h.LastError(), "write heartbeat to heartbeat: Error 1290")
		assert.Equal(t, 1, logs.count("write failed"), "one line for five failures")

		gone := hbMySQLErr(1146, "Table 'heartbeat' doesn't exist")
		setErr(gone)
		beats(1)
		assert.ErrorIs(t, h.LastError(), ErrUnavailable)
		beats(3)
		assert.Equal(t, start+9, f.count("REPLACE"))
		assert.Equal(t, 2, logs.count("write failed"), "a new error is a new line")
		assert.EqualValues(t, 1, h.Beats(), "failed writes are not beats")

		setErr(nil)
		beats(3)
		assert.NoError(t, h.LastError())
		assert.EqualValues(t, 4, h.Beats())
		assert.Equal(t, 1, logs.count("writes resumed"))
		assert.Equal(t, 2, logs.count("write failed"))
	})
}

// A hung primary costs one write at a time, each bounded by the timeout, and
// Close does not wait for it.
func TestHeartbeatHungWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // beats on a fake clock
		var hang atomic.Bool
		db, f := newFakedbAnswering(t, func(q string, _ []driver.NamedValue) fakedbResult {
			if strings.HasPrefix(q, "REPLACE") && hang.Load() {
				return fakedbResult{hang: true}
			}
			return hbPrimaryAnswer(q, nil)
		})
		h, err := NewHeartbeat(db, HeartbeatWriterConfig{Interval: 10 * time.Millisecond}, nil)
		require.NoError(t, err)
		h.timeout = 25 * time.Millisecond // the default floor is 1s; the bound is what matters
		require.NoError(t, h.Open(context.Background()))
		hang.Store(true)
		time.Sleep(10*time.Millisecond + 25*time.Millisecond - time.Nanosecond) // the first beat hangs for the timeout
		synctest.Wait()
		require.NoError(t, h.LastError(), "not before the timeout")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.ErrorIs(t, h.LastError(), context.DeadlineExceeded, "a hung write ends at the timeout and is an error")
		time.Sleep(60 * time.Millisecond)
		synctest.Wait()
		assert.GreaterOrEqual(t, f.hangs.Load(), int64(3), "and the next beat tries again")
		assert.EqualValues(t, 1, f.maxSeen.Load(), "one write at a time")
		require.EqualValues(t, 1, f.inFlight.Load(), "a write hangs now")

		start := time.Now()
		require.NoError(t, h.Close())
		assert.Zero(t, time.Since(start), "Close waited for a hung write")
		assert.Zero(t, f.inFlight.Load(), "Close ended the hung write")
		assert.ErrorIs(t, h.LastError(), context.DeadlineExceeded, "the write Close aborted is not recorded as a failure")
	})
}

func TestHeartbeatOpenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // beats on a fake clock
		db, f := newFakedbAnswering(t, hbPrimaryAnswer)
		logs := &hbLogRecorder{}
		h, err := NewHeartbeat(db, HeartbeatWriterConfig{Interval: 10 * time.Millisecond}, slog.New(logs))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, h.Open(ctx))
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		require.EqualValues(t, 3, h.Beats())
		cancel()
		synctest.Wait()
		assert.Equal(t, 1, logs.count("Open's context ended"))
		writes := f.count("REPLACE")
		time.Sleep(30 * time.Millisecond)
		synctest.Wait()
		assert.Equal(t, writes, f.count("REPLACE"), "no write after Open's context ended")
		assert.ErrorIs(t, h.Open(context.Background()), ErrAlreadyOpen, "still open until Close")
		require.NoError(t, h.Close())
		assert.Equal(t, 1, logs.count("Open's context ended"))

		// An Open whose context is already done fails, and starts nothing.
		h2, err := NewHeartbeat(db, HeartbeatWriterConfig{Interval: 10 * time.Millisecond}, nil)
		require.NoError(t, err)
		err = h2.Open(ctx)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, h2.Beats())
		require.NoError(t, h2.Close())
	})
}
