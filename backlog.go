package throttler

import (
	"strconv"
	"strings"
	"time"
)

// applyRate measures one replica's applier from successive backlog readings,
// and fills a measurement's rates, ApplyTime and Predicted. It belongs to one
// Replication (one replica), and is called by its probe only, never
// concurrently.
//
// The rate that matters is the applier's capacity, which shows only while it
// has work queued. So a rate is read over the last rateWindow of readings,
// and counts only when every reading in it found a backlog; a window with an
// empty backlog in it measured the arrival rate instead, which serves until
// a busy window has been seen, never after (transactions differ in cost, and
// a burst of cheap ones would read as a capacity the applier lacks). Exact
// bytes are work done, not a count: any window's bytes raise a lower byte
// rate, so that a busy window measured in a lull (the applier restarting, a
// trickle of work) does not stand for ever below what the applier has since
// shown it does. A window is long enough that one applied transaction more
// or less does not swing it.
//
// An applier that applies nothing while work waits (stopped by a lock, or
// applying one long transaction) keeps its last rate, and the time it has
// been stuck is added to the prediction, which therefore grows with the
// clock, as the lag would.
type applyRate struct {
	tx, bytes rateMeter
}

// rateWindow is how far back a rate is read.
const rateWindow = time.Second

// rateMeter is the rate of one counter (transactions or bytes).
type rateMeter struct {
	readings []rateReading // the last rateWindow of readings, and one older
	est      float64       // per second; 0 until measured
	busyEst  bool          // est came from a busy window
	moved    time.Time     // when the counter last grew (or work was last absent)
	file     string        // the binary log file the counter is a position in
}

type rateReading struct {
	at      time.Time
	applied int64
	pending int64
	delayed bool // the applier waited on a configured delay
}

// update fills m's rates, ApplyTime and Predicted from m.Backlog, read at at.
func (a *applyRate) update(m *Measurement, at time.Time) {
	b := &m.Backlog
	if !b.Known {
		*a = applyRate{}
		return
	}
	txOK := b.Transactions >= 0
	bytesOK := b.Bytes >= 0 && b.appliedBytes >= 0
	if txOK {
		a.tx.add(at, b.appliedTransactions, b.Transactions, "", b.delayed, false)
	} else {
		a.tx = rateMeter{}
	}
	if bytesOK {
		a.bytes.add(at, b.appliedBytes, b.Bytes, b.appliedFile, b.delayed, b.bytesExact)
	} else {
		a.bytes = rateMeter{}
	}
	b.TransactionsPerSecond, b.BytesPerSecond = a.tx.est, a.bytes.est
	if txOK && b.Transactions == 0 || !txOK && bytesOK && b.Bytes == 0 {
		b.ApplyTime, m.Predicted = 0, 0 // nothing queued
		return
	}
	// Transactions differ in cost (a heartbeat's against a 1,000-row
	// chunk's), and a rate measured while cheap ones arrived predicts a
	// mix of expensive ones too short; exact bytes follow the work of row
	// events more closely. Each gives a prediction; the longer stands.
	// Bytes that are only a bound (Relay_Log_Space) serve only where
	// transactions cannot be counted: the bound can be a relay log file
	// too long.
	a.predict(m, at, txOK, b.Transactions, &a.tx)
	a.predict(m, at, bytesOK && (b.bytesExact || !txOK), b.Bytes, &a.bytes)
}

// predict raises m's ApplyTime and Predicted to what pending at r's rate
// calls for, when ok and the rate is known.
func (a *applyRate) predict(m *Measurement, at time.Time, ok bool, pending int64, r *rateMeter) {
	if !ok || pending <= 0 || r.est <= 0 {
		return
	}
	apply := secondsToDuration(float64(pending) / r.est)
	m.Backlog.ApplyTime = max(m.Backlog.ApplyTime, apply)
	m.Predicted = max(m.Predicted, satAdd(apply, at.Sub(r.moved)))
}

// add records a reading and re-reads the rate. file, when not "", is what
// the counter is a position in: a reading in another file starts afresh.
// delayed says the applier waits on a configured delay: a window with such
// a reading is not busy, as it applies what has aged past the delay, at the
// pace it arrived, not at its capacity (an estimate taken so would stand,
// far too low, long after the delay is lifted). floor says the counter
// measures work exactly (bytes of row events): what the applier did in any
// window is then a capacity it has, and raises an estimate that is lower,
// busy window or not; a count of transactions is not (a burst of cheap ones
// would read as a capacity the applier lacks).
func (r *rateMeter) add(at time.Time, applied, pending int64, file string, delayed, floor bool) {
	if n := len(r.readings); n > 0 {
		switch last := r.readings[n-1]; {
		case applied < last.applied || file != r.file:
			// A restarted applier, a changed source, a new binary log file:
			// nothing to compare with.
			r.readings = r.readings[:0]
		case !at.After(last.at):
			r.readings = r.readings[:n-1] // a newer reading of the same instant
		}
	}
	if len(r.readings) == 0 || pending == 0 || applied > r.readings[len(r.readings)-1].applied {
		r.moved = at
	}
	r.readings = append(r.readings, rateReading{at: at, applied: applied, pending: pending, delayed: delayed})
	r.file = file
	for len(r.readings) > 2 && at.Sub(r.readings[1].at) >= rateWindow {
		r.readings = r.readings[1:]
	}
	first := r.readings[0]
	span := at.Sub(first.at)
	if span < rateWindow/2 {
		return
	}
	rate := float64(applied-first.applied) / span.Seconds()
	busy := true
	for i, x := range r.readings {
		// Work queued when each interval began; a delay at either end of
		// one (a setting, not a moment) held the applier through it.
		busy = busy && (x.pending > 0 || i == len(r.readings)-1) && !x.delayed
	}
	switch {
	case busy && rate > 0:
		r.est, r.busyEst = rate, true
	case (floor || !r.busyEst) && rate > r.est:
		// The arrival rate, until a busy window is seen; exact work
		// done, always.
		r.est = rate
	}
}

// predictionKnown reports whether m.Predicted means something: the backlog
// is known and either empty or drained at a measured rate.
func predictionKnown(m Measurement) bool {
	b := m.Backlog
	return b.Known && (b.Transactions == 0 || b.Transactions < 0 && b.Bytes == 0 || b.ApplyTime > 0)
}

// size says how much the backlog holds, for reasons: "37 transactions",
// "1.2 MB", or both.
func (b Backlog) size() string {
	var parts []string
	if b.Transactions >= 0 {
		parts = append(parts, plural(b.Transactions, "transaction"))
	}
	if b.Bytes >= 0 {
		parts = append(parts, formatBytes(b.Bytes))
	}
	return strings.Join(parts, ", ")
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(n, 10) + " " + what + "s"
}

// formatBytes is n in B, kB, MB or GB (decimal units, as the servers report).
func formatBytes(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 1, 64) + " GB"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + " MB"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 1, 64) + " kB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
