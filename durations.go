package throttler

import (
	"fmt"
	"math"
	"time"
)

// This file holds the two rules every time.Duration of the package follows.
//
// A number from a server (a lag, a backlog's apply time) that is too large
// for a Duration saturates at maxDuration, which throttles whatever the
// tolerance: a wrapped value would be negative and read as "no lag", failing
// open on exactly the replica that is furthest behind.
//
// A duration the user configures is checked against bounds that keep it
// meaningful and keep everything derived from it (the default stale window
// of three intervals, twice the stale window, now plus a wait) far from
// overflow: checkPeriod for how often something is done, checkSpan for how
// long something may last.

// maxDuration is the longest time.Duration: a reading too long to represent
// saturates here, never wraps toward "no lag".
const maxDuration = time.Duration(math.MaxInt64)

// Bounds of configured durations.
const (
	// minPeriod is the shortest poll period: each poll is a round trip to a
	// server (a query, a listing, an HTTP request, a write), so polling
	// faster buys no fresher signal, only load (1ns ran 300,000 polls a
	// second at 100% of a core). It is also pt-heartbeat's minimum.
	minPeriod = 10 * time.Millisecond
	// maxPeriod is the longest poll period: a throttler that looks less
	// than once a day does not watch anything a bulk job needs protecting
	// from.
	maxPeriod = 24 * time.Hour
	// maxSpan bounds the other configured durations (stale window, query
	// timeout, maximum wait, freshness, forgetting): a week is longer than
	// any of them is useful for, and so far below time.Duration's 292 years
	// that a few of them added to each other or to the clock cannot
	// overflow (a wait's deadline must stay a representable UnixNano).
	maxSpan = 7 * 24 * time.Hour
)

// checkPeriod returns an error when d, a period that what names (with the
// value, for example "WithInterval(1ns): the poll interval"), is outside
// [minPeriod, maxPeriod]. zero, when not "", is what 0 means: 0 is then
// accepted (the caller substitutes the default).
func checkPeriod(what string, d time.Duration, zero string) error {
	switch {
	case d == 0 && zero != "":
		return nil
	case d <= 0:
		return fmt.Errorf("%s must be positive%s", what, zeroMeans(zero))
	case d < minPeriod:
		return fmt.Errorf("%s must be at least %v: each poll is a round trip to a server, and polling faster adds load, not freshness", what, minPeriod)
	case d > maxPeriod:
		return fmt.Errorf("%s must be at most %v", what, maxPeriod)
	}
	return nil
}

// checkSpan returns an error when d, a window or a timeout that what names,
// is not positive (or, when zero is not "", negative: zero says what 0
// means), or longer than maxSpan.
func checkSpan(what string, d time.Duration, zero string) error {
	switch {
	case d == 0 && zero != "":
		return nil
	case d <= 0 && zero == "":
		return fmt.Errorf("%s must be positive", what)
	case d < 0:
		return fmt.Errorf("%s must not be negative%s", what, zeroMeans(zero))
	case d > maxSpan:
		return fmt.Errorf("%s must be at most %v", what, maxSpan)
	}
	return nil
}

func zeroMeans(zero string) string {
	if zero == "" {
		return ""
	}
	return " (0 means " + zero + ")"
}

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
