package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func lagSamples(t0 time.Time, every time.Duration, lags ...time.Duration) []sample {
	out := make([]sample, len(lags))
	for i, l := range lags {
		out[i] = sample{At: t0.Add(time.Duration(i) * every), Lag: l}
	}
	return out
}

func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	// 20 samples 100 ms apart: 0, 100, ..., 1900 ms.
	lags := make([]time.Duration, 20)
	for i := range lags {
		lags[i] = time.Duration(i) * 100 * ms
	}
	s := summarize(lagSamples(t0, 100*ms, lags...), time.Second, t0.Add(2*time.Second))
	assert.Equal(t, 20, s.N)
	assert.Equal(t, 950*ms, s.Mean)
	assert.Equal(t, 1800*ms, s.P95, "nearest rank: the 19th of 20")
	assert.Equal(t, 1900*ms, s.Max)
	// Above 1 s: the samples at 1.1 s to 1.9 s, each counting 100 ms (the
	// last until end).
	assert.Equal(t, 900*ms, s.Over)
}

func TestSummarizeWeighsGapsAndEnd(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	samples := []sample{
		{At: t0, Lag: 2 * time.Second},         // over until the next sample, 500 ms later
		{At: t0.Add(500 * ms), Lag: 200 * ms},  // under
		{At: t0.Add(600 * ms), Lag: 1500 * ms}, // over until end
	}
	s := summarize(samples, time.Second, t0.Add(900*ms))
	assert.Equal(t, 800*ms, s.Over)
	assert.Equal(t, 2*time.Second, s.Max)
	assert.Equal(t, 2*time.Second, s.P95)

	// An end before the last sample adds nothing for it.
	s = summarize(samples, time.Second, t0)
	assert.Equal(t, 500*ms, s.Over)
}

func TestSummarizeEdges(t *testing.T) {
	assert.Equal(t, lagStats{}, summarize(nil, time.Second, time.Now()))

	t0 := time.Unix(1000, 0)
	one := summarize(lagSamples(t0, 0, 300*time.Millisecond), time.Second, t0.Add(time.Second))
	assert.Equal(t, lagStats{N: 1, Mean: 300 * time.Millisecond, P95: 300 * time.Millisecond, Max: 300 * time.Millisecond}, one)

	// Exactly at the tolerance is not over it.
	at := summarize(lagSamples(t0, 100*time.Millisecond, time.Second, time.Second), time.Second, t0.Add(time.Second))
	assert.Zero(t, at.Over)
}

func TestSince(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := lagSamples(t0, time.Second, 40*time.Second, time.Second, 2*time.Second)
	assert.Equal(t, s, since(s, t0))
	assert.Equal(t, s[1:], since(s, t0.Add(time.Second)))
	assert.Equal(t, s[1:], since(s, t0.Add(500*time.Millisecond)))
	assert.Empty(t, since(s, t0.Add(time.Hour)))
	assert.Empty(t, since(nil, t0))
}

func TestCapacity(t *testing.T) {
	assert.InDelta(t, 10_000, capacity(300_000, 30*time.Second), 1e-9)
	assert.InDelta(t, 9_375, capacity(300_000, 32*time.Second), 1e-9)
	assert.Zero(t, capacity(300_000, 0))
}

func TestCapacitiesR(t *testing.T) {
	assert.InDelta(t, 10_000, capacities{Start: 10_000}.r(), 1e-9)
	assert.InDelta(t, 9_500, capacities{Start: 10_000, End: 9_000}.r(), 1e-9)
}

func TestGTIDCovers(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"0-1-100", "0-1-100", true},
		{"0-1-101", "0-1-100", true},
		{"0-1-99", "0-1-100", false},
		{"0-1-100,1-5-7", "0-1-100", true},
		{"1-5-7, 0-1-100", "0-1-100,1-5-7", true},
		{"0-1-100", "0-1-100,1-5-7", false},
		{"", "0-1-1", false},
		{"", "", true},
		{"0-1-x", "0-1-1", false},
		{"0-1-5", "garbage", false},
		// Sequence numbers compare as numbers, not text.
		{"0-1-1000", "0-1-999", true},
	} {
		assert.Equal(t, tc.ok, gtidCovers(tc.have, tc.want), "have %q want %q", tc.have, tc.want)
	}
}
