package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// simReplica is a replica whose applier takes a fixed time per chunk, on the
// fake clock of a synctest bubble: a copier's commits and a heartbeat
// writer's beats queue in one stream, applied in order. It is a LagSource
// that reads like HeartbeatSource (sub-second lag, no backlog) or, with
// status set, like ReplicaStatusSource (whole-second lag, and the backlog).
type simReplica struct {
	perChunk time.Duration // the applier's cost of one chunk
	status   bool

	mu     sync.Mutex
	events []simEvent
	freeAt time.Time // when the applier has applied everything queued
}

type simEvent struct {
	commit, applied time.Time
	beat            bool
}

func (s *simReplica) String() string { return "simulated replica" }

// commit queues a chunk (or a beat, which costs nothing) committed now.
func (s *simReplica) commit(beat bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	start := now
	if s.freeAt.After(now) {
		start = s.freeAt
	}
	if !beat {
		start = start.Add(s.perChunk)
	}
	s.freeAt = start
	s.events = append(s.events, simEvent{commit: now, applied: start, beat: beat})
}

// trueLag is the age of the oldest committed event not yet applied.
func (s *simReplica) trueLag() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, e := range s.events {
		if e.applied.After(now) {
			return now.Sub(e.commit)
		}
	}
	return 0
}

func (s *simReplica) Measure(context.Context, *sql.DB) (Measurement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var lastBeat time.Time
	var applied, pending int64
	for _, e := range s.events {
		switch {
		case e.applied.After(now):
			pending++
		default:
			applied++
			if e.beat {
				lastBeat = e.commit
			}
		}
	}
	if !s.status {
		return Measurement{Lag: now.Sub(lastBeat)}, nil
	}
	m := Measurement{Backlog: Backlog{Known: true, Transactions: pending, Bytes: -1, appliedTransactions: applied, appliedBytes: -1}}
	if pending > 0 {
		for _, e := range s.events {
			if e.applied.After(now) {
				// Seconds_Behind_Master: whole seconds of both clocks.
				m.Lag = time.Duration(now.Unix()-e.commit.Unix()) * time.Second
				break
			}
		}
	}
	return m, nil
}

// TestPacingHoldsTheLag runs a copier much faster than a replica, paced, on
// a fake clock: the true lag must stay under 0.8 × the tolerance and the
// copier must get at least 90% of the replica's capacity (slow start
// included), with the default poll interval.
func TestPacingHoldsTheLag(t *testing.T) {
	for _, status := range []bool{false, true} {
		for _, tol := range []time.Duration{time.Second, 3 * time.Second} {
			for _, speedup := range []int{3, 30} {
				source := "heartbeat"
				if status {
					source = "backlog"
				}
				t.Run(fmt.Sprintf("%s/tolerance %v/copier %dx", source, tol, speedup), func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						const capacity = 10 // chunks per second
						sim := &simReplica{perChunk: time.Second / capacity, status: status}
						r, err := NewReplicationThrottler(fakeDB, tol, nil, WithLagSource(sim), WithPacing(0))
						require.NoError(t, err)
						ctx, cancel := context.WithCancel(context.Background())
						defer cancel()
						sim.commit(true)
						require.NoError(t, r.Open(ctx))
						defer r.Close()

						var wg sync.WaitGroup
						wg.Go(func() { // the heartbeat writer
							for ctx.Err() == nil {
								sim.commit(true)
								time.Sleep(100 * time.Millisecond)
							}
						})
						var worst time.Duration
						wg.Go(func() { // the independent probe of the true lag
							for ctx.Err() == nil {
								worst = max(worst, sim.trueLag())
								time.Sleep(10 * time.Millisecond)
							}
						})
						const run = 30 * time.Second
						chunks := 0
						start := time.Now()
						for time.Since(start) < run {
							r.BlockWait(ctx)
							sim.commit(false)
							chunks++
							time.Sleep(time.Second / time.Duration(capacity*speedup))
						}
						cancel()
						wg.Wait()
						share := float64(chunks) / (run.Seconds() * capacity)
						t.Logf("worst true lag %v, %.0f%% of capacity", worst, 100*share)
						assert.LessOrEqual(t, worst, tol*8/10, "true lag")
						assert.GreaterOrEqual(t, share, 0.9, "share of the replica's capacity")
					})
				})
			}
		}
	}
}

func TestPacerReleasesOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newFake(t, time.Second, Measurement{}, WithPacing(0), WithInterval(time.Hour))
		require.NoError(t, r.Open(context.Background()))
		// The first call goes at once (burst 1); at the start rate the
		// second waits a second.
		require.NoError(t, r.Wait(context.Background()))
		closeEndsPacedWait(t, r)
		start := time.Now()
		assert.ErrorIs(t, r.Wait(context.Background()), ErrClosed, "after Close nothing is paced")
		assert.Zero(t, time.Since(start))
	})
}

func TestPacerReleasesWhenOpenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newFake(t, time.Second, Measurement{}, WithPacing(0), WithInterval(time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, r.Open(ctx))
		defer r.Close()
		r.BlockWait(context.Background())
		done := make(chan struct{})
		go func() { r.BlockWait(context.Background()); close(done) }()
		synctest.Wait()
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("a paced BlockWait still blocks after Open's context ended")
		}
	})
}

func TestPacedWaitEndsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newFake(t, time.Second, Measurement{}, WithPacing(0), WithInterval(time.Hour))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		require.NoError(t, r.Wait(context.Background()))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		assert.ErrorIs(t, r.Wait(ctx), context.DeadlineExceeded)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		// The cancelled turn is given back: the next caller waits no longer
		// than the start rate's second from the last admission (less if the
		// rate grew meanwhile), not two.
		require.NoError(t, r.Wait(context.Background()))
		assert.LessOrEqual(t, time.Since(start), time.Second)
	})
}

func TestPacedWaitIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newFake(t, time.Second, Measurement{}, WithPacing(0), WithInterval(time.Hour), WithMaxWait(300*time.Millisecond))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		require.NoError(t, r.Wait(context.Background()))
		start := time.Now()
		assert.ErrorIs(t, r.Wait(context.Background()), ErrMaxWait)
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
	})
}

// A set of replicas is paced to its slowest: the one whose copier share it
// measures lower steers the shared rate.
func TestReplicasPacedToTheSlowest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fast := &simReplica{perChunk: time.Second / 40}
		slow := &simReplica{perChunk: time.Second / 10}
		m, err := NewReplicasThrottler(map[string]*sql.DB{"fast": fakeDB, "slow": fakeDB}, time.Second, nil, WithPacing(0))
		require.NoError(t, err)
		// NewReplicasThrottler gives every replica the same options: set
		// each one's source by hand.
		m.children[0].(*Replication).source = fast
		m.children[1].(*Replication).source = slow
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		fast.commit(true)
		slow.commit(true)
		require.NoError(t, m.Open(ctx))
		defer m.Close()
		var wg sync.WaitGroup
		wg.Go(func() {
			for ctx.Err() == nil {
				fast.commit(true)
				slow.commit(true)
				time.Sleep(100 * time.Millisecond)
			}
		})
		var worst time.Duration
		wg.Go(func() {
			for ctx.Err() == nil {
				worst = max(worst, slow.trueLag())
				time.Sleep(10 * time.Millisecond)
			}
		})
		chunks := 0
		start := time.Now()
		for time.Since(start) < 20*time.Second {
			m.BlockWait(ctx)
			fast.commit(false)
			slow.commit(false)
			chunks++
			time.Sleep(time.Millisecond)
		}
		cancel()
		wg.Wait()
		assert.LessOrEqual(t, worst, 800*time.Millisecond, "the slow replica's true lag")
		assert.GreaterOrEqual(t, float64(chunks)/20, 9.0, "chunks per second (the slow replica applies 10)")
		assert.Less(t, float64(chunks)/20, 11.0, "chunks per second (the slow replica applies 10)")
	})
}

func TestPacingConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"negative target", []Option{WithPacing(-time.Second)}, "WithPacing(-1s): the target lag must not be negative"},
		{"target past a week", []Option{WithPacing(maxSpan + time.Hour)}, "WithPacing(169h0m0s): the target lag must be at most 168h0m0s"},
		{"target at the tolerance", []Option{WithPacing(2 * time.Second)}, "WithPacing(2s): the target lag must be below the lag tolerance 2s"},
	} {
		_, err := NewReplicationThrottler(fakeDB, 2*time.Second, nil, tc.opts...)
		assert.ErrorIs(t, err, ErrInvalidConfig, tc.name)
		assert.ErrorContains(t, err, tc.want, tc.name)
	}
	// A discovery checks the target where it is given, not when its
	// members are built at Open.
	_, err := NewDiscovery(fakeDB, 2*time.Second, DiscoveryConfig{DSNTemplate: "u:p@tcp({{.Host}}:{{.Port}})/"}, nil, WithPacing(2*time.Second))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithPacing(2s): the target lag must be below the lag tolerance 2s")
	_, err = NewReplicasThrottler(map[string]*sql.DB{"a": fakeDB}, 2*time.Second, nil, WithPacing(3*time.Second))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewLoad(fakeDB, LoadConfig{Threshold: 10}, nil, WithPacing(0))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithPacing does not apply to")
}

// Without WithPacing, nothing is paced: a thousand calls go at once.
func TestNoPacingWithoutTheOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newFake(t, time.Second, Measurement{}, WithInterval(time.Second))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		start := time.Now()
		for range 1000 {
			require.NoError(t, r.Wait(context.Background()))
		}
		assert.Zero(t, time.Since(start))
	})
}

func TestPaceControllerSlowStart(t *testing.T) {
	c := newPaceController(500 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	c.observe(t0, 0, 0, false)
	// A caller had to wait for its turn, the replica kept up: the rate
	// grows by paceGrowth a second.
	c.observe(t0.Add(100*time.Millisecond), 0, 1, true)
	assert.InDelta(t, paceStartRate*math.Pow(paceGrowth, 0.1), c.rate, 1e-9)
	// A measurement that comes late grows it by paceMaxStep at most.
	c.observe(t0.Add(time.Second), 0, 1, true)
	assert.InDelta(t, paceStartRate*math.Pow(paceGrowth, 0.1)*paceMaxStep, c.rate, 1e-9)
	// No caller waited: hold.
	c.observe(t0.Add(2*time.Second), 0, 2, false)
	assert.InDelta(t, paceStartRate*math.Pow(paceGrowth, 0.1)*paceMaxStep, c.rate, 1e-9)
}

func TestPaceControllerSteersToTheApplyRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		delay time.Duration
		want  float64 // × the apply rate
	}{
		{250 * time.Millisecond, 1.25},
		{500 * time.Millisecond, 1},
		{time.Second, 0.5},
		{2 * time.Second, 0.1},
	} {
		c := newPaceController(500 * time.Millisecond)
		// The replica applied 20 calls per second for a second.
		c.observe(t0, tc.delay, 100, true)
		c.observe(t0.Add(time.Second), tc.delay, 120, true)
		assert.InDelta(t, 20*tc.want, c.rate, 1e-9, "delay %v", tc.delay)
	}
	// Nothing applied (a stalled replica): the rate is steered down from
	// where it was, never below the floor.
	c := newPaceController(500 * time.Millisecond)
	for i := range 50 {
		c.observe(t0.Add(time.Duration(i)*100*time.Millisecond), 2*time.Second, 0, true)
	}
	assert.Equal(t, paceMinRate, c.rate)
}

func TestApplyRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var a applyRate
	read := func(at time.Duration, pending, applied int64) Measurement {
		m := Measurement{Backlog: Backlog{Known: true, Transactions: pending, Bytes: -1, appliedTransactions: applied, appliedBytes: -1}}
		a.update(&m, t0.Add(at))
		return m
	}
	m := read(0, 0, 100)
	assert.True(t, predictionKnown(m), "an empty backlog predicts no lag")
	assert.Zero(t, m.Predicted)

	m = read(300*time.Millisecond, 50, 103)
	assert.False(t, predictionKnown(m), "a backlog at no known rate predicts nothing")
	assert.Zero(t, m.Backlog.TransactionsPerSecond, "a rate needs half a window of readings")

	m = read(500*time.Millisecond, 50, 105)
	assert.Equal(t, 10.0, m.Backlog.TransactionsPerSecond, "the arrival rate stands in: the window began with no backlog")
	assert.Equal(t, 5*time.Second, m.Predicted)

	m = read(time.Second, 50, 110)
	assert.Equal(t, 10.0, m.Backlog.TransactionsPerSecond)
	m = read(1500*time.Millisecond, 40, 130)
	assert.Equal(t, 25.0, m.Backlog.TransactionsPerSecond, "a busy window (0.3s to 1.5s) is the capacity")
	assert.Equal(t, 1600*time.Millisecond, m.Backlog.ApplyTime)
	assert.Equal(t, 1600*time.Millisecond, m.Predicted)

	// The applier stops applying with work queued: its rate falls only as
	// far as its window says, and the prediction grows with the time it has
	// been stuck.
	m = read(2*time.Second, 40, 130)
	assert.Equal(t, 20.0, m.Backlog.TransactionsPerSecond)
	assert.Equal(t, 2500*time.Millisecond, m.Predicted, "2s to apply, stuck for 0.5s")
	m = read(2500*time.Millisecond, 40, 130)
	assert.Equal(t, 20.0, m.Backlog.TransactionsPerSecond, "a window with nothing applied is no rate")
	assert.Equal(t, 3*time.Second, m.Predicted, "2s to apply, stuck for 1s")

	m = read(3*time.Second, 10, 10)
	assert.Equal(t, 500*time.Millisecond, m.Predicted, "a counter that went backwards (a restarted applier) starts a new window; the estimate stands meanwhile")

	m = read(3500*time.Millisecond, math.MaxInt64, 20)
	assert.Equal(t, maxDuration, m.Predicted, "a backlog too large to represent saturates")

	// Both counted: the longer prediction stands, from exact bytes only.
	for _, exact := range []bool{true, false} {
		var ab applyRate
		both := func(at time.Duration, txPending, txApplied, bytesPending, pos int64) Measurement {
			m := Measurement{Backlog: Backlog{Known: true, Transactions: txPending, appliedTransactions: txApplied,
				Bytes: bytesPending, appliedBytes: pos, appliedFile: "b.1", bytesExact: exact}}
			ab.update(&m, t0.Add(at))
			return m
		}
		both(0, 10, 0, 3000, 0)
		// 10 transactions a second (cheap ones), 1,000 bytes a second.
		m := both(time.Second, 10, 10, 3000, 1000)
		want := time.Second // 10 transactions at 10 a second
		if exact {
			want = 3 * time.Second // 3,000 bytes at 1,000 a second
		}
		assert.Equal(t, want, m.Predicted, "exact bytes %v", exact)
	}

	// A configured delay: the applier applies what has aged past it, at the
	// pace it arrived; those windows are not its capacity.
	var d applyRate
	delayedRead := func(at time.Duration, pending, applied int64, delayed bool) Measurement {
		m := Measurement{Backlog: Backlog{Known: true, Transactions: pending, Bytes: -1, appliedTransactions: applied, appliedBytes: -1, delayed: delayed}}
		d.update(&m, t0.Add(at))
		return m
	}
	delayedRead(0, 30, 0, false)
	m = delayedRead(time.Second, 30, 50, false)
	assert.Equal(t, 50.0, m.Backlog.TransactionsPerSecond, "a busy window")
	for i := 2; i <= 5; i++ {
		m = delayedRead(time.Duration(i)*time.Second, 30, 50+int64(i-1)*2, true)
	}
	assert.Equal(t, 50.0, m.Backlog.TransactionsPerSecond, "2 a second while delayed is not the capacity")
	m = delayedRead(6*time.Second, 30, 60, false)
	assert.Equal(t, 50.0, m.Backlog.TransactionsPerSecond, "a window that began delayed is not busy either")
	m = delayedRead(7*time.Second, 30, 100, false)
	assert.Equal(t, 40.0, m.Backlog.TransactionsPerSecond, "the delay lifted: busy windows count again")

	// Bytes, where transactions cannot be counted (GTIDs off).
	var b applyRate
	bytesRead := func(at time.Duration, pending, pos int64, file string) Measurement {
		m := Measurement{Backlog: Backlog{Known: true, Transactions: -1, Bytes: pending, appliedBytes: pos, appliedFile: file}}
		b.update(&m, t0.Add(at))
		return m
	}
	bytesRead(0, 5000, 1000, "b.1")
	m = bytesRead(time.Second, 4000, 3000, "b.1")
	assert.Equal(t, 2000.0, m.Backlog.BytesPerSecond)
	assert.Equal(t, 2*time.Second, m.Predicted)
	m = bytesRead(2*time.Second, 4000, 10, "b.2")
	assert.Equal(t, 2000.0, m.Backlog.BytesPerSecond, "positions in another file are not compared")
	assert.Equal(t, 2*time.Second, m.Predicted, "the counter moved (to a new file)")

	// Exact bytes applied in a window that was not busy are work done: they
	// raise a lower estimate. Transactions do not.
	var f applyRate
	floorRead := func(at time.Duration, pending, pos, txPending, txApplied int64) Measurement {
		m := Measurement{Backlog: Backlog{Known: true, Transactions: txPending, appliedTransactions: txApplied,
			Bytes: pending, appliedBytes: pos, appliedFile: "b.1", bytesExact: true}}
		f.update(&m, t0.Add(at))
		return m
	}
	floorRead(0, 5000, 0, 5, 0)
	m = floorRead(time.Second, 5000, 1000, 5, 1)
	assert.Equal(t, 1000.0, m.Backlog.BytesPerSecond, "a busy window in a lull")
	assert.Equal(t, 1.0, m.Backlog.TransactionsPerSecond)
	floorRead(1500*time.Millisecond, 0, 6000, 0, 6)
	m = floorRead(2*time.Second, 0, 11000, 0, 11)
	assert.Equal(t, 10000.0, m.Backlog.BytesPerSecond, "10,000 bytes applied in the last second: the applier can")
	assert.Equal(t, 4.0, m.Backlog.TransactionsPerSecond, "a count of transactions is no capacity: the last busy window (0 to 1.5s) stands")
}

