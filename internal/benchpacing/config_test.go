package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/throttlekit/throttler"
)

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags([]string{"-dir", "/tmp/x"}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "/tmp/x", cfg.Dir)
	assert.Equal(t, []string{"stopgo", "stopgo-backlog", "paced-heartbeat", "paced-status"}, names(cfg.Modes))
	assert.Equal(t, []speed{{Factor: 3}, {}}, cfg.Speeds)
	assert.Equal(t, []time.Duration{time.Second, 3 * time.Second}, cfg.Tolerances)
	assert.Equal(t, 300_000, cfg.Rows)
	assert.Equal(t, 1_000, cfg.Chunk)
	assert.Equal(t, 1, cfg.Workers)
	assert.Equal(t, 1, cfg.Repeat)
	assert.Zero(t, cfg.Interval)
	assert.Zero(t, cfg.Capacity)
}

func names(ms []mode) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestParseFlagsOneCell(t *testing.T) {
	cfg, err := parseFlags([]string{"-modes", "paced-status", "-speeds", "30000", "-tolerances", "1500ms",
		"-rows", "50000", "-r", "9800", "-workers", "2", "-interval", "100ms", "-out", "t.md"}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, []string{"paced-status"}, names(cfg.Modes))
	assert.True(t, cfg.Modes[0].Paced)
	assert.Equal(t, []speed{{Rate: 30_000}}, cfg.Speeds)
	assert.Equal(t, []time.Duration{1500 * time.Millisecond}, cfg.Tolerances)
	assert.Equal(t, 50_000, cfg.Rows)
	assert.InDelta(t, 9_800, cfg.Capacity, 1e-9)
	assert.Equal(t, 2, cfg.Workers)
	assert.Equal(t, 100*time.Millisecond, cfg.Interval)
	assert.Equal(t, "t.md", cfg.Out)
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-modes", "stopgo,fast"},
		{"-modes", ""},
		{"-speeds", "0R"},
		{"-speeds", "-5"},
		{"-speeds", "fastR"},
		{"-tolerances", "1"},
		{"-tolerances", "0s"},
		{"-rows", "0"},
		{"-chunk", "0"},
		{"-workers", "0"},
		{"-repeat", "0"},
		{"-interval", "-1s"},
		{"-r", "-1"},
		{"extra"},
	} {
		_, err := parseFlags(args, &bytes.Buffer{})
		assert.Error(t, err, "%q", args)
	}
	_, err := parseFlags([]string{"-h"}, &bytes.Buffer{})
	assert.ErrorIs(t, err, flag.ErrHelp)
}

func TestSpeed(t *testing.T) {
	assert.InDelta(t, 30_000, speed{Factor: 3}.rate(10_000), 1e-9)
	assert.InDelta(t, 25_000, speed{Rate: 25_000}.rate(10_000), 1e-9)
	assert.Zero(t, speed{}.rate(10_000))
	assert.Equal(t, "3 R", speed{Factor: 3}.String())
	assert.Equal(t, "1.5 R", speed{Factor: 1.5}.String())
	assert.Equal(t, "25,000/s", speed{Rate: 25_000}.String())
	assert.Equal(t, "max", speed{}.String())
}

func TestCellsInModeSpeedToleranceOrder(t *testing.T) {
	cfg, err := parseFlags([]string{"-modes", "stopgo,paced-status", "-speeds", "3R,max", "-tolerances", "1s,3s"}, &bytes.Buffer{})
	require.NoError(t, err)
	b := &bench{cfg: cfg}
	cells := b.cells(10_000)
	require.Len(t, cells, 8)
	assert.Equal(t, "stop/go, lag only, copier 3 R, tolerance 1s", cells[0].String())
	assert.InDelta(t, 30_000, cells[0].Rate, 1e-9)
	assert.Equal(t, "stop/go, lag only, copier max, tolerance 3s", cells[3].String())
	assert.Zero(t, cells[3].Rate)
	assert.Equal(t, "paced, replica status, copier max, tolerance 3s", cells[7].String())

	b.cfg.Repeat = 2
	cells = b.cells(10_000)
	require.Len(t, cells, 16)
	assert.Equal(t, cells[0], cells[1], "repeats run one after the other")
	assert.NotEqual(t, cells[1], cells[2])
}

// fixedSource measures m (and err) every time.
type fixedSource struct {
	m   throttler.Measurement
	err error
}

func (s fixedSource) Measure(context.Context, *sql.DB) (throttler.Measurement, error) {
	return s.m, s.err
}
func (s fixedSource) String() string { return "fixed" }

func TestLagOnlyHidesTheBacklog(t *testing.T) {
	full := throttler.Measurement{
		Lag: 700 * time.Millisecond, Channel: "c", NotFlowing: "SQL thread stopped",
		Backlog:   throttler.Backlog{Known: true, Transactions: 40, Bytes: 1 << 20, TransactionsPerSecond: 10, ApplyTime: 4 * time.Second},
		Predicted: 4700 * time.Millisecond,
	}
	errBoom := errors.New("boom")
	src := lagOnly{fixedSource{m: full, err: errBoom}}
	got, err := src.Measure(context.Background(), nil)
	assert.ErrorIs(t, err, errBoom)
	assert.Equal(t, throttler.Measurement{Lag: 700 * time.Millisecond, Channel: "c", NotFlowing: "SQL thread stopped"}, got)
	assert.Equal(t, "fixed, lag only", src.String())
}

func TestModes(t *testing.T) {
	assert.Equal(t, []string{"stopgo", "stopgo-backlog", "paced-heartbeat", "paced-status"}, modeNames())
	m, ok := modeByName("stopgo")
	assert.True(t, ok)
	assert.True(t, m.LagOnly)
	assert.False(t, m.Paced)
	m, ok = modeByName("paced-heartbeat")
	assert.True(t, ok)
	assert.True(t, m.Heartbeat && m.Paced)
	_, ok = modeByName("nope")
	assert.False(t, ok)
}
