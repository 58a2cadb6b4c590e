package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/throttlekit/throttler/internal/testenv"
)

// The replica's applier is made the bottleneck for real: a trigger that
// exists on the replica only (created with sql_log_bin=0) sleeps 9 ms every
// 100 rows the applier inserts into the target, which MariaDB runs for
// row-based events once slave_run_triggers_for_rbr is YES. Sleeping on every
// row is too coarse (sleep granularity); this gives a stable capacity of about
// 10,000 rows/s (notes/pacing.md). The primary never runs it.
const (
	capTrigger = benchDB + ".cap_apply"
	capCreate  = "CREATE TRIGGER " + capTrigger + " BEFORE INSERT ON " + targetTable +
		" FOR EACH ROW IF NEW.id MOD 100 = 0 THEN DO SLEEP(0.009); END IF"
	capDrop  = "DROP TRIGGER IF EXISTS " + capTrigger
	rbrVar   = "slave_run_triggers_for_rbr"
	rbrValue = "YES"
)

// replicaCap installs and removes the cap.
type replicaCap struct {
	pair         *testenv.Pair
	replicaAdmin *sql.DB
	oldRBR       string // the setting found, restored by remove; "" until install changed it
}

// install creates the trigger (the replica must have the target table) and
// sets slave_run_triggers_for_rbr, which MariaDB only lets change while the
// SQL thread is stopped.
func (c *replicaCap) install(ctx context.Context) error {
	if err := c.pair.Replica().ExecNoBinlog(ctx, "create the capping trigger", capDrop, capCreate); err != nil {
		return err
	}
	var old string
	if err := c.replicaAdmin.QueryRowContext(ctx, "SELECT @@GLOBAL."+rbrVar).Scan(&old); err != nil {
		return fmt.Errorf("read %s: %w", rbrVar, err)
	}
	if old == rbrValue {
		return nil
	}
	if err := c.setRBR(ctx, rbrValue); err != nil {
		return err
	}
	c.oldRBR = old
	return nil
}

// remove drops the trigger and restores the setting. It is meant for a
// context of its own: it runs after the bench's was cancelled.
func (c *replicaCap) remove(ctx context.Context) error {
	err := c.pair.Replica().ExecNoBinlog(ctx, "drop the capping trigger", capDrop)
	if c.oldRBR != "" {
		if e := c.setRBR(ctx, c.oldRBR); e != nil {
			err = errors.Join(err, e)
		} else {
			c.oldRBR = ""
		}
	}
	return err
}

func (c *replicaCap) setRBR(ctx context.Context, value string) error {
	if err := c.pair.Replication().StopSQLThread(ctx); err != nil {
		return err
	}
	setErr := c.pair.Replica().ExecNoBinlog(ctx, "set "+rbrVar, "SET GLOBAL "+rbrVar+" = "+value)
	// Start the applier again even when the SET failed: a stopped SQL
	// thread is the worse state to leave the pair in.
	if err := errors.Join(setErr, c.pair.Replication().StartSQLThread(ctx)); err != nil {
		return err
	}
	return nil
}

// measureCapacity measures the replica's apply rate R by queue and drain: with
// the SQL thread stopped it copies rows on the primary and waits until the IO
// thread has received them all, then starts the SQL thread and times how long
// the replica takes to apply them (MASTER_GTID_WAIT on the primary's
// position). It leaves the target truncated and the replica caught up.
func measureCapacity(ctx context.Context, pair *testenv.Pair, primary, replicaAdmin *sql.DB, rows, chunk int) (float64, time.Duration, error) {
	if err := truncateTarget(ctx, primary); err != nil {
		return 0, 0, err
	}
	if err := pair.Replication().WaitCaughtUp(ctx); err != nil {
		return 0, 0, err
	}
	if err := pair.Replication().StopSQLThread(ctx); err != nil {
		return 0, 0, err
	}
	stopped := true
	defer func() {
		if stopped {
			_ = pair.Replication().StartSQLThread(context.WithoutCancel(ctx))
		}
	}()
	c := &copier{db: primary, rows: rows, chunk: chunk, workers: 1}
	if _, err := c.run(ctx); err != nil {
		return 0, 0, fmt.Errorf("queue the rows: %w", err)
	}
	var pos string
	if err := primary.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&pos); err != nil {
		return 0, 0, fmt.Errorf("read the primary's position: %w", err)
	}
	if err := waitReceived(ctx, pair, pos); err != nil {
		return 0, 0, err
	}

	t0 := time.Now()
	stopped = false
	if err := pair.Replication().StartSQLThread(ctx); err != nil {
		return 0, 0, err
	}
	var res sql.NullInt64
	if err := replicaAdmin.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos, drainTimeout.Seconds()).Scan(&res); err != nil {
		return 0, 0, fmt.Errorf("wait for the drain: %w", err)
	}
	drain := time.Since(t0)
	if !res.Valid || res.Int64 != 0 {
		return 0, 0, fmt.Errorf("the replica did not apply %d rows within %v", rows, drainTimeout)
	}
	if err := truncateTarget(ctx, primary); err != nil {
		return 0, 0, err
	}
	if err := pair.Replication().WaitCaughtUp(ctx); err != nil {
		return 0, 0, err
	}
	return capacity(rows, drain), drain, nil
}

// drainTimeout bounds the capacity measurement's drain: 300,000 rows take
// about 30 s.
const drainTimeout = 5 * time.Minute

// waitReceived waits until the replica's IO thread has received everything up
// to pos (its Gtid_IO_Pos covers pos).
func waitReceived(ctx context.Context, pair *testenv.Pair, pos string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		st, err := pair.Replication().Status(ctx)
		if err == nil && gtidCovers(st["Gtid_IO_Pos"], pos) {
			return nil
		}
		if err := sleepUntil(ctx, time.Now().Add(50*time.Millisecond)); err != nil {
			return fmt.Errorf("wait for the IO thread to receive %s (it has %q): %w", pos, st["Gtid_IO_Pos"], err)
		}
	}
}

// gtidCovers reports whether the MariaDB GTID position have includes want:
// for every domain of want, have has a sequence number at least as high
// (positions list one domain-server-seq triple per domain).
func gtidCovers(have, want string) bool {
	seqs := map[string]uint64{}
	for _, g := range splitList(have) {
		domain, seq, ok := parseGTID(g)
		if !ok {
			return false
		}
		seqs[domain] = seq
	}
	for _, g := range splitList(want) {
		domain, seq, ok := parseGTID(g)
		if !ok {
			return false
		}
		if got, found := seqs[domain]; !found || got < seq {
			return false
		}
	}
	return true
}

// parseGTID splits a MariaDB GTID, domain-server-seq.
func parseGTID(g string) (domain string, seq uint64, ok bool) {
	parts := strings.Split(g, "-")
	if len(parts) != 3 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(parts[2], 10, 64)
	return parts[0], seq, err == nil
}
