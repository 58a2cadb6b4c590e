package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// cell is one run's settings.
type cell struct {
	Mode      mode
	Speed     speed
	Rate      float64 // the copier's cap in rows/s, 0 uncapped
	Tolerance time.Duration
}

func (c cell) String() string {
	return fmt.Sprintf("%s, copier %s, tolerance %v", c.Mode.Label, c.Speed, c.Tolerance)
}

// result is what one run measured.
type result struct {
	cell
	Copy copyResult
	// Lag is the true lag from the copy's start until the replica had
	// applied all of it: the lag goes on growing after the copier's last
	// chunk while the replica works through what is queued.
	Lag       lagStats
	ProbeErrs int
	// Applied is from the copy's start until the replica had applied all
	// of it: a copier that outruns the replica finishes early, and only
	// this says how fast the rows really got through.
	Applied time.Duration
}

// rowsPerSecond is the copy's throughput.
func (r result) rowsPerSecond() float64 { return capacity(int(r.Copy.Rows), r.Copy.Duration) }

// appliedPerSecond is the throughput as far as the replica is concerned.
func (r result) appliedPerSecond() float64 { return capacity(int(r.Copy.Rows), r.Applied) }

// overFraction is the time over the tolerance as a fraction of the span
// the lag was measured over (the copy and the replica's catching up): of the
// copy alone, an uncapped copier's few seconds would give thousands of percent.
func (r result) overFraction() float64 {
	if r.Applied <= 0 {
		return 0
	}
	return r.Lag.Over.Seconds() / r.Applied.Seconds()
}

// withinTarget is the bar for the lag: never above 0.8 × the
// tolerance.
func (r result) withinTarget() bool { return r.Lag.Max <= r.Tolerance*8/10 }

// progressEvery is how often a run prints a progress line.
const progressEvery = 5 * time.Second

// runCell copies the whole source under c's throttler while the probe
// measures the true lag, then waits for the replica to catch up. The target
// is truncated and the replica caught up before it starts.
func (b *bench) runCell(ctx context.Context, c cell) (result, error) {
	res := result{cell: c}
	if err := truncateTarget(ctx, b.primary); err != nil {
		return res, err
	}
	if err := b.pair.Replication().WaitCaughtUp(ctx); err != nil {
		return res, err
	}
	t, closeThrottler, err := newThrottler(ctx, c.Mode, b.dbs, c.Tolerance, b.cfg.Interval, b.pair.Replication().WaitCaughtUp)
	if err != nil {
		return res, err
	}
	defer closeThrottler()

	pr := startProbe(ctx, b.primary, b.replicaAdmin)
	// The probe's first reads can precede its first write's arrival and
	// show the row's age since the previous run; from here on they are
	// fresh, and only samples from the copy's start count anyway.
	if err := b.pair.Replication().WaitCaughtUp(ctx); err != nil {
		_, _ = pr.stop()
		return res, err
	}
	cp := &copier{db: b.primary, rows: b.cfg.Rows, chunk: b.cfg.Chunk, workers: b.cfg.Workers, rate: c.Rate, t: t}
	var copied atomic.Bool
	stopProgress := b.progress(func() string {
		trueLag := "none yet"
		if s, ok := pr.last(); ok {
			trueLag = seconds(s.Lag)
		}
		if copied.Load() { // the throttler is closed: its readings are gone
			return "  copy done, the replica is catching up: true lag " + trueLag
		}
		return fmt.Sprintf("  %s rows copied, true lag %s, throttler's lag %s, throttled %v",
			thousands(cp.copied.Load()), trueLag, seconds(t.Lag()), t.IsThrottled())
	})
	res.Copy, err = cp.run(ctx)
	copied.Store(true)
	closeThrottler() // the copy is over: nothing more to throttle
	if err == nil {
		// Long when the copier got far ahead of the replica.
		wctx, cancel := context.WithTimeout(ctx, drainTimeout)
		err = b.pair.Replication().WaitCaughtUp(wctx)
		cancel()
	}
	end := time.Now()
	stopProgress()
	samples, probeErrs := pr.stop()
	if err != nil {
		return res, err
	}
	res.Applied = end.Sub(res.Copy.Start)
	res.Lag = summarize(since(samples, res.Copy.Start), c.Tolerance, end)
	res.ProbeErrs = probeErrs
	return res, nil
}

// progress prints line() every progressEvery until stop.
func (b *bench) progress(line func() string) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				b.say("%s", line())
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
