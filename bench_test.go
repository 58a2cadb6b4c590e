package throttler

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
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
// returns, reported as ms/release. The waiters block as a copier's would:
// with the default 60s cap and a cancellable context of their own.

const releaseWaiters = 10000

func benchRelease(b *testing.B, release func(r *Replication, src *fakeSource, cancelOpen context.CancelFunc)) {
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		r, src := newFake(b, time.Second, lagOf(time.Minute), WithInterval(time.Hour))
		waitCtx, cancelWaits := context.WithCancel(context.Background())
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
				r.BlockWait(waitCtx)
				done.Done()
			}()
		}
		started.Wait()
		time.Sleep(10 * time.Millisecond) // let them reach the select
		runtime.GC()                      // setting up 10,000 goroutines leaves garbage; collect it outside the window
		b.StartTimer()
		t0 := time.Now()
		release(r, src, cancelOpen)
		done.Wait()
		total += time.Since(t0)
		b.StopTimer()
		_ = r.Close()
		cancelOpen()
		cancelWaits()
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

// BenchmarkRelease10000Baseline is the runtime's own floor on this machine:
// 10,000 goroutines blocked on a bare channel receive, released by close.
func BenchmarkRelease10000Baseline(b *testing.B) {
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		ch := make(chan struct{})
		var started, done sync.WaitGroup
		started.Add(releaseWaiters)
		done.Add(releaseWaiters)
		for range releaseWaiters {
			go func() {
				started.Done()
				<-ch
				done.Done()
			}()
		}
		started.Wait()
		time.Sleep(10 * time.Millisecond)
		runtime.GC()
		b.StartTimer()
		t0 := time.Now()
		close(ch)
		done.Wait()
		total += time.Since(t0)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/release")
}

// BenchmarkResumeAfterClear is how long a waiter blocked on a lagging
// replica takes to return after the lag clears, with the default settings
// (a 1s poll interval): the time until the next measurement sees the clear.
// While throttled the monitor measures ten times as often, so the median is
// about half of 100ms, and the worst about 100ms; the clear lands at a random
// moment of the poll schedule. Reported as ms/resume (median) and
// max-ms/resume. Run it with -benchtime=50x or more for a stable median.
func BenchmarkResumeAfterClear(b *testing.B) {
	r, src := newFake(b, time.Second, lagOf(2*time.Second), WithInterval(time.Second))
	if err := r.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var resumes []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		b.StopTimer()
		src.set(lagOf(2*time.Second), nil)
		// UpdateLag shares a measurement already in flight, which may have
		// read the old lag: measure until one reads the new.
		for !r.IsThrottled() {
			if err := r.UpdateLag(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		done := make(chan time.Time)
		go func() {
			_ = r.Wait(context.Background())
			done <- time.Now()
		}()
		time.Sleep(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
		b.StartTimer()
		t0 := time.Now()
		src.set(lagOf(0), nil)
		resumes = append(resumes, (<-done).Sub(t0))
	}
	slices.Sort(resumes)
	b.ReportMetric(float64(resumes[len(resumes)/2].Microseconds())/1000, "ms/resume")
	b.ReportMetric(float64(resumes[len(resumes)-1].Microseconds())/1000, "max-ms/resume")
}
