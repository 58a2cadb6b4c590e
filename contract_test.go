package throttler

// The contract every Throttler keeps (the package doc, the Throttler
// interface's method docs, README "The contract"), run against every
// implementation: one row per implementation, one subtest per clause, time
// on synctest's fake clock. A new throttler is one more row. Where a type
// legitimately differs, its row says which clause it lifts and quotes the doc
// sentence that allows it.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// contractRow is one implementation under the contract.
type contractRow struct {
	name string
	// build returns a fresh, unopened throttler whose per-call cap is
	// maxWait (0: none), with the options more (WithOnChange), closed at
	// the test's end, with its levers.
	build func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject

	// Exemptions: each is the doc sentence that allows it, "" for none.

	// neverThrottles lifts every clause about a throttled state, and the
	// lifecycle errors (Noop).
	neverThrottles string
	// needsNoOpen lifts "false before Open and after a failed Open", the
	// UpdateLag sentinels and the release at the end of Open's context
	// (Mock: it has no monitor to bind).
	needsNoOpen string
	// updateLagNil lifts the UpdateLag sentinels: there is nothing to
	// measure.
	updateLagNil string
	// firstReadingClear lifts "Open publishes what it measured" for a
	// throttled signal: Open's one reading cannot throttle (a rate needs
	// two readings), so the lever throttles only once open.
	firstReadingClear string
	// clockDriven: the lever moves the fake clock to the next boundary,
	// so a clear is seen a boundary later, not the instant the lever
	// returns (Schedule).
	clockDriven string
}

// contractSubject is a throttler under test and its levers.
type contractSubject struct {
	th Throttler
	// throttle makes the signal throttled or clear and, when open,
	// publishes it; before Open it sets what Open will measure.
	throttle func(on bool)
	// failOpen makes Open's measurement fail (on) or succeed; nil when
	// Open cannot fail but for a done context. openErr is what the
	// failure wraps.
	failOpen func(on bool)
	openErr  error
}

// contractOpts are the options of a polling row: the monitor never polls on
// its own (the levers publish with UpdateLag) and nothing goes stale.
func contractOpts(maxWait time.Duration) []Option {
	return []Option{WithInterval(time.Hour), WithStaleAfter(time.Hour), WithMaxWait(maxWait)}
}

// lagLever throttles th by setting src's lag past a 1s tolerance.
func lagLever(src *fakeSource, th Throttler) func(bool) {
	return func(on bool) {
		lag := time.Duration(0)
		if on {
			lag = time.Minute
		}
		src.set(lagOf(lag), nil)
		_ = th.UpdateLag(context.Background())
	}
}

// errLever fails the measurement of src.
func errLever(src *fakeSource) func(bool) {
	return func(on bool) {
		var err error
		if on {
			err = errBoom
		}
		src.set(Measurement{}, err)
	}
}

func closeAtEnd(t *testing.T, th Throttler) {
	t.Cleanup(func() { _ = th.Close() })
}

