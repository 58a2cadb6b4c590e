package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/lifecycle"
	"github.com/throttlekit/throttler/internal/ptheartbeat"
)

// HeartbeatWriterConfig configures a Heartbeat.
type HeartbeatWriterConfig struct {
	// Table is the heartbeat table, "table" or "database.table" (default
	// "heartbeat"), named as for HeartbeatConfig.Table.
	Table string
	// ServerID is the row the writer owns, which HeartbeatSource selects
	// with SourceServerID. 0 means the primary's @@server_id, read at Open,
	// as pt-heartbeat does.
	ServerID uint32
	// Interval is the time between beats (default 1s, as pt-heartbeat's;
	// at least 10ms, pt-heartbeat's minimum, and at most 24h, as
	// WithInterval). A replica's measured lag includes up to one interval.
	Interval time.Duration
	// Create makes Open create the table if it does not exist, with
	// pt-heartbeat's schema, so that pt-heartbeat can read and write it too.
	Create bool
}

// Heartbeat writes a pt-heartbeat-compatible heartbeat on a primary, like
// pt-heartbeat --update --utc --replace, for HeartbeatSource to read on the
// replicas. It is not a Throttler: it is the writer that makes heartbeat lag
// measurable.
//
// Every Interval it replaces its row (server_id = ServerID) with the
// primary's UTC_TIMESTAMP(6), formatted as pt-heartbeat writes ts
// ("2006-01-02T15:04:05.000000"): the server's clock, so the lag a replica
// computes is between two server clocks and the client's plays no part. One
// goroutine writes, one statement at a time, each bounded by a timeout of the
// interval, at least 1s and at most 5s.
//
// Open writes the first beat synchronously and returns its error (a missing
// table without Create, a missing grant), then starts the goroutine, which
// runs until Close or until Open's context ends. Failed writes are retried
// at the next beat; they are logged when the error changes, not once per
// beat, and LastError reports the last one. Because a heartbeat that stops
// reads as growing lag on every replica, stopping the writer throttles the
// readers of its row: run it for as long as the work it protects, or run
// pt-heartbeat as a service instead.
//
// It needs INSERT and DELETE on the table (REPLACE is both), and CREATE with
// Create. Run one writer per server_id: two writers of one row make a
// stalled one look alive.
type Heartbeat struct {
	db       *sql.DB
	table    heartbeatTable
	serverID atomic.Uint32 // the configured one, or @@server_id once read
	interval time.Duration
	timeout  time.Duration
	create   bool
	log      *slog.Logger

	life lifecycle.Runner

	beats   atomic.Int64
	errMu   sync.Mutex // guards lastErr
	lastErr error
}

const (
	defaultHeartbeatInterval = time.Second
	minHeartbeatTimeout      = time.Second
	maxHeartbeatTimeout      = 5 * time.Second
)

// NewHeartbeat returns a writer for primary. It does no I/O; Open does. A nil
// logger logs nothing. Bad input is an error wrapping ErrInvalidConfig.
func NewHeartbeat(primary *sql.DB, cfg HeartbeatWriterConfig, logger *slog.Logger) (*Heartbeat, error) {
	var errs []error
	if primary == nil {
		errs = append(errs, errors.New("primary *sql.DB is nil"))
	}
	table, err := parseHeartbeatTable("HeartbeatWriterConfig.Table", cfg.Table)
	if err != nil {
		errs = append(errs, err)
	}
	interval := cfg.Interval
	if err := checkPeriod(fmt.Sprintf("HeartbeatWriterConfig.Interval %v", interval), interval, defaultHeartbeatInterval.String()); err != nil {
		errs = append(errs, err)
	}
	if interval == 0 {
		interval = defaultHeartbeatInterval
	}
	if err := configError(errs); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Heartbeat{
		db:       primary,
		table:    table,
		interval: interval,
		timeout:  min(max(interval, minHeartbeatTimeout), maxHeartbeatTimeout),
		create:   cfg.Create,
		log:      logger.With("heartbeat", table.name),
	}
	h.serverID.Store(cfg.ServerID)
	h.life = lifecycle.Runner{
		Log: h.log, Subject: "heartbeat", Released: "replicas reading this row will see their lag grow",
		ClosedArgs: func() []any { return []any{"beats", h.beats.Load()} }, OnlyOpenedLogsClose: true,
	}
	return h, nil
}

