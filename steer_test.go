package throttler

import (
	"context"
	"database/sql"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
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

func TestReplicationSetToleranceSteersPacing(t *testing.T) {
	target := func(r *Replication) time.Duration {
		r.pace.mu.Lock()
		defer r.pace.mu.Unlock()
		return r.ctl.target
	}
	half, _ := newFake(t, 2*time.Second, Measurement{}, WithPacing(0))
	require.Equal(t, time.Second, target(half))
	require.NoError(t, half.SetTolerance(4*time.Second))
	assert.Equal(t, 2*time.Second, target(half), "WithPacing(0): half the tolerance, which follows it")

	fixed, _ := newFake(t, 2*time.Second, Measurement{}, WithPacing(time.Second))
	err := fixed.SetTolerance(time.Second)
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "SetTolerance: the lag tolerance 1s must stay above the WithPacing target 1s")
	assert.Equal(t, 2*time.Second, fixed.Tolerance(), "unchanged")
	require.NoError(t, fixed.SetTolerance(4*time.Second))
	assert.Equal(t, time.Second, target(fixed), "a target given stays")
	assert.Equal(t, 4*time.Second, fixed.Tolerance())
}

func TestReplicationUtilization(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, 10*time.Second, lagOf(5*time.Second), contractOpts(0)...)
		assert.Zero(t, r.Utilization(), "before Open")
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		assert.InDelta(t, 0.5, r.Utilization(), 1e-9)

		backlog := Measurement{Lag: time.Second, Predicted: 8 * time.Second, Backlog: Backlog{Known: true, Transactions: 10, ApplyTime: time.Second}}
		require.True(t, predictionKnown(backlog))
		src.set(backlog, nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		assert.InDelta(t, 0.8, r.Utilization(), 1e-9, "the backlog's predicted lag, which throttles too")

		src.set(Measurement{NotFlowing: "applier (SQL) thread not running"}, nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		assert.Equal(t, 1.0, r.Utilization(), "at least 1 while throttled for any reason")

		src.set(lagOf(25*time.Second), nil)
		require.NoError(t, r.UpdateLag(context.Background()))
		assert.InDelta(t, 2.5, r.Utilization(), 1e-9, "above 1 when over")
		require.NoError(t, r.Close())
		assert.Zero(t, r.Utilization(), "once stopped")
	})
}

// A replica that lost its source is an observation, not a reading that a
// new tolerance can judge again.
func TestSetToleranceKeepsNotAReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, src := newFake(t, time.Second, lagOf(0), contractOpts(0)...)
		require.NoError(t, r.Open(context.Background()))
		defer r.Close()
		src.set(Measurement{}, ErrNotReplica)
		require.Error(t, r.UpdateLag(context.Background()))
		require.True(t, r.IsThrottled())
		reason := r.ThrottleReason()
		require.NoError(t, r.SetTolerance(time.Hour))
		assert.True(t, r.IsThrottled())
		assert.Equal(t, reason, r.ThrottleReason())
	})
}

func TestLoadSetLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := LoadConfig{Limits: []LoadLimit{
			{Variable: "Threads_running", Threshold: 10, Critical: 20},
			{Variable: "Threads_connected", Threshold: 100},
		}}
		l, f := newFakeLoad(t, cfg, map[string]string{"Threads_running": "8", "Threads_connected": "50"}, contractOpts(0)...)
		require.NoError(t, l.Open(context.Background()))
		assert.InDelta(t, 0.8, l.Utilization(), 1e-9, "the largest value over its threshold")

		bad := []struct {
			cfg  LoadConfig
			want string
		}{
			{LoadConfig{Threshold: 5}, "SetLimits: Threads_connected is watched by this Load but given no levels"},
			{LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5}, {Variable: "Threads_created", Threshold: 5}}}, "Threads_created is not watched by this Load"},
			{LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5, Rate: true}, {Variable: "Threads_connected", Threshold: 5}}}, "Threads_running has Rate true, and NewLoad's false"},
			{LoadConfig{Limits: []LoadLimit{{Variable: "Threads_running", Threshold: 5, Critical: 4}, {Variable: "Threads_connected", Threshold: 5}}}, "Critical 4 must be a finite number above Threshold 5"},
		}
		for _, b := range bad {
			err := l.SetLimits(b.cfg)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, b.want)
		}
		assert.False(t, l.IsThrottled(), "nothing changed")
		assert.InDelta(t, 0.8, l.Utilization(), 1e-9)

		// The order may differ; names compare as the server does.
		require.NoError(t, l.SetLimits(LoadConfig{Limits: []LoadLimit{
			{Variable: "threads_connected", Threshold: 40},
			{Variable: "Threads_running", Threshold: 5, Critical: 8},
		}}))
		assert.True(t, l.IsThrottled(), "judged at once")
		assert.Equal(t, "Threads_running 8 >= 5, Threads_connected 50 >= 40", l.ThrottleReason())
		assert.True(t, l.IsCritical(), "the critical level too")
		assert.Equal(t, "Threads_running 8 >= 8", l.CriticalReason())
		assert.InDelta(t, 1.6, l.Utilization(), 1e-9)

		require.NoError(t, l.SetLimits(LoadConfig{Limits: []LoadLimit{
			{Variable: "Threads_running", Threshold: 10, Critical: 20},
			{Variable: "Threads_connected", Threshold: 100},
		}, CriticalFor: time.Minute}))
		assert.False(t, l.IsThrottled())
		assert.False(t, l.IsCritical())

		// CriticalFor changed with it: a critical reading needs a minute.
		f.setStatus(map[string]string{"Threads_running": "25", "Threads_connected": "50"})
		require.NoError(t, l.UpdateLag(context.Background()))
		assert.False(t, l.IsCritical(), "not yet confirmed")
		time.Sleep(time.Minute)
		require.NoError(t, l.UpdateLag(context.Background()))
		assert.True(t, l.IsCritical())
	})
}