func contractRows() []contractRow {
	return []contractRow{
		{name: "Replication", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			r, src := newFake(t, time.Second, Measurement{}, append(contractOpts(maxWait), more...)...)
			closeAtEnd(t, r)
			return contractSubject{th: r, throttle: lagLever(src, r), failOpen: errLever(src), openErr: errBoom}
		}},
		{name: "Multi", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			a, srcA := newFake(t, time.Second, Measurement{}, contractOpts(maxWait)...)
			b, srcB := newFake(t, time.Second, Measurement{}, contractOpts(maxWait)...)
			m := NewMulti(a, b)
			m.SetOnChange("", onChangeOf(more))
			closeAtEnd(t, m)
			return contractSubject{th: m, throttle: lagLever(srcA, m), failOpen: errLever(srcB), openErr: errBoom}
		}},
		{name: "Multi.Only", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			// A view of an open Multi on one of its children; the other
			// throttles throughout, and the view pays it no heed.
			a, srcA := newFake(t, time.Second, Measurement{}, append(contractOpts(maxWait), WithName("lag"))...)
			b, srcB := newFake(t, time.Second, Measurement{}, append(contractOpts(maxWait), WithName("other"))...)
			m := NewMulti(a, b)
			closeAtEnd(t, m)
			srcB.set(lagOf(time.Minute), nil)
			require.NoError(t, m.Open(context.Background()))
			require.True(t, b.IsThrottled())
			v, err := m.Only("lag")
			require.NoError(t, err)
			v.SetOnChange("", onChangeOf(more))
			closeAtEnd(t, v)
			return contractSubject{th: v, throttle: lagLever(srcA, a)}
		}},
		{name: "NewReplicasThrottler", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			src := &fakeSource{}
			m, err := NewReplicasThrottler(map[string]*sql.DB{"r1": fakeDB, "r2": fakeDB}, time.Second, nil,
				append(contractOpts(maxWait), append(more, WithLagSource(src))...)...)
			require.NoError(t, err)
			closeAtEnd(t, m)
			return contractSubject{th: m, throttle: lagLever(src, m), failOpen: errLever(src), openErr: errBoom}
		}},
		{name: "Discovery/lagging member", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			fl := newContractFleet(t)
			d := fl.discovery(t, maxWait, more...)
			return contractSubject{th: d, throttle: lagLever(fl.src, d), failOpen: fl.failListing, openErr: errBoom}
		}},
		{name: "Discovery/member that cannot be opened", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			fl := newContractFleet(t)
			d := fl.discovery(t, maxWait, more...)
			return contractSubject{th: d, throttle: func(on bool) {
				fl.addBroken(on)
				_ = d.UpdateLag(context.Background())
			}, failOpen: fl.failListing, openErr: errBoom}
		}},
		{name: "Load", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			l, f := newFakeLoad(t, LoadConfig{Threshold: 10}, loadRunning("1"), append(contractOpts(maxWait), more...)...)
			return contractSubject{th: l, throttle: func(on bool) {
				f.setStatus(loadRunning(map[bool]string{false: "1", true: "10"}[on]))
				_ = l.UpdateLag(context.Background())
			}, failOpen: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setStatus(loadRunning("1"))
				}
			}, openErr: errBoom}
		}},
		{name: "Load/rate", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			// A counter of nanoseconds paused that grows with the clock
			// (the fake one in bubbles, the real one in noSpin) while
			// on: 1e9/s, or stands still: 0/s. The monitor polls every
			// 10ms and each of its readings sees the same rate; the
			// lever waits out two rate windows so that the rate it
			// publishes is the new one's alone.
			var mu sync.Mutex
			var base int64
			var since time.Time
			paused := false
			value := func() int64 {
				if paused {
					return base + time.Since(since).Nanoseconds()
				}
				return base
			}
			status := func() map[string]string {
				mu.Lock()
				defer mu.Unlock()
				return map[string]string{"wsrep_flow_control_paused_ns": fmt.Sprint(value())}
			}
			opts := append(contractOpts(maxWait), append(more, WithInterval(minPeriod))...)
			l, f := newFakeLoad(t, LoadConfig{Variable: "wsrep_flow_control_paused_ns", Rate: true, Threshold: 5e8}, nil, opts...)
			f.setStatusFunc(status)
			return contractSubject{th: l, throttle: func(on bool) {
				mu.Lock()
				base, since, paused = value(), time.Now(), on
				mu.Unlock()
				for range 2 {
					time.Sleep(l.rateWindow)
					_ = l.UpdateLag(context.Background())
				}
			}, failOpen: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setStatusFunc(status)
				}
			}, openErr: errBoom}
		}, firstReadingClear: "LoadLimit.Rate: There is no rate until a second reading, so the variable does not throttle after Open's first reading"},
		{name: "PurgeLag", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			p, f := newFakePurge(t, 1000, purgeRow("1", true, false), append(contractOpts(maxWait), more...)...)
			return contractSubject{th: p, throttle: func(on bool) {
				f.setResult(purgeRow(map[bool]string{false: "1", true: "1000"}[on], true, false))
				_ = p.UpdateLag(context.Background())
			}, failOpen: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setResult(purgeRow("1", true, false))
				}
			}, openErr: errBoom}
		}},
		{name: "Galera", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			g, f := newFakeGalera(t, GaleraConfig{RecvQueue: 10}, galeraSynced(0), append(contractOpts(maxWait), more...)...)
			return contractSubject{th: g, throttle: func(on bool) {
				f.setStatus(with(galeraSynced(0), "wsrep_local_recv_queue", map[bool]string{false: "0", true: "10"}[on]))
				_ = g.UpdateLag(context.Background())
			}, failOpen: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setStatus(galeraSynced(0))
				}
			}, openErr: errBoom}
		}},
		{name: "Query", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			q, f := newFakeQuery(t, QueryConfig{Threshold: 1}, int64(0), append(contractOpts(maxWait), more...)...)
			return contractSubject{th: q, throttle: func(on bool) {
				f.setValue(map[bool]int64{false: 0, true: 1}[on])
				_ = q.UpdateLag(context.Background())
			}, failOpen: func(on bool) {
				if on {
					f.setResult(fakedbResult{err: errBoom})
				} else {
					f.setValue(int64(0))
				}
			}, openErr: errBoom}
		}},
		{name: "HTTP", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			var status atomic.Int32
			var broken atomic.Bool
			status.Store(http.StatusOK)
			// An in-memory endpoint: no socket, so the fake clock runs.
			rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if broken.Load() {
					return nil, errBoom
				}
				code := int(status.Load())
				return &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)),
					Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
			})
			h, err := NewHTTP(HTTPConfig{URL: "http://freno.invalid/check/myapp/mysql/main", Client: &http.Client{Transport: rt}}, nil, append(contractOpts(maxWait), more...)...)
			require.NoError(t, err)
			closeAtEnd(t, h)
			return contractSubject{th: h, throttle: func(on bool) {
				status.Store(map[bool]int32{false: http.StatusOK, true: http.StatusTooManyRequests}[on])
				_ = h.UpdateLag(context.Background())
			}, failOpen: broken.Store, openErr: errBoom}
		}},
		{name: "Schedule", clockDriven: "Schedule: a Schedule is driven by the clock (BlockWait: inside a window it blocks until the window ends)",
			build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
				// synctest's clock starts at midnight UTC: ten-minute
				// windows every twenty minutes, for a day.
				var windows []Window
				for m := 10; m+10 < 24*60; m += 20 {
					windows = append(windows, Window{Start: fmt.Sprintf("%02d:%02d", m/60, m%60), End: fmt.Sprintf("%02d:%02d", (m+10)/60, (m+10)%60)})
				}
				s, err := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: windows}, nil, append(more, WithMaxWait(maxWait))...)
				require.NoError(t, err)
				closeAtEnd(t, s)
				return contractSubject{th: s, throttle: func(on bool) {
					if throttled, _, next := s.StateAt(time.Now()); throttled != on {
						time.Sleep(time.Until(next))
						synctest.Wait() // the monitor's timer fires at the boundary
					}
				}}
			},
			updateLagNil: "Schedule.UpdateLag: There is nothing to measure: it returns nil, and does nothing unless the schedule is open.",
		},
		{name: "Pause/manual", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			p := newTestPause(t, PauseConfig{}, append(more, WithMaxWait(maxWait))...)
			return contractSubject{th: p, throttle: func(on bool) {
				if on {
					p.Pause("contract")
				} else {
					p.Resume()
				}
			}}
		}, updateLagNil: "Pause.UpdateLag: Without a flag file there is nothing to check and it returns nil."},
		{name: "Pause/flag file", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			dir := filepath.Join(t.TempDir(), "dir")
			require.NoError(t, os.Mkdir(dir, 0o700))
			flag := filepath.Join(dir, "flag")
			p := newTestPause(t, PauseConfig{FlagFile: flag}, append(contractOpts(maxWait), more...)...)
			return contractSubject{th: p, throttle: func(on bool) {
				if on {
					_ = os.WriteFile(flag, nil, 0o600)
				} else {
					_ = os.Remove(flag)
				}
				_ = p.UpdateLag(context.Background())
			}, failOpen: func(on bool) { // a path component that is a file: the check fails
				_ = os.RemoveAll(dir)
				if on {
					_ = os.WriteFile(dir, nil, 0o600)
				} else {
					_ = os.Mkdir(dir, 0o700)
				}
			}, openErr: syscall.ENOTDIR}
		}},
		{name: "Mock", build: func(t *testing.T, maxWait time.Duration, more ...Option) contractSubject {
			m := &Mock{BlockTime: maxWait, OnChange: onChangeOf(more)}
			if maxWait == 0 {
				m.BlockTime = 24 * time.Hour // the Mock always has a cap: one longer than any test
			}
			m.SetThrottled(false)
			closeAtEnd(t, m)
			return contractSubject{th: m, throttle: m.SetThrottled, failOpen: func(on bool) {
				if on {
					m.SetError(errBoom)
				} else {
					m.SetError(nil)
				}
			}, openErr: errBoom}
		}, needsNoOpen: "Mock: It needs no database and no Open. (SetError makes Open and UpdateLag return err.)"},
		{name: "Noop", build: func(*testing.T, time.Duration, ...Option) contractSubject {
			return contractSubject{th: Noop{}}
		}, neverThrottles: "Noop never throttles. Every method returns at once; Open and Close may be called any number of times."},
	}
}

