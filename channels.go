package throttler

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultChannel names the default replication channel in Channels: the one
// MySQL and MariaDB call "" (MariaDB's unnamed connection, MySQL's channel
// with the empty name). An empty name is refused instead, so that a stray
// empty entry (a configuration list split on commas) cannot silently select
// it. A channel that is really called "(default)" cannot be named.
const DefaultChannel = "(default)"

// Channels says which replication channels of a multi-source replica count
// toward its verdict (WithChannels). Give Only or Ignore, not both; names
// compare without regard to case, as the servers compare them, and the
// default channel is DefaultChannel.
//
// A channel that does not count is still read and reported in
// Measurement.Channels (marked Ignored), but neither its lag, nor its state,
// nor its backlog throttles.
//
// The channels a replica has are known only once it is asked, so names are
// checked at the first measurement (Open): a name in Only or Ignore that the
// replica does not have, or a selection that leaves no channel counting,
// fails Open with an error wrapping ErrInvalidConfig that names the channels
// the replica has. Later, a channel named in Only that disappears reads as
// not flowing (the throttle fails closed); one named in Ignore that
// disappears (the retired channel was removed) changes nothing.
type Channels struct {
	// Only lists the channels that count; every other one is ignored.
	Only []string
	// Ignore lists the channels that do not count; every other one does.
	Ignore []string
}

// channelSelection is Channels, checked, with names folded to the servers'
// spelling ("" for the default channel) and lower case. The zero value
// counts every channel.
type channelSelection struct {
	only, ignore []string // folded; at most one is non-empty
}

// fold is a channel name as compared: lower case, "" for the default one.
func fold(name string) string {
	if strings.EqualFold(name, DefaultChannel) {
		return ""
	}
	return strings.ToLower(name)
}

// channelLabel names a channel as the server calls it ("" the default) in
// messages.
func channelLabel(name string) string {
	if name == "" {
		return DefaultChannel
	}
	return strconv.Quote(name)
}

// check validates c: both lists given, an empty or blank name, a duplicate
// (after folding), and a name longer than the servers' 64 characters are
// problems.
func (c Channels) check() (channelSelection, []error) {
	var errs []error
	if len(c.Only) > 0 && len(c.Ignore) > 0 {
		errs = append(errs, errors.New("WithChannels: give Only or Ignore, not both"))
	}
	fix := func(field string, names []string) []string {
		var out []string
		for i, n := range names {
			switch f := fold(n); {
			case strings.TrimSpace(n) == "":
				errs = append(errs, fmt.Errorf("WithChannels: %s[%d] is empty (name the default channel DefaultChannel, %q)", field, i, DefaultChannel))
			case len([]rune(n)) > 64:
				errs = append(errs, fmt.Errorf("WithChannels: %s[%d] %q is longer than a channel name can be (64 characters)", field, i, n))
			case slices.Contains(out, f):
				errs = append(errs, fmt.Errorf("WithChannels: %s[%d] %q is listed twice (names compare without regard to case)", field, i, n))
			default:
				out = append(out, f)
			}
		}
		return out
	}
	sel := channelSelection{only: fix("Only", c.Only), ignore: fix("Ignore", c.Ignore)}
	return sel, errs
}

// counts reports whether the channel the server calls name counts.
func (s channelSelection) counts(name string) bool {
	f := strings.ToLower(name)
	if len(s.only) > 0 {
		return slices.Contains(s.only, f)
	}
	return !slices.Contains(s.ignore, f)
}

func (s channelSelection) isZero() bool { return len(s.only) == 0 && len(s.ignore) == 0 }

func (s channelSelection) String() string {
	list := func(names []string) string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = channelLabel(n)
		}
		return strings.Join(out, ", ")
	}
	switch {
	case len(s.only) > 0:
		return "only channels " + list(s.only)
	case len(s.ignore) > 0:
		return "ignoring channels " + list(s.ignore)
	}
	return ""
}

// channelConfig is how a channel source (ReplicaStatusSource,
// PerformanceSchemaSource) is configured by WithChannels and
// WithLagBeyondDelay.
type channelConfig struct {
	sel         channelSelection
	beyondDelay bool
}

func (c channelConfig) isZero() bool { return c.sel.isZero() && !c.beyondDelay }