// Open creates the table (with Create), reads @@server_id (unless ServerID
// was given), writes the first beat and returns the first error among them;
// then it writes every Interval until Close or until ctx ends, with the
// package's Open rules (retry after failure, ErrAlreadyOpen, ErrClosed).
func (h *Heartbeat) Open(ctx context.Context) error {
	life, err := h.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("heartbeat: open: %w", err)
	}
	stmt, err := h.prepare(life)
	if err == nil {
		err = h.write(life, stmt)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if h.life.Abort() != nil { // Close ran while we wrote
			return fmt.Errorf("heartbeat: open: %w", ErrClosed)
		}
		h.setLastError(err)
		return fmt.Errorf("heartbeat: open: %w", err)
	}
	err = h.life.Start(func() {
		h.beats.Add(1)
		h.setLastError(nil)
		h.log.Info("heartbeat: open", "server_id", h.serverID.Load(), "interval", h.interval)
	}, func(ctx context.Context) { h.run(ctx, stmt) })
	if err != nil {
		return fmt.Errorf("heartbeat: open: %w", err)
	}
	return nil
}

// prepare creates the table if asked, resolves the server id, and returns the
// beat's statement.
func (h *Heartbeat) prepare(ctx context.Context) (string, error) {
	if h.create {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		err := exec(cctx, h.db, fmt.Sprintf(ptheartbeat.CreateTable, h.table.quoted))
		cancel()
		if err != nil {
			if n := mysqlErrorNumber(err); n == erTableAccessDenied || n == erDBAccessDenied {
				return "", fmt.Errorf("%w: grant CREATE ON %s (or create the table with pt-heartbeat --create-table): %w", ErrAccessDenied, h.table.name, err)
			}
			return "", fmt.Errorf("create heartbeat table %s: %w", h.table.name, err)
		}
	}
	if h.serverID.Load() == 0 {
		qctx, cancel := context.WithTimeout(ctx, h.timeout)
		var id uint64
		err := h.db.QueryRowContext(qctx, "SELECT @@server_id").Scan(&id)
		cancel()
		if err != nil {
			return "", fmt.Errorf("read @@server_id: %w", err)
		}
		if id > 1<<32-1 {
			return "", fmt.Errorf("@@server_id %d does not fit pt-heartbeat's int unsigned server_id", id)
		}
		h.serverID.Store(uint32(id))
	}
	// The server's clock, in UTC, in pt-heartbeat's format; the id as a
	// literal, so that each beat is one round trip, not a prepared
	// statement's three.
	return "REPLACE INTO " + h.table.quoted + " (ts, server_id) VALUES (DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f'), " +
		strconv.FormatUint(uint64(h.serverID.Load()), 10) + ")", nil
}

// write sends one beat, bounded by the write timeout.
func (h *Heartbeat) write(ctx context.Context, stmt string) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	err := exec(ctx, h.db, stmt)
	if err == nil {
		return nil
	}
	switch mysqlErrorNumber(err) {
	case erNoSuchTable:
		return fmt.Errorf("%w: heartbeat table %s does not exist on the primary: create it (HeartbeatWriterConfig.Create, or pt-heartbeat --create-table): %w", ErrUnavailable, h.table.name, err)
	case erTableAccessDenied, erColumnAccessDenied, erDBAccessDenied:
		return fmt.Errorf("%w: grant INSERT, DELETE ON %s (REPLACE needs both): %w", ErrAccessDenied, h.table.name, err)
	}
	return fmt.Errorf("write heartbeat to %s: %w", h.table.name, err)
}

// run beats every interval until ctx ends.
func (h *Heartbeat) run(ctx context.Context, stmt string) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := h.write(ctx, stmt)
			if ctx.Err() != nil { // an aborted write is the end, not a failure
				return
			}
			h.record(err)
		}
	}
}

// record publishes one beat's outcome, logging only changes.
func (h *Heartbeat) record(err error) {
	if err == nil {
		h.beats.Add(1)
	}
	prev := h.setLastError(err)
	switch {
	case err == nil && prev != nil:
		h.log.Info("heartbeat: writes resumed", "beats", h.beats.Load())
	case err != nil && (prev == nil || prev.Error() != err.Error()):
		h.log.Warn("heartbeat: write failed; retrying every interval", "err", err)
	}
}

func (h *Heartbeat) setLastError(err error) (prev error) {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	prev, h.lastErr = h.lastErr, err
	return prev
}

// Close stops the writer and waits for its goroutine to exit; it is
// idempotent and returns nil. The row keeps its last ts, so replicas reading
// it see their lag grow from then on.
func (h *Heartbeat) Close() error {
	h.life.Close()
	return nil
}

// LastError is the error of the last write (or of a failed Open); nil after a
// successful one and before Open.
func (h *Heartbeat) LastError() error {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	return h.lastErr
}

// Beats is the number of heartbeats written so far, the first one included.
func (h *Heartbeat) Beats() int64 { return h.beats.Load() }

// ServerID is the server_id of the row the writer owns: the configured one,
// or the primary's @@server_id once Open has read it (0 before).
func (h *Heartbeat) ServerID() uint32 { return h.serverID.Load() }