func TestPurgeLagUtilization(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newFakePurge(t, 1000, purgeRow("250", true, false), contractOpts(0)...)
		assert.Zero(t, p.Utilization())
		require.NoError(t, p.Open(context.Background()))
		assert.InDelta(t, 0.25, p.Utilization(), 1e-9)
		f.setResult(purgeRow("1", false, false)) // disabled: unreadable, throttles
		require.Error(t, p.UpdateLag(context.Background()))
		assert.Equal(t, 1.0, p.Utilization())
		require.NoError(t, p.Close())
		assert.Zero(t, p.Utilization())
	})
}

func TestQueryUtilizationOfANegativeValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newFakeQuery(t, QueryConfig{Threshold: 4}, int64(-3), contractOpts(0)...)
		require.NoError(t, q.Open(context.Background()))
		assert.Zero(t, q.Utilization(), "as idle as 0")
		require.NoError(t, q.SetThreshold(0.5))
		assert.Equal(t, 0.5, q.Threshold())
		assert.ErrorContains(t, q.SetThreshold(math.Inf(1)), "SetThreshold: the threshold +Inf must be a positive number")
		assert.ErrorIs(t, q.SetThreshold(math.NaN()), ErrInvalidConfig)
		assert.Equal(t, 0.5, q.Threshold())
	})
}

// SetURL asks the new URL at once, with no clock advance; a bad URL changes
// nothing.
func TestHTTPSetURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var asked []string
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			asked = append(asked, r.URL.String())
			mu.Unlock()
			code := http.StatusOK
			if strings.Contains(r.URL.Host, "busy") {
				code = http.StatusTooManyRequests
			}
			return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
		})
		h, err := NewHTTP(HTTPConfig{URL: "http://idle.invalid/check", Client: &http.Client{Transport: rt}}, nil, contractOpts(0)...)
		require.NoError(t, err)
		defer h.Close()
		require.NoError(t, h.SetURL("http://busy.invalid/check"), "before Open: Open asks it")
		require.NoError(t, h.Open(context.Background()))
		require.True(t, h.IsThrottled())

		for _, bad := range []string{"", "/check", "ftp://idle.invalid/", "http://idle.invalid/#x"} {
			err := h.SetURL(bad)
			assert.ErrorIs(t, err, ErrInvalidConfig, bad)
			assert.ErrorContains(t, err, "SetURL: the URL")
		}
		assert.Equal(t, "http://busy.invalid/check", h.URL())

		start := time.Now()
		require.NoError(t, h.SetURL("http://u:secret@idle.invalid/check"))
		synctest.Wait()
		assert.False(t, h.IsThrottled(), "the new URL's answer, at once")
		assert.Zero(t, time.Since(start))
		assert.Equal(t, "http://u:xxxxx@idle.invalid/check", h.URL(), "redacted")
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"http://busy.invalid/check", "http://u:secret@idle.invalid/check"}, asked)
	})
}

func TestDiscoverySetToleranceReachesNewMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newContractFleet(t)
		fl.src.set(lagOf(5*time.Second), nil)
		d := fl.discovery(t, 0)
		require.NoError(t, d.Open(context.Background()))
		require.True(t, d.IsThrottled())
		require.NoError(t, d.SetTolerance(10*time.Second))
		assert.Equal(t, 10*time.Second, d.Tolerance())
		assert.False(t, d.IsThrottled())

		fl.mu.Lock()
		fl.hosts = append(fl.hosts, ReplicaHost{ServerID: 9, Host: "10.0.0.9", Port: 3306})
		fl.mu.Unlock()
		require.NoError(t, d.UpdateLag(context.Background()))
		require.Len(t, d.Replicas(), 3)
		for _, r := range d.cur.Load().watched {
			assert.Equal(t, 10*time.Second, r.Tolerance(), r.String())
		}
		assert.False(t, d.IsThrottled())
		assert.InDelta(t, 0.5, d.Utilization(), 1e-9)

		fl.addBroken(true)
		_ = d.UpdateLag(context.Background())
		require.True(t, d.IsThrottled())
		assert.Equal(t, 1.0, d.Utilization(), "a member that cannot be watched counts 1")
	})
}

func TestMultiSetToleranceAllOrNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newFake(t, time.Second, lagOf(500*time.Millisecond), contractOpts(0)...)
		b, _ := newFake(t, 2*time.Second, lagOf(500*time.Millisecond), append(contractOpts(0), WithPacing(time.Second))...)
		mock := &Mock{}
		mock.SetThrottled(false)
		m := NewMulti(a, b, mock)
		require.NoError(t, m.Open(context.Background()))
		defer m.Close()

		err := m.SetTolerance(time.Second)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, "replication #2: the lag tolerance 1s must stay above the WithPacing target 1s")
		assert.ErrorContains(t, err, "throttler 3 has no lag tolerance to set")
		assert.Equal(t, time.Second, a.Tolerance(), "nothing changed")
		assert.Equal(t, 2*time.Second, b.Tolerance())

		assert.InDelta(t, 0.5, m.Utilization(), 1e-9, "the largest child's")
		mock.SetThrottled(true)
		assert.Equal(t, 1.0, m.Utilization(), "a throttled child that is not a Utilizer counts 1")

		both := NewMulti(a, b)
		require.NoError(t, both.SetTolerance(4*time.Second))
		assert.Equal(t, 4*time.Second, a.Tolerance())
		assert.Equal(t, 4*time.Second, b.Tolerance())
	})
}
