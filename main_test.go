package throttler

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a LagSource whose readings the test sets. With hang set,
// Measure blocks until its context ends, like a query on a frozen replica.
type fakeSource struct {
	mu       sync.Mutex
	m        Measurement
	err      error
	hang     bool
	calls    atomic.Int64
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	measured chan struct{} // if non-nil, receives after every Measure (non-blocking)
}

func (f *fakeSource) String() string { return "fake" }

func (f *fakeSource) set(m Measurement, err error) {
	f.mu.Lock()
	f.m, f.err = m, err
	f.mu.Unlock()
}

func (f *fakeSource) setHang(h bool) {
	f.mu.Lock()
	f.hang = h
	f.mu.Unlock()
}

func (f *fakeSource) Measure(ctx context.Context, _ *sql.DB) (Measurement, error) {
	f.calls.Add(1)
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		old := f.maxSeen.Load()
		if n <= old || f.maxSeen.CompareAndSwap(old, n) {
			break
		}
	}
	f.mu.Lock()
	m, err, hang := f.m, f.err, f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return Measurement{}, ctx.Err()
	}
	if f.measured != nil {
		select {
		case f.measured <- struct{}{}:
		default:
		}
	}
	return m, err
}

// fakeDB is a *sql.DB that is never used: the fake source ignores it. It is
// not opened against any driver, so it starts no goroutine.
var fakeDB = &sql.DB{}

var errBoom = errors.New("boom")

func lagOf(d time.Duration) Measurement { return Measurement{Lag: d} }

// newFake returns an unopened throttler on a fake source reading m, polling
// every millisecond unless opts say otherwise.
func newFake(t testing.TB, tolerance time.Duration, m Measurement, opts ...Option) (*Replication, *fakeSource) {
	t.Helper()
	src := &fakeSource{m: m}
	all := append([]Option{WithInterval(minPeriod), WithLagSource(src)}, opts...)
	r, err := NewReplicationThrottler(fakeDB, tolerance, nil, all...)
	if err != nil {
		t.Fatalf("NewReplicationThrottler: %v", err)
	}
	return r, src
}

// syncBuffer is a log sink that a logger's goroutines and a test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pileInWhileHung runs, in a synctest bubble, five UpdateLag callers (each
// giving up after 30ms) alongside the monitor of th, whose signal hangs and
// whose stale window is 20ms: it returns once th has gone stale and every
// caller has returned.
func pileInWhileHung(t *testing.T, th Throttler) {
	t.Helper()
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			_ = th.UpdateLag(ctx)
		})
	}
	time.Sleep(20 * time.Millisecond)
	synctest.Wait()
	require.True(t, th.IsThrottled(), "stale 20ms after the last success")
	wg.Wait()
}
