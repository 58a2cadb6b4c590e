package throttler

import (
	"math"
	"time"
)

// A number from a server (a lag, a backlog's apply time) that is too large
// for a Duration saturates at maxDuration, which throttles whatever the
// tolerance: a wrapped value would be negative and read as "no lag", failing
// open on exactly the replica that is furthest behind.

// maxDuration is the longest time.Duration: a reading too long to represent
// saturates here, never wraps toward "no lag".
const maxDuration = time.Duration(math.MaxInt64)

// satAdd is a+b for non-negative durations, saturating at maxDuration.
func satAdd(a, b time.Duration) time.Duration {
	if b > maxDuration-a {
		return maxDuration
	}
	return a + b
}

// satMul is d*n for non-negative d and n, saturating at maxDuration.
func satMul(d time.Duration, n int64) time.Duration {
	if n != 0 && d > maxDuration/time.Duration(n) {
		return maxDuration
	}
	return d * time.Duration(n)
}

// secondsToDuration converts seconds to a Duration, saturating at
// maxDuration; NaN saturates too (a reading that means nothing must not
// read as no lag), and anything not positive is 0.
func secondsToDuration(s float64) time.Duration {
	return floatDuration(s, time.Second)
}

// floatDuration converts v units to a Duration, rounded to the nearest
// nanosecond, saturating at maxDuration (for NaN too); anything not
// positive is 0.
func floatDuration(v float64, unit time.Duration) time.Duration {
	ns := v * float64(unit)
	switch {
	case ns >= float64(maxDuration) || math.IsNaN(ns):
		return maxDuration
	case ns <= 0:
		return 0
	}
	return time.Duration(math.Round(ns)) // below 2^63 - 1024: no overflow
}