// onChangeOf is WithOnChange's callback among opts, for the rows that take
// it otherwise (Multi's SetOnChange, Mock's field).
func onChangeOf(opts []Option) func(Change) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o.onChange
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// contractFleet is a primary on the fake driver listing replicas, whose
// members are measured by one fake source.
type contractFleet struct {
	primary *fakedb
	members *fakedb
	src     *fakeSource

	mu     sync.Mutex
	hosts  []ReplicaHost
	broken map[string]bool // DSNs OpenDB fails for
}

func newContractFleet(t *testing.T) *contractFleet {
	_, primary := newFakedb(t)
	fl := &contractFleet{primary: primary, members: newFakeServer(), src: &fakeSource{}, broken: map[string]bool{},
		hosts: []ReplicaHost{{ServerID: 2, Host: "10.0.0.1", Port: 3306}, {ServerID: 3, Host: "10.0.0.2", Port: 3306}}}
	fl.failListing(false)
	return fl
}

func (fl *contractFleet) discovery(t *testing.T, maxWait time.Duration, more ...Option) *Discovery {
	primary := fl.primary.open()
	t.Cleanup(func() { _ = primary.Close() })
	d, err := NewDiscovery(primary, time.Second, DiscoveryConfig{DSNTemplate: "fake://{{.Host}}:{{.Port}}", Every: time.Hour, OpenDB: fl.open}, nil,
		append(contractOpts(maxWait), append(more, WithLagSource(fl.src))...)...)
	require.NoError(t, err)
	closeAtEnd(t, d)
	return d
}

