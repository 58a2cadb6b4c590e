package main

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// The true-lag probe does not use the library: a one-row table on the primary
// gets NOW(6) every probeWrite, and the replica reads the age of its copy
// every probeRead against its own NOW(6). Both servers share this host's
// clock, so the difference is the age of what the replica shows, to within
// one write interval.
const (
	probeTable = benchDB + ".truelag"
	probeWrite = 50 * time.Millisecond
	probeRead  = 100 * time.Millisecond
	// probeTimeout bounds one statement, so that a stuck server shows as a
	// missing sample instead of a stuck probe.
	probeTimeout = 2 * time.Second
)

const probeCreate = `CREATE TABLE IF NOT EXISTS ` + probeTable + ` (
	id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
	ts DATETIME(6) NOT NULL
) ENGINE=InnoDB`

// probe runs the writer and the reader until stop.
type probe struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []sample
	errors  int // failed reads, which leave a gap in the samples
}

// startProbe starts writing on primary and reading on replica. The table must
// exist on both (probeCreate, replicated).
func startProbe(ctx context.Context, primary, replica *sql.DB) *probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &probe{cancel: cancel}
	p.wg.Go(func() {
		every(ctx, probeWrite, func(ctx context.Context) {
			_, _ = primary.ExecContext(ctx, "REPLACE INTO "+probeTable+" (id, ts) VALUES (1, NOW(6))")
		})
	})
	p.wg.Go(func() {
		every(ctx, probeRead, func(qctx context.Context) {
			var us sql.NullInt64
			err := replica.QueryRowContext(qctx,
				"SELECT TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM "+probeTable+" WHERE id = 1").Scan(&us)
			at := time.Now()
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil || !us.Valid {
				if ctx.Err() == nil { // not the stop
					p.errors++
				}
				return
			}
			p.samples = append(p.samples, sample{At: at, Lag: time.Duration(us.Int64) * time.Microsecond})
		})
	})
	return p
}

// last is the latest sample, for progress lines.
func (p *probe) last() (sample, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples) == 0 {
		return sample{}, false
	}
	return p.samples[len(p.samples)-1], true
}

// stop ends the probe and returns its samples and failed reads.
func (p *probe) stop() ([]sample, int) {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples, p.errors
}

// every calls fn now and then every d until ctx ends, each call bounded by
// probeTimeout. A ticker drops ticks while fn is slow, so a slow server does
// not make a burst of calls afterwards.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, probeTimeout)
		fn(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
