package throttler

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// steerRow is a throttler whose level can change while it runs (a
// ToleranceSetter, or a setter of its own), under the contract stated on
// ToleranceSetter. Levels and readings are in the signal's unit (seconds of
// lag, a value): every row starts at level 1 with a reading of 5, so it
// throttles once open.
type steerRow struct {
	name  string
	build func(t *testing.T) steerSubject
}

type steerSubject struct {
	th Throttler
	// set sets the level.
	set func(level float64) error
	// read sets the reading and, when open, publishes it (UpdateLag).
	read func(v float64)
	// fail makes readings fail (on) or succeed again.
	fail func(on bool)
}

func seconds(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }

func steerRows() []steerRow {
	lagReader := func(src *fakeSource, th Throttler) func(float64) {
		return func(v float64) {
			src.set(lagOf(seconds(v)), nil)
			_ = th.UpdateLag(context.Background())
		}
	}
	failer := func(src *fakeSource) func(bool) {
		return func(on bool) {
			if on {
				src.set(Measurement{}, errBoom)
			} else {
				src.set(lagOf(5*time.Second), nil)
			}
		}
	}
	return []steerRow{
		{name: "Replication", build: func(t *testing.T) steerSubject {
			r, src := newFake(t, time.Second, lagOf(5*time.Second), contractOpts(0)...)
			closeAtEnd(t, r)
			return steerSubject{th: r, set: func(v float64) error { return r.SetTolerance(seconds(v)) }, read: lagReader(src, r), fail: failer(src)}
		}},
		{name: "NewReplicasThrottler", build: func(t *testing.T) steerSubject {
			src := &fakeSource{m: lagOf(5 * time.Second)}
			m, err := NewReplicasThrottler(map[string]*sql.DB{"r1": fakeDB, "r2": fakeDB}, time.Second, nil, append(contractOpts(0), WithLagSource(src))...)
			require.NoError(t, err)
			closeAtEnd(t, m)
			return steerSubject{th: m, set: func(v float64) error { return m.SetTolerance(seconds(v)) }, read: lagReader(src, m), fail: failer(src)}
		}},
		{name: "Discovery", build: func(t *testing.T) steerSubject {
			fl := newContractFleet(t)
			fl.src.set(lagOf(5*time.Second), nil)
			d := fl.discovery(t, 0)
			return steerSubject{th: d, set: func(v float64) error { return d.SetTolerance(seconds(v)) }, read: lagReader(fl.src, d), fail: failer(fl.src)}
		}},
		{name: "Query", build: func(t *testing.T) steerSubject {
			q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(5), contractOpts(0)...)
			return steerSubject{th: q, set: q.SetThreshold, read: func(v float64) {
				f.setValue(v)
				_ = q.UpdateLag(context.Background())
			}, fail: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setValue(int64(5))
				}
			}}
		}},
		{name: "Load", build: func(t *testing.T) steerSubject {
			l, f := newFakeLoad(t, LoadConfig{Threshold: 1}, loadRunning("5"), contractOpts(0)...)
			return steerSubject{th: l, set: func(v float64) error { return l.SetLimits(LoadConfig{Threshold: v}) }, read: func(v float64) {
				f.setStatus(loadRunning(strconv.FormatFloat(v, 'f', -1, 64)))
				_ = l.UpdateLag(context.Background())
			}, fail: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setStatus(loadRunning("5"))
				}
			}}
		}},
	}
}

func utilization(th Throttler) float64 { return th.(Utilizer).Utilization() }