func (fl *contractFleet) open(dsn string) (*sql.DB, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.broken[dsn] {
		return nil, fmt.Errorf("dial %s: %w", dsn, errBoom)
	}
	return fl.members.open(), nil
}

// failListing makes the primary fail to list its replicas, or answer.
func (fl *contractFleet) failListing(on bool) {
	fl.primary.set(func(string, []driver.NamedValue) fakedbResult {
		if on {
			return fakedbResult{err: errBoom}
		}
		fl.mu.Lock()
		defer fl.mu.Unlock()
		r := fakedbResult{cols: []string{"Server_id", "Host", "Port"}}
		for _, h := range fl.hosts {
			r.rows = append(r.rows, []driver.Value{fmt.Appendf(nil, "%d", h.ServerID), []byte(h.Host), fmt.Appendf(nil, "%d", h.Port)})
		}
		return r
	})
}

// addBroken lists one more replica that cannot be opened (on), or lets
// every listed replica be opened (off). Each call on adds a new one, since a
// member once opened stays open.
func (fl *contractFleet) addBroken(on bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if !on {
		clear(fl.broken)
		return
	}
	h := ReplicaHost{ServerID: uint32(100 + len(fl.hosts)), Host: "10.0.1.1", Port: 3300 + len(fl.hosts)}
	fl.hosts = append(fl.hosts, h)
	fl.broken[fmt.Sprintf("fake://%s:%d", h.Host, h.Port)] = true
}

