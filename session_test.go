package throttler

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every query the library sends that a missing privilege can deny drops the
// session that was denied, so that a privilege granted again is seen by the
// next query (a new session) rather than never (the pooled denied one).
func TestAccessDeniedSessionIsNotReused(t *testing.T) {
	heartbeat, err := HeartbeatSource(HeartbeatConfig{Table: "percona.heartbeat"})
	require.NoError(t, err)
	aurora, err := AuroraSource(AuroraConfig{})
	require.NoError(t, err)
	cases := []struct {
		name string
		// query returns a function that asks the fake server once.
		query func(t *testing.T, db *sql.DB) func(context.Context) error
	}{
		{"replica status", measureWith(ReplicaStatusSource())},
		{"performance_schema", measureWith(PerformanceSchemaSource())},
		{"heartbeat source", measureWith(heartbeat)},
		{"aurora", measureWith(aurora)},
		{"load", func(t *testing.T, db *sql.DB) func(context.Context) error {
			l, err := NewLoad(db, LoadConfig{Threshold: 10}, nil)
			require.NoError(t, err)
			return func(ctx context.Context) error { _, err := l.read(ctx); return err }
		}},
		{"query", func(t *testing.T, db *sql.DB) func(context.Context) error {
			q, err := NewQuery(db, QueryConfig{SQL: "SELECT 1", Threshold: 1}, nil)
			require.NoError(t, err)
			return func(ctx context.Context) error { _, err := q.read(ctx); return err }
		}},
		{"discovery listing", func(t *testing.T, db *sql.DB) func(context.Context) error {
			d, err := NewDiscovery(db, time.Second, DiscoveryConfig{DSNTemplate: "fake://{{.Host}}:{{.Port}}", OpenDB: func(string) (*sql.DB, error) { return nil, errUnused }}, nil)
			require.NoError(t, err)
			return func(ctx context.Context) error { _, err := d.showReplicas(ctx); return err }
		}},
		{"heartbeat writer", func(t *testing.T, db *sql.DB) func(context.Context) error {
			h, err := NewHeartbeat(db, HeartbeatWriterConfig{ServerID: 7, Interval: time.Hour}, nil)
			require.NoError(t, err)
			return func(ctx context.Context) error { return h.write(ctx, "REPLACE INTO heartbeat VALUES (1)") }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, f := newFakedb(t)
			f.setValue(int64(0))
			ask := c.query(t, db)
			f.revoked.Store(true)
			err := ask(context.Background())
			assert.True(t, accessDenied(err), "denied: %v", err)
			f.revoked.Store(false) // GRANT: new sessions have it
			err = ask(context.Background())
			assert.False(t, accessDenied(err), "after the grant, still denied: %v", err)
			assert.Equal(t, int64(2), f.connects.Load(), "the denied session was closed, a new one opened")
			assert.Zero(t, db.Stats().Idle-1, "the new session went back to the pool")
		})
	}
}

var errUnused = errors.New("unused")

func measureWith(src LagSource) func(*testing.T, *sql.DB) func(context.Context) error {
	return func(_ *testing.T, db *sql.DB) func(context.Context) error {
		return func(ctx context.Context) error { _, err := src.Measure(ctx, db); return err }
	}
}