// describe is the configuration for a source's String: "" when zero.
func (c channelConfig) describe() string {
	var parts []string
	if s := c.sel.String(); s != "" {
		parts = append(parts, s)
	}
	if c.beyondDelay {
		parts = append(parts, "lag beyond the configured delay")
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// channelSource is a lag source that reads replication channels, and can be
// configured by WithChannels and WithLagBeyondDelay.
type channelSource interface {
	LagSource
	// configured returns a copy of the source that applies cfg.
	configured(cfg channelConfig) LagSource
}

// channelReading is one channel as a source read it, before the selection.
type channelReading struct {
	name       string
	lag        time.Duration // raw: the configured delay not subtracted
	notFlowing string
	delay      time.Duration // configured delay; 0 when none or not read
	// undelayed is a latency in lag that the configured delay does not
	// cover (a transaction still in transfer from the source): it stands
	// whole beyond the delay.
	undelayed time.Duration
	// standby is a channel the source reads but never counts, whatever
	// the selection: a Group Replication member's recovery channel while
	// the member is ONLINE.
	standby bool
}

// combineChannels turns per-channel readings (in the order the source reports
// them) into a measurement's Lag, Channel, NotFlowing and Channels, applying
// cfg: only the channels that count (selected, and not standby) set the
// verdict, and with beyondDelay each channel's lag is what exceeds its
// configured delay (never below 0). counted holds the names of the channels
// that count and exist, for the backlog.
//
// The first channel that counts and is not flowing names the reason; else
// Channel is the worst lag's. A name in Only that the replica lacks is a
// channel that is not flowing, and a selection that leaves nothing counting
// reads as not flowing too; both, and a name in Ignore the replica lacks,
// are also recorded in m.channelProblem for the first measurement (Open) to
// refuse.
func combineChannels(cfg channelConfig, rs []channelReading) (m Measurement, counted map[string]bool) {
	counted = map[string]bool{}
	var have []string
	for _, r := range rs {
		have = append(have, strings.ToLower(r.name))
	}
	var problems []string
	for _, n := range cfg.sel.only {
		if !slices.Contains(have, n) {
			problems = append(problems, fmt.Sprintf("channel %s (WithChannels Only) not found", channelLabel(n)))
			why := fmt.Sprintf("channel %s not found on the replica (it has %s)", channelLabel(n), labels(rs))
			m.Channels = append(m.Channels, ChannelLag{Name: n, NotFlowing: why})
			if m.NotFlowing == "" {
				m.NotFlowing, m.Channel = why, n
			}
		}
	}
	for _, n := range cfg.sel.ignore {
		if !slices.Contains(have, n) {
			problems = append(problems, fmt.Sprintf("channel %s (WithChannels Ignore) not found", channelLabel(n)))
		}
	}
	lagChannel, lagFound := "", false
	for _, r := range rs {
		c := ChannelLag{Name: r.name, Lag: r.lag, NotFlowing: r.notFlowing, Delay: r.delay, Ignored: r.standby || !cfg.sel.counts(r.name)}
		if cfg.beyondDelay && r.notFlowing == "" {
			c.Lag = max(r.undelayed, r.lag-r.delay, 0) // both non-negative: no overflow
		}
		m.Channels = append(m.Channels, c)
		switch {
		case c.Ignored:
		case c.NotFlowing != "":
			counted[r.name] = true
			if m.NotFlowing == "" {
				m.NotFlowing, m.Channel = c.NotFlowing, c.Name
			}
		default:
			counted[r.name] = true
			if !lagFound || c.Lag > m.Lag {
				m.Lag, lagChannel, lagFound = c.Lag, c.Name, true
			}
		}
	}
	switch {
	case len(counted) > 0 || len(problems) > 0:
	case cfg.sel.isZero():
		// Only standby channels: nothing to measure, but no mistake of
		// the caller's either.
		m.NotFlowing = "no channel to measure (the replica has " + labels(rs) + ")"
	default:
		why := fmt.Sprintf("no channel counts: WithChannels %s leaves none of the replica's channels (%s)", cfg.sel, labels(rs))
		problems = append(problems, why)
		if m.NotFlowing == "" {
			m.NotFlowing = why
		}
	}
	if m.NotFlowing == "" {
		m.Channel = lagChannel
	}
	if len(problems) > 0 {
		m.channelProblem = strings.Join(problems, "; ") + "; the replica has " + labels(rs)
	}
	return m, counted
}

// delaySeconds is a configured delay read from a server, in seconds. One
// that is negative or too large for a time.Duration reads as none, which
// leaves the lag whole: toward throttled.
func delaySeconds(n int64) time.Duration {
	if n <= 0 || n > int64(maxDuration/time.Second) {
		return 0
	}
	return time.Duration(n) * time.Second
}

// labels lists the channels of rs for messages, as "(default), "east"".
func labels(rs []channelReading) string {
	if len(rs) == 0 {
		return "no channel"
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = channelLabel(r.name)
	}
	return "channels " + strings.Join(out, ", ")
}