// contractWaiters starts n BlockWait calls and returns a channel closed once
// all have returned.
func contractWaiters(ctx context.Context, th Throttler, n int) <-chan struct{} {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { th.BlockWait(ctx) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// returned reports whether done is closed, once every goroutine of the
// bubble has blocked: what synctest.Wait leaves running is blocked for good
// at this instant of the fake clock.
func returned(done <-chan struct{}) bool {
	synctest.Wait()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// TestContract runs every clause against every row.
func TestContract(t *testing.T) {
	ctx := context.Background()
	clauses := []struct {
		name string
		run  func(t *testing.T, row contractRow)
	}{
		{"Open measures once and returns its error; a failed Open may be retried", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			if s.failOpen != nil {
				s.failOpen(true)
				err := s.th.Open(ctx)
				require.ErrorIs(t, err, s.openErr)
				if row.needsNoOpen == "" {
					assert.False(t, s.th.IsThrottled(), "false after a failed Open")
					assert.ErrorIs(t, s.th.UpdateLag(ctx), ErrNotOpen, "a failed Open leaves it unopened")
				}
				s.failOpen(false)
			}
			s.throttle(true)
			require.NoError(t, s.th.Open(ctx))
			if row.firstReadingClear != "" {
				assert.False(t, s.th.IsThrottled(), row.firstReadingClear)
				s.throttle(true)
			}
			assert.True(t, s.th.IsThrottled(), "Open publishes what it measured before it returns")
			assert.NotEmpty(t, reasonOf(s.th))
		}},
		{"Open with a done context fails, and may be retried", func(t *testing.T, row contractRow) {
			if row.needsNoOpen != "" {
				t.Skip(row.needsNoOpen)
			}
			s := row.build(t, 0)
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			assert.ErrorIs(t, s.th.Open(cctx), context.Canceled)
			assert.False(t, s.th.IsThrottled())
			require.NoError(t, s.th.Open(ctx))
		}},
		{"second Open is ErrAlreadyOpen, Open after Close ErrClosed, Close idempotent", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			require.NoError(t, s.th.Open(ctx))
			assert.ErrorIs(t, s.th.Open(ctx), ErrAlreadyOpen)
			require.NoError(t, s.th.Close())
			require.NoError(t, s.th.Close(), "Close is idempotent")
			assert.ErrorIs(t, s.th.Open(ctx), ErrClosed)

			never := row.build(t, 0)
			require.NoError(t, never.th.Close(), "Close before Open")
			assert.ErrorIs(t, never.th.Open(ctx), ErrClosed)
		}},
		{"IsThrottled is false and BlockWait returns before Open", func(t *testing.T, row contractRow) {
			if row.needsNoOpen != "" {
				t.Skip(row.needsNoOpen)
			}
			s := row.build(t, 0)
			s.throttle(true)
			assert.False(t, s.th.IsThrottled())
			assert.Empty(t, reasonOf(s.th))
			assert.True(t, returned(contractWaiters(ctx, s.th, 10)))
			if w, ok := s.th.(Waiter); ok {
				assert.NoError(t, w.Wait(ctx))
			}
		}},
		{"BlockWait returns at once when clear", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			require.NoError(t, s.th.Open(ctx))
			assert.False(t, s.th.IsThrottled())
			assert.Empty(t, reasonOf(s.th))
			assert.True(t, returned(contractWaiters(ctx, s.th, 10)))
			if w, ok := s.th.(Waiter); ok {
				assert.NoError(t, w.Wait(ctx))
			}
		}},
		{"clearing wakes every waiter, by the change itself", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			require.NoError(t, s.th.Open(ctx))
			s.throttle(true)
			require.True(t, s.th.IsThrottled())
			done := contractWaiters(ctx, s.th, 100)
			require.False(t, returned(done), "throttled waiters block")
			s.throttle(false)
			// synctest.Wait does not move the clock: a waiter that slept
			// between looks would still be asleep.
			assert.True(t, returned(done), "every waiter woken")
			assert.False(t, s.th.IsThrottled())
			assert.Empty(t, reasonOf(s.th))
		}},
		{"Close releases every waiter at once, for good", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			require.NoError(t, s.th.Open(ctx))
			s.throttle(true)
			done := contractWaiters(ctx, s.th, 100)
			require.False(t, returned(done))
			require.NoError(t, s.th.Close())
			assert.True(t, returned(done))
			assert.False(t, s.th.IsThrottled())
			assert.Empty(t, reasonOf(s.th))
			s.throttle(true) // a late update changes nothing
			assert.False(t, s.th.IsThrottled())
			if w, ok := s.th.(Waiter); ok {
				assert.ErrorIs(t, w.Wait(ctx), ErrClosed)
			}
			if row.needsNoOpen == "" && row.updateLagNil == "" {
				assert.ErrorIs(t, s.th.UpdateLag(ctx), ErrClosed)
			}
		}},
		{"the end of Open's context releases, the moment cancel returns", func(t *testing.T, row contractRow) {
			if row.needsNoOpen != "" {
				t.Skip(row.needsNoOpen)
			}
			s := row.build(t, 0)
			octx, cancel := context.WithCancel(ctx)
			defer cancel()
			require.NoError(t, s.th.Open(octx))
			s.throttle(true)
			require.True(t, s.th.IsThrottled())
			done := contractWaiters(ctx, s.th, 100)
			require.False(t, returned(done))
			cancel()
			assert.False(t, s.th.IsThrottled(), "before any goroutine runs")
			assert.Empty(t, reasonOf(s.th), "before any goroutine runs")
			assert.True(t, returned(done))
			assert.Empty(t, reasonOf(s.th), "after Wait")
			s.throttle(true)
			assert.False(t, s.th.IsThrottled(), "released for good")
			if w, ok := s.th.(Waiter); ok {
				assert.ErrorIs(t, w.Wait(ctx), ErrClosed)
			}
			if row.updateLagNil == "" {
				assert.ErrorIs(t, s.th.UpdateLag(ctx), ErrClosed)
			}
			require.NoError(t, s.th.Close())
		}},
		{"the caller's context ends the wait, and changes nothing", func(t *testing.T, row contractRow) {
			s := row.build(t, 0)
			require.NoError(t, s.th.Open(ctx))
			s.throttle(true)
			cctx, cancel := context.WithCancel(ctx)
			done := contractWaiters(cctx, s.th, 10)
			require.False(t, returned(done))
			cancel()
			assert.True(t, returned(done))
			assert.True(t, s.th.IsThrottled(), "a caller giving up changes nothing")
			if w, ok := s.th.(Waiter); ok {
				assert.ErrorIs(t, w.Wait(cctx), context.Canceled)
				tctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				start := time.Now()
				assert.ErrorIs(t, w.Wait(tctx), context.DeadlineExceeded)
				assert.Equal(t, time.Second, time.Since(start))
			}
		}},
		{"WithMaxWait caps the wait", func(t *testing.T, row contractRow) {
			s := row.build(t, time.Second)
			require.NoError(t, s.th.Open(ctx))
			s.throttle(true)
			done := contractWaiters(ctx, s.th, 10)
			require.False(t, returned(done))
			time.Sleep(time.Second - time.Millisecond)
			require.False(t, returned(done), "not before the cap")
			time.Sleep(10 * time.Millisecond) // the cap may end a granule late
			assert.True(t, returned(done))
			assert.True(t, s.th.IsThrottled())
			if w, ok := s.th.(Waiter); ok {
				start := time.Now()
				err := w.Wait(ctx)
				assert.ErrorIs(t, err, ErrMaxWait)
				assert.ErrorContains(t, err, reasonOf(s.th))
				assert.InDelta(t, time.Second, time.Since(start), float64(10*time.Millisecond))
			}
		}},
		{"UpdateLag is ErrNotOpen before Open", func(t *testing.T, row contractRow) {
			for _, why := range []string{row.needsNoOpen, row.updateLagNil} {
				if why != "" {
					t.Skip(why)
				}
			}
			s := row.build(t, 0)
			assert.ErrorIs(t, s.th.UpdateLag(ctx), ErrNotOpen)
			require.NoError(t, s.th.Open(ctx))
			assert.NoError(t, s.th.UpdateLag(ctx))
		}},
		{"Stats account for every state since Open, and freeze once released", func(t *testing.T, row contractRow) {
			s := row.build(t, time.Second)
			sr, ok := s.th.(StatsReporter)
			require.True(t, ok, "every throttler has Stats")
			require.NoError(t, s.th.Open(ctx))
			st := sr.Stats()
			assert.False(t, st.Throttled)
			assert.Zero(t, st.Episodes)
			assert.Zero(t, st.ThrottledTotal)

			a := time.Now() // the lever may move the clock (Schedule, Load/rate)
			s.throttle(true)
			b := time.Now()
			require.True(t, s.th.IsThrottled())
			done := contractWaiters(ctx, s.th, 1)
			time.Sleep(time.Second + 10*time.Millisecond) // past the cap
			require.True(t, returned(done))
			st = sr.Stats()
			assert.True(t, st.Throttled)
			assert.NotEmpty(t, st.Kind)
			assert.Equal(t, reasonOf(s.th), st.Reason)
			assert.Equal(t, int64(1), st.Episodes)
			assert.GreaterOrEqual(t, st.ThrottledTotal, time.Since(b))
			assert.LessOrEqual(t, st.ThrottledTotal, time.Since(a))
			var byKind time.Duration
			for _, d := range st.ThrottledByKind {
				byKind += d
			}
			assert.Equal(t, st.ThrottledTotal, byKind, "the kinds split the total")
			assert.Equal(t, int64(1), st.Waits)
			assert.Equal(t, int64(1), st.MaxWaits)
			assert.InDelta(t, time.Second, st.WaitedTotal, float64(10*time.Millisecond))
			if s.failOpen != nil && row.needsNoOpen == "" {
				assert.Positive(t, st.Measurements, "Open's and the levers' measurements")
				assert.False(t, st.LastMeasurement.IsZero())
			}

			c0 := time.Now()
			s.throttle(false)
			c := time.Now()
			st = sr.Stats()
			assert.False(t, st.Throttled)
			assert.False(t, st.Since.Before(c0) || st.Since.After(c), "the clear period began with the lever: %v", st.Since)
			total := st.ThrottledTotal
			time.Sleep(time.Second)
			assert.Equal(t, total, sr.Stats().ThrottledTotal, "a clear period adds nothing")
			s.throttle(true)
			assert.Equal(t, int64(2), sr.Stats().Episodes)

			require.NoError(t, s.th.Close())
			frozen := sr.Stats()
			assert.True(t, frozen.Released)
			assert.False(t, frozen.Throttled)
			time.Sleep(time.Minute)
			assert.Equal(t, frozen, sr.Stats(), "frozen, not reset")
		}},
		{"WithOnChange reports each change once, in order, and waits for no one", func(t *testing.T, row contractRow) {
			var mu sync.Mutex
			var got []Change
			hold := make(chan struct{})
			s := row.build(t, 0, WithOnChange(func(c Change) {
				<-hold // a callback that blocks delays nothing but the next callback
				mu.Lock()
				got = append(got, c)
				mu.Unlock()
			}))
			require.NoError(t, s.th.Open(ctx))
			s.throttle(true)
			s.throttle(true) // the same state again: no change
			require.True(t, s.th.IsThrottled(), "the blocked callback does not hold the state")
			done := contractWaiters(ctx, s.th, 10)
			require.False(t, returned(done))
			s.throttle(false)
			assert.True(t, returned(done), "nor the waiters")
			assert.False(t, s.th.IsThrottled())
			s.throttle(true)
			require.NoError(t, s.th.Close(), "nor Close")
			close(hold)
			synctest.Wait()

			mu.Lock()
			defer mu.Unlock()
			require.Len(t, got, 4, "throttled, clear, throttled, released: %+v", got)
			for i, want := range []bool{true, false, true, false} {
				assert.Equal(t, want, got[i].Throttled, "change %d", i)
				assert.Equal(t, i == 3, got[i].Released, "change %d", i)
				assert.Equal(t, want, got[i].Kind != "", "change %d: %q", i, got[i].Kind)
				assert.NotEmpty(t, got[i].Throttler)
				if i > 0 {
					assert.Equal(t, got[i-1].Kind, got[i].PreviousKind, "change %d", i)
					assert.Equal(t, got[i].At.Sub(got[i-1].At), got[i].Previous, "change %d", i)
					assert.False(t, got[i].At.Before(got[i-1].At), "in order")
				}
			}
			if str, ok := s.th.(fmt.Stringer); ok {
				assert.Equal(t, str.String(), got[0].Throttler)
			}
		}},
	}
	for _, row := range contractRows() {
		t.Run(row.name, func(t *testing.T) {
			if row.neverThrottles != "" {
				t.Run("never throttles", func(t *testing.T) {
					s := row.build(t, 0)
					assert.Equal(t, Stats{}, s.th.(StatsReporter).Stats())
					for range 2 {
						require.NoError(t, s.th.Open(ctx))
						assert.False(t, s.th.IsThrottled())
						s.th.BlockWait(ctx)
						assert.NoError(t, s.th.UpdateLag(ctx))
						require.NoError(t, s.th.Close())
					}
				})
				return
			}
			for _, c := range clauses {
				t.Run(c.name, func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) { c.run(t, row) })
				})
			}
			for _, how := range []string{"Close", "cancel"} {
				t.Run("no spin: for IsThrottled() {} ends after "+how, func(t *testing.T) {
					if how == "cancel" && row.needsNoOpen != "" {
						t.Skip(row.needsNoOpen)
					}
					noSpin(t, row, how == "cancel")
				})
			}
		})
	}
}

