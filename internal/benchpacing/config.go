package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/throttlekit/throttler/internal/testenv"
)

// config is what the bench runs; parseFlags builds it.
type config struct {
	Dir        string          // the local pair's state directory
	Modes      []mode          // in the order given
	Speeds     []speed         // the copier's own speeds
	Tolerances []time.Duration // lag tolerances
	Rows       int             // rows in the source table, copied by every run
	Chunk      int             // rows per chunk
	Workers    int             // copier goroutines
	Repeat     int             // runs of each cell, one after the other
	Interval   time.Duration   // the throttler's poll interval; 0 is the library's default
	Capacity   float64         // R in rows/s when given, instead of measuring it
	Out        string          // also write the table here
}

// Defaults. 300,000 rows take about 30 s at the capacity the trigger gives
// (about 10,000 rows/s), so the 16 runs plus the two capacity measurements
// take about 10 minutes.
const (
	defaultRows       = 300_000
	defaultChunk      = 1_000
	defaultModes      = "stopgo,stopgo-backlog,paced-heartbeat,paced-status"
	defaultSpeeds     = "3R,max"
	defaultTolerances = "1s,3s"
)

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("benchpacing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: benchpacing [flags]

Caps the local replica's apply rate with a replica-only trigger, measures that
capacity R, then copies a table under each throttler mode, copier speed and
lag tolerance, measuring the true lag independently of the library, and
prints a Markdown table.

`)
		fs.PrintDefaults()
	}
	defaultDir := os.Getenv(testenv.EnvDir)
	if defaultDir == "" {
		defaultDir = testenv.DefaultDir()
	}
	fs.StringVar(&cfg.Dir, "dir", defaultDir, "state directory of the local MariaDB pair (started if not running)")
	modes := fs.String("modes", defaultModes, "comma-separated modes: "+strings.Join(modeNames(), ", "))
	speeds := fs.String("speeds", defaultSpeeds, `comma-separated copier speeds: "max" (uncapped), "<k>R" (k times the measured capacity) or rows/s`)
	tols := fs.String("tolerances", defaultTolerances, "comma-separated lag tolerances")
	fs.IntVar(&cfg.Rows, "rows", defaultRows, "rows in the source table (each run copies them all)")
	fs.IntVar(&cfg.Chunk, "chunk", defaultChunk, "rows per chunk")
	fs.IntVar(&cfg.Workers, "workers", 1, "copier goroutines")
	fs.IntVar(&cfg.Repeat, "repeat", 1, "runs of each cell (one table row each): single stop/go runs vary by 2x")
	fs.DurationVar(&cfg.Interval, "interval", 0, "the throttler's poll interval (0: the library's default)")
	fs.Float64Var(&cfg.Capacity, "r", 0, "the replica's capacity in rows/s: skip measuring it (0: measure at the start and the end)")
	fs.StringVar(&cfg.Out, "out", "", "also write the Markdown table to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.Modes, err = parseModes(*modes); err != nil {
		return cfg, err
	}
	if cfg.Speeds, err = parseSpeeds(*speeds); err != nil {
		return cfg, err
	}
	if cfg.Tolerances, err = parseTolerances(*tols); err != nil {
		return cfg, err
	}
	switch {
	case cfg.Rows < 1:
		return cfg, fmt.Errorf("-rows %d: must be at least 1", cfg.Rows)
	case cfg.Chunk < 1:
		return cfg, fmt.Errorf("-chunk %d: must be at least 1", cfg.Chunk)
	case cfg.Workers < 1:
		return cfg, fmt.Errorf("-workers %d: must be at least 1", cfg.Workers)
	case cfg.Repeat < 1:
		return cfg, fmt.Errorf("-repeat %d: must be at least 1", cfg.Repeat)
	case cfg.Interval < 0:
		return cfg, fmt.Errorf("-interval %v: must not be negative", cfg.Interval)
	case cfg.Capacity < 0:
		return cfg, fmt.Errorf("-r %v: must not be negative", cfg.Capacity)
	}
	return cfg, nil
}

// speed is the copier's own top speed: Factor times the measured capacity,
// or Rate rows/s, or neither (uncapped).
type speed struct {
	Factor float64
	Rate   float64
}

// rate is the copier's cap in rows/s given the capacity r; 0 is uncapped.
func (s speed) rate(r float64) float64 {
	if s.Factor > 0 {
		return s.Factor * r
	}
	return s.Rate
}

func (s speed) String() string {
	switch {
	case s.Factor > 0:
		return strconv.FormatFloat(s.Factor, 'g', -1, 64) + " R"
	case s.Rate > 0:
		return thousands(int64(s.Rate)) + "/s"
	}
	return "max"
}

func parseSpeeds(list string) ([]speed, error) {
	return parseList("-speeds", list, func(f string) (speed, error) {
		var s speed
		var err error
		switch {
		case f == "max":
			return s, nil
		case strings.HasSuffix(f, "R"):
			s.Factor, err = strconv.ParseFloat(strings.TrimSuffix(f, "R"), 64)
			if err == nil && s.Factor <= 0 {
				err = errors.New("must be positive")
			}
		default:
			s.Rate, err = strconv.ParseFloat(f, 64)
			if err == nil && s.Rate <= 0 {
				err = errors.New("must be positive")
			}
		}
		return s, err
	})
}

func parseTolerances(list string) ([]time.Duration, error) {
	return parseList("-tolerances", list, func(f string) (time.Duration, error) {
		d, err := time.ParseDuration(f)
		if err == nil && d <= 0 {
			err = errors.New("must be positive")
		}
		return d, err
	})
}

func parseModes(list string) ([]mode, error) {
	return parseList("-modes", list, func(f string) (mode, error) {
		m, ok := modeByName(f)
		if !ok {
			return m, fmt.Errorf("unknown mode (known: %s)", strings.Join(modeNames(), ", "))
		}
		return m, nil
	})
}

// parseList parses a comma-separated flag value of at least one item.
func parseList[T any](name, list string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range splitList(list) {
		v, err := parse(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, f, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: none given", name)
	}
	return out, nil
}

func splitList(list string) []string {
	var out []string
	for f := range strings.SplitSeq(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
