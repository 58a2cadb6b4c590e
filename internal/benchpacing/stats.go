package main

import (
	"slices"
	"time"
)

// sample is one reading of the true lag.
type sample struct {
	At  time.Time
	Lag time.Duration
}

// lagStats sums up the true lag over a run.
type lagStats struct {
	N    int
	Mean time.Duration
	P95  time.Duration // nearest rank
	Max  time.Duration
	// Over is how long the lag was above the tolerance: each sample counts
	// until the next one (the last until end), so an irregular probe (a slow
	// read under load) weighs what it missed.
	Over time.Duration
}

// summarize computes the stats of samples, in time order, taken until end.
func summarize(samples []sample, tol time.Duration, end time.Time) lagStats {
	s := lagStats{N: len(samples)}
	if s.N == 0 {
		return s
	}
	lags := make([]time.Duration, s.N)
	var sum time.Duration
	for i, x := range samples {
		lags[i] = x.Lag
		sum += x.Lag
		s.Max = max(s.Max, x.Lag)
		if x.Lag > tol {
			next := end
			if i+1 < s.N {
				next = samples[i+1].At
			}
			s.Over += max(next.Sub(x.At), 0)
		}
	}
	s.Mean = sum / time.Duration(s.N)
	slices.Sort(lags)
	rank := (95*s.N + 99) / 100 // ceil(0.95 N), 1-based
	s.P95 = lags[rank-1]
	return s
}

// since is the samples, in time order, taken at or after t.
func since(samples []sample, t time.Time) []sample {
	i, _ := slices.BinarySearchFunc(samples, t, func(s sample, t time.Time) int { return s.At.Compare(t) })
	return samples[i:]
}

// capacity is the replica's apply rate in rows/s, from rows applied in d.
func capacity(rows int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(rows) / d.Seconds()
}