// noSpin is gh-ost issue #1670 made impossible: a loop that asks only
// IsThrottled, with no context of its own, ends once the throttler stops.
// It runs on the real clock: a spinning goroutine never lets synctest's
// clock move.
func noSpin(t *testing.T, row contractRow, cancelOpen bool) {
	s := row.build(t, 0)
	if row.clockDriven != "" {
		s = contractSubject{th: s.th}
		// A window that holds for the test: midnight to midnight less a
		// second throttles all day but the last second.
		sch, err := NewSchedule(ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "00:00:00", End: "23:59:59"}}}, nil)
		require.NoError(t, err)
		closeAtEnd(t, sch)
		if _, _, next := sch.StateAt(time.Now()); time.Until(next) < time.Minute {
			t.Skip("too close to the end of the day's window")
		}
		s.th = sch
	}
	octx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, s.th.Open(octx))
	if s.throttle != nil {
		s.throttle(true)
	}
	require.True(t, s.th.IsThrottled())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for s.th.IsThrottled() { // a busy loop, not even a sleep
		}
	}()
	if cancelOpen {
		cancel()
	} else {
		require.NoError(t, s.th.Close())
	}
	select {
	case <-loopDone:
	case <-time.After(10 * time.Second): // a guard, not a wait: the loop ends at once
		t.Fatal("IsThrottled still true after the throttler stopped")
	}
	require.NoError(t, s.th.Close())
}