// TestSteerContract runs the contract of ToleranceSetter (and of the
// threshold setters that follow it) against every row, on the fake clock.
func TestSteerContract(t *testing.T) {
	ctx := context.Background()
	clauses := []struct {
		name string
		run  func(t *testing.T, s steerSubject)
	}{
		{"loosening releases every waiter at once", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.th.Open(ctx))
			require.True(t, s.th.IsThrottled())
			assert.InDelta(t, 5, utilization(s.th), 1e-9)
			done := contractWaiters(ctx, s.th, 50)
			require.False(t, returned(done), "throttled waiters block")
			start := time.Now()
			require.NoError(t, s.set(10))
			assert.False(t, s.th.IsThrottled(), "judged at once")
			assert.True(t, returned(done), "every waiter released")
			assert.Zero(t, time.Since(start), "by the change itself: the fake clock did not move")
			assert.Empty(t, reasonOf(s.th))
			assert.InDelta(t, 0.5, utilization(s.th), 1e-9)
		}},
		{"tightening throttles at once", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.set(10))
			require.NoError(t, s.th.Open(ctx))
			require.False(t, s.th.IsThrottled())
			require.NoError(t, s.set(5))
			assert.True(t, s.th.IsThrottled(), "at the threshold: throttled with no new reading")
			assert.NotEmpty(t, reasonOf(s.th))
			assert.InDelta(t, 1, utilization(s.th), 1e-9)
			assert.False(t, returned(contractWaiters(ctx, s.th, 1)), "a new waiter blocks")
			s.read(1) // let the waiter go before the cleanup
		}},
		{"a bad value is an error and changes nothing", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.th.Open(ctx))
			require.True(t, s.th.IsThrottled())
			reason := reasonOf(s.th)
			for _, bad := range []float64{0, -1} {
				err := s.set(bad)
				assert.ErrorIs(t, err, ErrInvalidConfig)
				require.Error(t, err)
				assert.Regexp(t, `must be (a )?positive`, err.Error())
				assert.Equal(t, reason, reasonOf(s.th), "nothing published")
			}
			s.read(2)
			assert.True(t, s.th.IsThrottled(), "the level is still 1")
			s.read(0.5)
			assert.False(t, s.th.IsThrottled())
		}},
		{"before Open, it sets what Open judges against", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.set(10))
			assert.False(t, s.th.IsThrottled())
			assert.Zero(t, utilization(s.th), "0 before Open")
			require.NoError(t, s.th.Open(ctx))
			assert.False(t, s.th.IsThrottled())
			assert.InDelta(t, 0.5, utilization(s.th), 1e-9)
		}},
		{"a stale reading stays stale; the next one is judged against the new level", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.th.Open(ctx))
			s.fail(true)
			time.Sleep(time.Hour + time.Second) // the stale window (contractOpts)
			require.True(t, s.th.IsThrottled())
			require.Contains(t, reasonOf(s.th), "no ")
			stale := reasonOf(s.th)
			require.NoError(t, s.set(10))
			assert.True(t, s.th.IsThrottled(), "the stale verdict stands")
			assert.Equal(t, stale, reasonOf(s.th))
			assert.GreaterOrEqual(t, utilization(s.th), 1.0, "at least 1 while throttled")
			s.fail(false)
			require.NoError(t, s.th.UpdateLag(ctx))
			assert.False(t, s.th.IsThrottled(), "5 < 10")
		}},
		{"Stats keep counting across a change", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.th.Open(ctx))
			before := s.th.(StatsReporter).Stats()
			require.Equal(t, int64(1), before.Episodes)
			done := contractWaiters(ctx, s.th, 1)
			time.Sleep(time.Second)
			require.NoError(t, s.set(10))
			require.True(t, returned(done))
			require.NoError(t, s.set(1))
			after := s.th.(StatsReporter).Stats()
			assert.Equal(t, int64(2), after.Episodes, "one more throttled period")
			assert.Equal(t, before.Measurements, after.Measurements, "no measurement taken")
			assert.Equal(t, int64(1), after.Waits)
			assert.GreaterOrEqual(t, after.ThrottledTotal, time.Second)
			assert.True(t, after.Throttled)
		}},
		{"after Close it changes the level and nothing else", func(t *testing.T, s steerSubject) {
			require.NoError(t, s.th.Open(ctx))
			require.NoError(t, s.th.Close())
			assert.NoError(t, s.set(0.1))
			assert.False(t, s.th.IsThrottled())
			assert.Zero(t, utilization(s.th), "0 once stopped")
			assert.ErrorIs(t, s.set(0), ErrInvalidConfig)
		}},
	}
	for _, row := range steerRows() {
		t.Run(row.name, func(t *testing.T) {
			for _, c := range clauses {
				t.Run(c.name, func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) { c.run(t, row.build(t)) })
				})
			}
		})
	}
}
