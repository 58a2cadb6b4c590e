package throttler

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The hot path: what a copier pays per chunk when the replicas are healthy.

func openClear(b *testing.B) *Replication {
	b.Helper()
	r, _ := newFake(b, time.Second, Measurement{}, WithInterval(time.Hour))
	if err := r.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	return r
}

func BenchmarkIsThrottled(b *testing.B) {
	r := openClear(b)
	b.ReportAllocs()
	for b.Loop() {
		if r.IsThrottled() {
			b.Fatal("throttled")
		}
	}
}

func BenchmarkIsThrottledParallel(b *testing.B) {
	r := openClear(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.IsThrottled() {
				b.Fatal("throttled")
			}
		}
	})
}

func BenchmarkBlockWaitUnthrottled(b *testing.B) {
	r := openClear(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r.BlockWait(ctx)
	}
}

func BenchmarkBlockWaitUnthrottledParallel(b *testing.B) {
	r := openClear(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.BlockWait(ctx)
		}
	})
}

// The release: how long after the event the last of 10,000 blocked waiters
// returns. Reported as ms/release (the time from the event to the last
// return); ns/op also counts setting up the waiters.

const releaseWaiters = 10000

func benchRelease(b *testing.B, release func(r *Replication, src *fakeSource, cancelOpen context.CancelFunc)) {
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		r, src := newFake(b, time.Second, lagOf(time.Minute), WithInterval(time.Hour), WithMaxWait(0))
		openCtx, cancelOpen := context.WithCancel(context.Background())
		if err := r.Open(openCtx); err != nil {
			b.Fatal(err)
		}
		var started, done sync.WaitGroup
		started.Add(releaseWaiters)
		done.Add(releaseWaiters)
		for range releaseWaiters {
			go func() {
				started.Done()
				r.BlockWait(context.Background())
				done.Done()
			}()
		}
		started.Wait()
		time.Sleep(10 * time.Millisecond) // let them reach the select
		b.StartTimer()
		t0 := time.Now()
		release(r, src, cancelOpen)
		done.Wait()
		total += time.Since(t0)
		b.StopTimer()
		_ = r.Close()
		cancelOpen()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/release")
}

func BenchmarkRelease10000OnClose(b *testing.B) {
	benchRelease(b, func(r *Replication, _ *fakeSource, _ context.CancelFunc) { _ = r.Close() })
}

func BenchmarkRelease10000OnCancel(b *testing.B) {
	benchRelease(b, func(_ *Replication, _ *fakeSource, cancel context.CancelFunc) { cancel() })
}

func BenchmarkRelease10000OnClear(b *testing.B) {
	benchRelease(b, func(r *Replication, src *fakeSource, _ context.CancelFunc) {
		src.set(lagOf(0), nil)
		// The monitor's poll path: measure, then apply the clear verdict.
		if err := r.UpdateLag(context.Background()); err != nil {
			b.Fatal(err)
		}
	})
}
