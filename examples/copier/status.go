package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/throttlekit/throttler"
)

// console writes the demo's output: event lines, each stamped with the time
// since the start, and a status line. On a terminal (live) the status line is
// one line rewritten in place and redrawn below every event line; elsewhere
// (CI logs, pipes) it is a plain line every second.
type console struct {
	mu     sync.Mutex
	w      io.Writer
	live   bool
	width  int // live: the status line is cut to this many characters
	start  time.Time
	status string // live: the status line on screen, "" if none
}

func newConsole(w io.Writer, live bool, start time.Time) *console {
	return &console{w: w, live: live, width: terminalWidth(w), start: start}
}

// Printf writes one event line.
func (c *console) Printf(format string, args ...any) { c.line(fmt.Sprintf(format, args...)) }

// Write writes p as event lines, which makes the console the destination of
// the throttler's slog logger (one call per record).
func (c *console) Write(p []byte) (int, error) {
	for l := range strings.Lines(string(p)) {
		c.line(strings.TrimSuffix(l, "\n"))
	}
	return len(p), nil
}

func (c *console) line(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		fmt.Fprintf(c.w, "%s %s\n", c.stamp(), s)
		return
	}
	fmt.Fprintf(c.w, "\r\x1b[K%s %s\n%s", c.stamp(), s, c.status)
}

// Status shows s as the status line.
func (c *console) Status(s string) {
	if !c.live {
		c.line(s)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = cut(c.stamp()+" "+s, c.width)
	fmt.Fprintf(c.w, "\r\x1b[K%s", c.status)
}

// EndStatus leaves the last status line on screen as an ordinary line.
func (c *console) EndStatus() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live && c.status != "" {
		fmt.Fprintln(c.w)
		c.status = ""
	}
}

func (c *console) stamp() string {
	return fmt.Sprintf("%5.1fs", time.Since(c.start).Seconds())
}

// cut shortens s to width characters, marking the cut with "…".
func cut(s string, width int) string {
	r := []rune(s)
	if width <= 1 || len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}

// Status line cadence: the lag is sampled (for the worst lag) every sample;
// the line is redrawn every liveEvery on a terminal, printed every plainEvery
// elsewhere.
const (
	sample     = 100 * time.Millisecond
	liveEvery  = 200 * time.Millisecond
	plainEvery = time.Second
	rateWindow = time.Second
)

// lagText is the replica's lag, or "?" while it is unknown: replication not
// flowing, or no measurement for several polls.
func lagText(t *throttler.Replication, now time.Time) string {
	m, at, ok := t.LastMeasurement()
	if !ok || m.NotFlowing != "" || now.Sub(at) > 3*pollInterval {
		return "?"
	}
	return m.Lag.String()
}

// startStatus shows the copy's progress until stop is called; stop draws
// the line a last time, with final as its state, and returns the worst
// replica lag seen.
func startStatus(con *console, c *copier, t *throttler.Replication, total int64) (stop func(final string) (worstLag time.Duration)) {
	type point struct {
		at   time.Time
		rows int64
	}
	every := plainEvery
	if con.live {
		every = liveEvery
	}
	var (
		worst   time.Duration
		history []point // the last rateWindow of samples, oldest first
		drawn   time.Time
		final   string // set before done is closed
	)
	draw := func(now time.Time) {
		rows := c.copied.Load()
		var rate float64
		if old := history[0]; now.Sub(old.at) > 0 {
			rate = float64(rows-old.rows) / now.Sub(old.at).Seconds()
		}
		state := "copying"
		switch st := t.Stats(); { // one snapshot: never throttled with no reason
		case final != "":
			state = final
		case st.Throttled:
			state = "throttled: " + st.Reason
		}
		all := thousands(total)
		con.Status(fmt.Sprintf("%*s/%s rows %3d%%  %7s rows/s  lag %-3s  paced %5.1f chunks/s  %s",
			len(all), thousands(rows), all, rows*100/max(total, 1), thousands(int64(rate)), lagText(t, now), t.PacedRate(), state))
		drawn = now
	}
	record := func(now time.Time) {
		worst = max(worst, t.Lag())
		history = append(history, point{now, c.copied.Load()})
		for len(history) > 1 && now.Sub(history[1].at) >= rateWindow {
			history = history[1:]
		}
	}

	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		ticker := time.NewTicker(sample)
		defer ticker.Stop()
		now := time.Now()
		record(now)
		draw(now)
		for {
			select {
			case <-done:
				now := time.Now()
				record(now)
				draw(now)
				con.EndStatus()
				return
			case now := <-ticker.C:
				record(now)
				if now.Sub(drawn) >= every-sample/2 {
					draw(now)
				}
			}
		}
	}()
	return func(f string) time.Duration {
		final = f
		close(done)
		<-exited
		return worst
	}
}

// summary is what a run did, as far as it got.
type summary struct {
	Rows      int64           // in the source table
	Copied    int64           // rows copied
	Checked   bool            // the copy was verified (it was not if the run ended early)
	Verified  bool            // the source and the copy have the same rows
	Checksum  string          // the source's row count and checksum
	Elapsed   time.Duration   // the whole run
	CopyTime  time.Duration   // the copy, pauses included
	Throttle  throttler.Stats // the throttler's, at the end of the copy
	WorstLag  time.Duration   // the worst replica lag seen
	Tolerance time.Duration   // the lag tolerance
	Faults    int             // faults injected
}

func (s summary) String() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	switch {
	case s.Checked && s.Verified:
		w("summary: %s of %s rows copied and verified (%s in both tables)", thousands(s.Copied), thousands(s.Rows), s.Checksum)
	case s.Checked:
		w("summary: %s of %s rows copied; VERIFICATION FAILED: the copy differs from the source (%s)", thousands(s.Copied), thousands(s.Rows), s.Checksum)
	default:
		w("summary: %s of %s rows copied; not verified (the copy did not finish)", thousands(s.Copied), thousands(s.Rows))
	}
	st := s.Throttle
	w("  elapsed    %v (copy %v)", s.Elapsed.Round(100*time.Millisecond), s.CopyTime.Round(100*time.Millisecond))
	w("  throttled  %v in %s%s", st.ThrottledTotal.Round(100*time.Millisecond), plural(st.Episodes, "episode"), byKind(st.ThrottledByKind))
	w("  blocked    %v in %s", st.WaitedTotal.Round(100*time.Millisecond), plural(st.Waits, "BlockWait call"))
	w("  measured   %s lag readings, %s", thousands(st.Measurements), plural(st.Errors, "error"))
	w("  worst lag  %v (tolerance %v)", s.WorstLag, s.Tolerance)
	if s.Faults > 0 {
		w("  faults     %d injected", s.Faults)
	}
	return b.String()
}

// byKind splits the time throttled by kind, longest first: ": not flowing
// 4.1s, lag 3.2s"; " (lag)" for one kind, whose time is the total.
func byKind(d map[string]time.Duration) string {
	if len(d) < 2 {
		for k := range d {
			return " (" + k + ")"
		}
		return ""
	}
	kinds := slices.Collect(maps.Keys(d))
	slices.SortFunc(kinds, func(a, b string) int { return cmp.Or(cmp.Compare(d[b], d[a]), cmp.Compare(a, b)) })
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %v", k, d[k].Round(100*time.Millisecond))
	}
	return ": " + strings.Join(parts, ", ")
}

// plural is "1 episode", "3 episodes".
func plural[N int | int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// thousands formats n with comma separators: 300,000.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}
