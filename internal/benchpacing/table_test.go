package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFormatTable(t *testing.T) {
	stopgo, _ := modeByName("stopgo")
	paced, _ := modeByName("paced-heartbeat")
	results := []result{
		{
			cell:    cell{Mode: stopgo, Speed: speed{Factor: 3}, Rate: 30_000, Tolerance: time.Second},
			Copy:    copyResult{Rows: 300_000, Duration: 30 * time.Second, Stops: 12},
			Applied: 40 * time.Second,
			Lag:     lagStats{N: 300, Mean: 1500 * time.Millisecond, P95: 3 * time.Second, Max: 3900 * time.Millisecond, Over: 21 * time.Second},
		},
		{
			cell:    cell{Mode: paced, Speed: speed{}, Tolerance: 3 * time.Second},
			Copy:    copyResult{Rows: 300_000, Duration: 32 * time.Second},
			Applied: 32 * time.Second,
			Lag:     lagStats{N: 320, Mean: time.Second, P95: 1500 * time.Millisecond, Max: 2400 * time.Millisecond},
		},
	}
	got := formatTable(capacities{Start: 10_200, End: 9_800}, results)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	require.Len(t, lines, 8)
	assert.Equal(t, "R = 10,200 rows/s measured at the start, 9,800 at the end; the % of R below is of their mean, 10,000", lines[0])
	assert.Empty(t, lines[1])
	assert.Contains(t, lines[2], "until the replica has applied all of it")
	assert.Contains(t, lines[2], "applied rows/s is over the same span")
	assert.Empty(t, lines[3])
	assert.Equal(t, "| mode | copier | tolerance | rows/s | % of R | applied rows/s | true lag mean | p95 | max | over tolerance | stops | max ≤ 0.8 T |", lines[4])
	assert.Equal(t, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", lines[5])
	assert.Equal(t, "| stop/go, lag only | 3 R (30,000/s) | 1s | 10,000 | 100% | 7,500 | 1.50 s | 3.00 s | 3.90 s | 21.00 s (52%) | 12 | no |", lines[6])
	// 2.4 s is exactly 0.8 × 3 s: within.
	assert.Equal(t, "| paced, heartbeat | max | 3s | 9,375 | 94% | 9,375 | 1.00 s | 1.50 s | 2.40 s | 0.00 s (0%) | 0 | yes |", lines[7])
}

func TestCapacitiesString(t *testing.T) {
	assert.Equal(t, "R = 9,000 rows/s (given with -r, not measured)", capacities{Start: 9_000, Given: true}.String())
	assert.Equal(t, "R = 9,000 rows/s measured at the start", capacities{Start: 9_000}.String())
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 300_000: "300,000", 1_234_567: "1,234,567", -45_000: "-45,000"} {
		assert.Equal(t, want, thousands(n))
	}
}

func TestSeconds(t *testing.T) {
	assert.Equal(t, "1.23 s", seconds(1234*time.Millisecond))
	assert.Equal(t, "0.00 s", seconds(0))
}
