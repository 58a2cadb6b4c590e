package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// capacities are the replica's measured apply rates, rows/s.
type capacities struct {
	Start, End float64 // End is 0 when not measured
	Given      bool    // -r: not measured
}

// r is the capacity the table compares throughput with: the mean of the two
// measurements, because the machine's load moves it by a few percent over a
// run of several minutes.
func (c capacities) r() float64 {
	if c.End > 0 {
		return (c.Start + c.End) / 2
	}
	return c.Start
}

func (c capacities) String() string {
	switch {
	case c.Given:
		return fmt.Sprintf("R = %s rows/s (given with -r, not measured)", thousands(int64(c.Start)))
	case c.End > 0:
		return fmt.Sprintf("R = %s rows/s measured at the start, %s at the end; the %% of R below is of their mean, %s",
			thousands(int64(c.Start)), thousands(int64(c.End)), thousands(int64(c.r())))
	}
	return fmt.Sprintf("R = %s rows/s measured at the start", thousands(int64(c.Start)))
}

var tableHeader = []string{
	"mode", "copier", "tolerance", "rows/s", "% of R", "applied rows/s",
	"true lag mean", "p95", "max", "over tolerance", "stops", "max ≤ 0.8 T",
}

// formatTable is the results as a Markdown table, preceded by the capacity.
func formatTable(caps capacities, results []result) string {
	var b strings.Builder
	b.WriteString(caps.String() + "\n\n")
	b.WriteString("The true lag is measured from the copy's start until the replica has applied all of it, " +
		"and time over tolerance is also a % of that span; applied rows/s is over the same span " +
		"(a copier that outruns the replica finishes early).\n\n")
	row := func(cells ...string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	row(tableHeader...)
	sep := make([]string, len(tableHeader))
	for i := range sep {
		sep[i] = "---"
		if i >= 3 {
			sep[i] = "---:"
		}
	}
	row(sep...)
	for _, r := range results {
		copierCol := r.Speed.String()
		if r.Rate > 0 && r.Speed.Factor > 0 {
			copierCol += fmt.Sprintf(" (%s/s)", thousands(int64(r.Rate)))
		}
		pct := "-"
		if caps.r() > 0 {
			pct = fmt.Sprintf("%.0f%%", 100*r.rowsPerSecond()/caps.r())
		}
		within := "yes"
		if !r.withinTarget() {
			within = "no"
		}
		row(
			r.Mode.Label,
			copierCol,
			r.Tolerance.String(),
			thousands(int64(r.rowsPerSecond())),
			pct,
			thousands(int64(r.appliedPerSecond())),
			seconds(r.Lag.Mean),
			seconds(r.Lag.P95),
			seconds(r.Lag.Max),
			fmt.Sprintf("%s (%.0f%%)", seconds(r.Lag.Over), 100*r.overFraction()),
			strconv.Itoa(r.Copy.Stops),
			within,
		)
	}
	return b.String()
}

// seconds formats d as seconds with two decimals: "1.23 s".
func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// thousands formats n with a comma every three digits: 300,000.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
