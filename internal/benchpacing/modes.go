package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/throttlekit/throttler"
)

// mode is one way of throttling the copier.
type mode struct {
	Name  string // the -modes name
	Label string // the table's
	// Heartbeat: the lag comes from a heartbeat the bench writes on the
	// primary, read through the replica's admin connection (the monitor
	// user may not read tables).
	Heartbeat bool
	// LagOnly hides the backlog from the throttler: the library as it was
	// before the leading signal.
	LagOnly bool
	Paced   bool
}

var modes = []mode{
	{Name: "stopgo", Label: "stop/go, lag only", LagOnly: true},
	{Name: "stopgo-backlog", Label: "stop/go + backlog"},
	{Name: "paced-heartbeat", Label: "paced, heartbeat", Heartbeat: true, Paced: true},
	{Name: "paced-status", Label: "paced, replica status", Paced: true},
}

func modeNames() []string {
	out := make([]string, len(modes))
	for i, m := range modes {
		out[i] = m.Name
	}
	return out
}

func modeByName(name string) (mode, bool) {
	for _, m := range modes {
		if m.Name == name {
			return m, true
		}
	}
	return mode{}, false
}

// heartbeatInterval is the heartbeat's beat: a reading includes up to one
// beat, so it must be well under the smallest tolerance.
const heartbeatInterval = 100 * time.Millisecond

// lagOnly is a LagSource that reports what its source measures minus the
// backlog and the prediction made from it, so that the throttler decides on
// the lag alone, as it did before the leading signal existed.
type lagOnly struct{ throttler.LagSource }

func (s lagOnly) Measure(ctx context.Context, db *sql.DB) (throttler.Measurement, error) {
	m, err := s.LagSource.Measure(ctx, db)
	m.Backlog = throttler.Backlog{}
	m.Predicted = 0
	return m, err
}

func (s lagOnly) String() string { return s.LagSource.String() + ", lag only" }

// throttleDBs are the connections a mode's throttler may use.
type throttleDBs struct {
	primary      *sql.DB // admin, for the heartbeat writer
	replica      *sql.DB // the monitor user, as in production
	replicaAdmin *sql.DB // may read the heartbeat table
}

// heartbeatTable is the bench's heartbeat, in its own database.
const heartbeatTable = benchDB + ".heartbeat"

// newThrottler builds (and opens) mode m's throttler. For the heartbeat mode
// it also starts the heartbeat, and waits for the replica to have its first
// beat (waitCaughtUp) so that the first measurement finds the row. closeAll
// closes what it opened.
func newThrottler(ctx context.Context, m mode, dbs throttleDBs, tol, interval time.Duration,
	waitCaughtUp func(context.Context) error,
) (t *throttler.Replication, closeAll func(), err error) {
	var opts []throttler.Option
	if interval > 0 {
		opts = append(opts, throttler.WithInterval(interval))
	}
	if m.Paced {
		opts = append(opts, throttler.WithPacing(0))
	}
	if m.LagOnly {
		opts = append(opts, throttler.WithLagSource(lagOnly{throttler.ReplicaStatusSource()}))
	}
	replica := dbs.replica
	closeHeartbeat := func() {}
	if m.Heartbeat {
		hb, err := throttler.NewHeartbeat(dbs.primary, throttler.HeartbeatWriterConfig{
			Table: heartbeatTable, Interval: heartbeatInterval, Create: true,
		}, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("heartbeat: %w", err)
		}
		if err := hb.Open(ctx); err != nil {
			return nil, nil, err
		}
		closeHeartbeat = func() { _ = hb.Close() }
		if err := waitCaughtUp(ctx); err != nil {
			closeHeartbeat()
			return nil, nil, fmt.Errorf("wait for the first heartbeat on the replica: %w", err)
		}
		src, err := throttler.HeartbeatSource(throttler.HeartbeatConfig{Table: heartbeatTable, SourceServerID: hb.ServerID()})
		if err != nil {
			closeHeartbeat()
			return nil, nil, err
		}
		opts = append(opts, throttler.WithLagSource(src))
		replica = dbs.replicaAdmin
	}
	t, err = throttler.NewReplicationThrottler(replica, tol, nil, opts...)
	if err == nil {
		err = t.Open(ctx)
	}
	if err != nil {
		closeHeartbeat()
		return nil, nil, fmt.Errorf("throttler (%s): %w", m.Label, err)
	}
	return t, sync.OnceFunc(func() {
		_ = t.Close()
		closeHeartbeat()
	}), nil
}