// A backlog that will take the tolerance to apply throttles before the lag
// shows it, and says so.
func TestPredictedLagThrottles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{m: Measurement{Backlog: Backlog{Known: true, Transactions: 0, Bytes: -1, appliedTransactions: 0, appliedBytes: -1}}}
		r, err := NewReplicationThrottler(fakeDB, time.Second, nil, WithLagSource(src), WithInterval(time.Hour))
		require.NoError(t, err)
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		// 10 applied in a second with work queued, then 40 queued: 4s.
		src.set(Measurement{Backlog: Backlog{Known: true, Transactions: 5, Bytes: -1, appliedTransactions: 0, appliedBytes: -1}}, nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		time.Sleep(time.Second)
		src.set(Measurement{Backlog: Backlog{Known: true, Transactions: 40, Bytes: -1, appliedTransactions: 10, appliedBytes: -1}}, nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		assert.True(t, r.IsThrottled())
		assert.Equal(t, "replica backlog: predicted lag 4s >= 1s (40 transactions to apply)", r.ThrottleReason())
		assert.Zero(t, r.Lag(), "Lag keeps its meaning")
	})
}

// While throttled, the monitor measures every tenth of the interval, so that
// waiters resume soon after the replica recovers; while clear and far from
// the tolerance, every interval.
func TestFastPollWhileThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, lagOf(0), WithInterval(time.Second))
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		count := func(d time.Duration) int64 {
			n := src.calls.Load()
			time.Sleep(d)
			return src.calls.Load() - n
		}
		// The counts are ±1: a window's edge may fall on a measurement.
		assert.InDelta(t, 10, count(10*time.Second), 1, "clear: one measurement a second")
		src.set(lagOf(2*time.Second), nil)
		time.Sleep(time.Second) // the next measurement sees it
		assert.InDelta(t, 100, count(10*time.Second), 1, "throttled: ten a second")
		src.set(lagOf(600*time.Millisecond), nil)
		time.Sleep(time.Second)
		assert.InDelta(t, 100, count(10*time.Second), 1, "over half the tolerance: ten a second")
		src.set(lagOf(0), nil)
		time.Sleep(2 * time.Second)
		assert.InDelta(t, 10, count(10*time.Second), 1, "clear again: one a second")
	})
}

