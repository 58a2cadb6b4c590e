package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/throttlekit/throttler/internal/testenv"
)

// faultKind is a way to make the replica fall behind for real.
type faultKind int

const (
	// stopSQLThread stops the replica's applier: replication is "not
	// flowing", which throttles whatever the lag, and the backlog grows
	// until the thread starts again.
	stopSQLThread faultKind = iota
	// replicaDelay sets MASTER_DELAY above the lag tolerance: the replica
	// applies every transaction that much later, and its lag climbs.
	replicaDelay
)

// fault is one step of the demo's schedule.
type fault struct {
	After time.Duration // wait this long after the previous fault (the first: after the copy starts)
	Kind  faultKind
	For   time.Duration // then keep it this long; replicaDelay adds its delay
}

var (
	// fullSchedule is `make demo`'s: the copy pauses twice, for two
	// different reasons.
	fullSchedule = []fault{
		{After: 3 * time.Second, Kind: stopSQLThread, For: 4 * time.Second},
		{After: 3 * time.Second, Kind: replicaDelay, For: 2 * time.Second},
	}
	// quickSchedule is -quick's: one pause and one resume.
	quickSchedule = []fault{
		{After: 1500 * time.Millisecond, Kind: stopSQLThread, For: 3 * time.Second},
	}
)

// replicaDelayFor is the MASTER_DELAY that makes the lag climb well past
// tolerance: three times it, in whole seconds (3s for the default 1s).
func replicaDelayFor(tolerance time.Duration) time.Duration {
	return (3*tolerance + time.Second - 1).Truncate(time.Second)
}

// injector runs a fault schedule on the local pair and undoes what it did.
type injector struct {
	pair      *testenv.Pair
	con       *console
	tolerance time.Duration

	// What needs undoing; written by the schedule's goroutine, read by
	// stop after that goroutine has exited.
	sqlStopped, delaySet bool
	injected             int
}

// startFaults runs schedule in a goroutine. stop ends it, restores the
// replica (SQL thread running, no delay) if a fault is still in force, and
// returns how many faults were injected and any error of either.
func startFaults(ctx context.Context, p *testenv.Pair, schedule []fault, tolerance time.Duration, con *console) (stop func() (injected int, err error)) {
	in := &injector{pair: p, con: con, tolerance: tolerance}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.run(ctx, schedule) }()
	return func() (int, error) {
		cancel()
		runErr := <-done
		if errors.Is(runErr, context.Canceled) {
			runErr = nil // stopped mid-step: restore below undoes it
		}
		// ctx is spent when the run was interrupted; restoring must
		// still happen, promptly.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer rcancel()
		return in.injected, errors.Join(runErr, in.restore(rctx))
	}
}

func (in *injector) run(ctx context.Context, schedule []fault) error {
	for _, f := range schedule {
		if err := sleep(ctx, f.After); err != nil {
			return err
		}
		if err := in.inject(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

func (in *injector) inject(ctx context.Context, f fault) error {
	in.injected++
	switch f.Kind {
	case stopSQLThread:
		in.con.Printf("demo: stopping the replica's SQL thread for %v", f.For)
		in.sqlStopped = true
		if err := in.pair.Replication().StopSQLThread(ctx); err != nil {
			return err
		}
		if err := sleep(ctx, f.For); err != nil {
			return err
		}
		in.con.Printf("demo: starting the replica's SQL thread again")
		if err := in.pair.Replication().StartSQLThread(ctx); err != nil {
			return err
		}
		in.sqlStopped = false
	case replicaDelay:
		d := replicaDelayFor(in.tolerance)
		hold := d + f.For
		in.con.Printf("demo: delaying the replica by %v (MASTER_DELAY; lag tolerance %v) for %v", d, in.tolerance, hold)
		in.delaySet = true
		if err := in.pair.Replication().SetDelay(ctx, d); err != nil {
			return err
		}
		if err := sleep(ctx, hold); err != nil {
			return err
		}
		in.con.Printf("demo: removing the replica's delay")
		if err := in.pair.Replication().SetDelay(ctx, 0); err != nil {
			return err
		}
		in.delaySet = false
	default:
		return fmt.Errorf("unknown fault kind %d", f.Kind)
	}
	return nil
}

// restore undoes a fault still in force.
func (in *injector) restore(ctx context.Context) error {
	var errs []error
	if in.sqlStopped {
		in.con.Printf("demo: restoring the replica: starting its SQL thread")
		if err := in.pair.Replication().StartSQLThread(ctx); err != nil {
			errs = append(errs, err)
		} else {
			in.sqlStopped = false
		}
	}
	if in.delaySet {
		in.con.Printf("demo: restoring the replica: removing its delay")
		if err := in.pair.Replication().SetDelay(ctx, 0); err != nil {
			errs = append(errs, err)
		} else {
			in.delaySet = false
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore the replica (make replica-up repairs it): %w", err)
	}
	return nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
