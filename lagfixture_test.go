package throttler

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lagWant is what a recorded situation must make a lag source report: a lag
// (and the channel it is on), a not-flowing reason, or an error.
type lagWant struct {
	Lag        string `json:"lag"`         // a time.Duration, when flowing
	Channel    string `json:"channel"`     // the channel named
	NotFlowing string `json:"not_flowing"` // a substring of the reason
	Err        string `json:"err"`         // "not_replica", or a substring of the error
	// Backlog, when present, is the backlog the measurement must carry.
	Backlog *backlogWant `json:"backlog"`
	// Channels, when present, is Measurement.Channels: each channel's
	// name, lag, delay and Ignored exactly, and a substring of its
	// not-flowing reason.
	Channels []channelWant `json:"channels"`
	// ChannelProblem, when present, is a substring of what the first
	// measurement refuses (a name WithChannels gave that the replica
	// lacks); when absent there must be none.
	ChannelProblem string `json:"channel_problem"`
	// Group, when present, is the Group Replication status the measurement
	// must carry (and absent, that it carries none).
	Group *GroupReplicationStatus `json:"group"`
}

// channelWant is one entry of Measurement.Channels.
type channelWant struct {
	Name       string `json:"name"`
	Lag        string `json:"lag"`   // a time.Duration; "" is 0
	Delay      string `json:"delay"` // a time.Duration; "" is 0
	NotFlowing string `json:"not_flowing"`
	Ignored    bool   `json:"ignored"`
}

// fixtureConfig is the WithChannels and WithLagBeyondDelay a fixture is
// read with; empty, the defaults.
type fixtureConfig struct {
	Only        []string `json:"only"`
	Ignore      []string `json:"ignore"`
	BeyondDelay bool     `json:"beyond_delay"`
}

func (c fixtureConfig) channels(t *testing.T) channelConfig {
	t.Helper()
	sel, errs := Channels{Only: c.Only, Ignore: c.Ignore}.check()
	require.Empty(t, errs, "fixture's channels")
	return channelConfig{sel: sel, beyondDelay: c.BeyondDelay}
}

func (w lagWant) checkChannels(t *testing.T, desc string, m Measurement) {
	t.Helper()
	if w.ChannelProblem == "" {
		assert.Empty(t, m.channelProblem, desc)
	} else {
		assert.Contains(t, m.channelProblem, w.ChannelProblem, desc)
	}
	if w.Channels == nil {
		return
	}
	dur := func(s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "fixture's duration %q", s)
		return d
	}
	if !assert.Len(t, m.Channels, len(w.Channels), desc) {
		return
	}
	for i, c := range w.Channels {
		got := m.Channels[i]
		assert.Equal(t, c.Name, got.Name, "%s: channel %d", desc, i)
		assert.Equal(t, c.Ignored, got.Ignored, "%s: channel %q ignored", desc, c.Name)
		assert.Equal(t, dur(c.Delay), got.Delay, "%s: channel %q delay", desc, c.Name)
		if c.NotFlowing != "" {
			assert.Contains(t, got.NotFlowing, c.NotFlowing, "%s: channel %q", desc, c.Name)
		} else {
			assert.Empty(t, got.NotFlowing, "%s: channel %q", desc, c.Name)
			assert.Equal(t, dur(c.Lag), got.Lag, "%s: channel %q lag", desc, c.Name)
		}
	}
}

// backlogWant is a measurement's backlog, exactly; with Known false only
// that is checked.
type backlogWant struct {
	Known               bool   `json:"known"`
	Transactions        int64  `json:"transactions"`
	Bytes               int64  `json:"bytes"`
	AppliedTransactions int64  `json:"applied_transactions"`
	AppliedBytes        int64  `json:"applied_bytes"`
	AppliedFile         string `json:"applied_file"`
}

func (w *backlogWant) check(t *testing.T, desc string, b Backlog) {
	t.Helper()
	if !w.Known {
		assert.False(t, b.Known, desc)
		return
	}
	got := backlogWant{b.Known, b.Transactions, b.Bytes, b.appliedTransactions, b.appliedBytes, b.appliedFile}
	assert.Equal(t, *w, got, desc)
}

func (w lagWant) check(t *testing.T, desc string, m Measurement, err error) {
	t.Helper()
	switch {
	case w.Err == "not_replica":
		assert.ErrorIs(t, err, ErrNotReplica, desc)
	case w.Err != "":
		assert.ErrorContains(t, err, w.Err, desc)
		assert.False(t, errors.Is(err, ErrNotReplica), "only a server without a channel is not a replica")
	case w.NotFlowing != "":
		require.NoError(t, err, desc)
		assert.Contains(t, m.NotFlowing, w.NotFlowing, desc)
		assert.Equal(t, w.Channel, m.Channel, desc)
		w.checkBacklog(t, desc, m)
	default:
		require.NoError(t, err, desc)
		want, err := time.ParseDuration(w.Lag)
		require.NoError(t, err, "fixture's lag")
		assert.Empty(t, m.NotFlowing, desc)
		assert.Equal(t, want, m.Lag, desc)
		assert.Equal(t, w.Channel, m.Channel, desc)
		w.checkBacklog(t, desc, m)
	}
}

func (w lagWant) checkBacklog(t *testing.T, desc string, m Measurement) {
	t.Helper()
	w.checkChannels(t, desc, m)
	if w.Backlog != nil {
		w.Backlog.check(t, desc, m.Backlog)
	}
	assert.Equal(t, w.Group, m.GroupReplication, desc)
}

// eachFixture runs run on every JSON file in dir, each decoded into a new T
// in a subtest of its own, and fails if there are fewer than atLeast.
func eachFixture[T any](t *testing.T, dir string, atLeast int, run func(t *testing.T, fx *T)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), atLeast, "fixtures missing in %s", dir)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			require.NoError(t, err)
			fx := new(T)
			require.NoError(t, json.Unmarshal(raw, fx), file)
			run(t, fx)
		})
	}
}