// A Discovery with WithPacing paces its callers once no member throttles,
// and a paced wait ends when it closes.
func TestDiscoveryPaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(hostA, hostB)
		d := newDisco(t, f, nil, nil, WithPacing(0))
		require.NoError(t, d.Open(context.Background()))
		start := time.Now()
		require.NoError(t, d.Wait(context.Background()), "the first call goes at once")
		assert.Zero(t, time.Since(start))
		require.NoError(t, d.Wait(context.Background()), "the second waits its turn")
		assert.Equal(t, time.Second, time.Since(start), "at the start rate, one call a second")

		closeEndsPacedWait(t, d)
	})
}

// closeEndsPacedWait starts a Wait that must wait for its paced turn, closes
// w, and checks that the Wait then returns ErrClosed at once. It runs in a
// synctest bubble.
func closeEndsPacedWait(t *testing.T, w interface {
	Throttler
	Waiter
}) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Wait(context.Background()) }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before its paced turn: %v", err)
	default:
	}
	require.NoError(t, w.Close())
	synctest.Wait()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	default:
		t.Fatal("a paced Wait still blocks after Close")
	}
}

// A Multi that holds a paced throttler paces its callers too, and a paced
// wait in it ends when it closes.
func TestMultiPacesWithItsPacedChildren(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		paced, _ := newFake(t, time.Second, Measurement{}, WithPacing(0), WithInterval(time.Hour))
		other, _ := newFake(t, time.Second, Measurement{}, WithInterval(time.Second))
		m := NewMulti(paced, other)
		require.NoError(t, m.Open(context.Background()))
		start := time.Now()
		m.BlockWait(context.Background())
		m.BlockWait(context.Background())
		assert.Equal(t, time.Second, time.Since(start), "at the start rate, one call a second")
		closeEndsPacedWait(t, m)
	})
}

// A caller waiting for a slot taken at a low rate goes back for an earlier
// one when the rate rises: after a stall, the copier resumes at the
// replica's pace, not at the stalled one.
func TestPacerRaiseWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer()
		c := newPaceController(time.Second)
		c.rate = 0.2 // one call per 5s
		p.add(c)
		defer p.remove(c)
		start := time.Now()
		require.NoError(t, p.wait(context.Background(), 0))
		done := make(chan time.Duration)
		go func() {
			_ = p.wait(context.Background(), 0)
			done <- time.Since(start)
		}()
		time.Sleep(100 * time.Millisecond)
		p.mu.Lock()
		c.rate = 10
		p.setLimitLocked()
		p.mu.Unlock()
		// The tokens accrued at the old rate until the raise; at the new
		// rate the rest take under 100ms.
		assert.LessOrEqual(t, <-done, 200*time.Millisecond, "admitted at the new rate, not after 5s")
	})
}
