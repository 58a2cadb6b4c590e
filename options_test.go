package throttler

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Each constructor rejects, by name, an option that does not apply to it,
// rather than failing on something it derived from it (NewSchedule with
// WithQueryTimeout once failed with a message about a stale window).
func TestOptionsThatDoNotApply(t *testing.T) {
	schedule := ScheduleConfig{TimeZone: "UTC", Windows: []Window{{Start: "09:00", End: "10:00"}}}
	for _, c := range []struct {
		name string
		make func() error
		want string
	}{
		{"schedule, query timeout", func() error {
			_, err := NewSchedule(schedule, nil, WithQueryTimeout(time.Minute))
			return err
		}, "WithQueryTimeout does not apply to a Schedule throttler"},
		{"schedule, interval", func() error { _, err := NewSchedule(schedule, nil, WithInterval(time.Second)); return err }, "WithInterval does not apply to a Schedule throttler"},
		{"pause without a flag file, stale window", func() error {
			_, err := NewPause(PauseConfig{}, nil, WithStaleAfter(time.Minute))
			return err
		}, "WithStaleAfter does not apply to a Pause throttler without a flag file"},
		{"load, lag source", func() error {
			_, err := NewLoad(fakeDB, LoadConfig{Threshold: 1}, nil, WithLagSource(ReplicaStatusSource()))
			return err
		}, "WithLagSource does not apply to a Load throttler"},
		{"query, pacing", func() error {
			_, err := NewQuery(fakeDB, QueryConfig{SQL: "SELECT 1", Threshold: 1}, nil, WithPacing(0))
			return err
		}, "WithPacing does not apply to a Query throttler"},
		{"http, pacing", func() error {
			_, err := NewHTTP(HTTPConfig{URL: "http://127.0.0.1:1/check"}, nil, WithPacing(0))
			return err
		}, "WithPacing does not apply to an HTTP throttler"},
		{"load, group applier queue limit", func() error {
			_, err := NewLoad(fakeDB, LoadConfig{Threshold: 1}, nil, WithGroupApplierQueueLimit(100))
			return err
		}, "WithGroupApplierQueueLimit does not apply to a Load throttler"},
	} {
		err := c.make()
		assert.ErrorIs(t, err, ErrInvalidConfig, c.name)
		assert.ErrorContains(t, err, c.want, c.name)
	}
	// What does apply is accepted.
	_, err := NewSchedule(schedule, nil, WithMaxWait(time.Minute), WithName("market"))
	assert.NoError(t, err)
	_, err = NewPause(PauseConfig{FlagFile: "/nonexistent/flag"}, nil, WithInterval(time.Second), WithStaleAfter(time.Minute))
	assert.NoError(t, err)
}

// A constructor's error wraps ErrInvalidConfig once, however many problems
// it names (NewLoad and NewHeartbeat once wrapped it twice).
func TestInvalidConfigWrappedOnce(t *testing.T) {
	for name, make := range map[string]func() error{
		"NewLoad": func() error {
			_, err := NewLoad(nil, LoadConfig{Threshold: -1}, nil, WithInterval(0))
			return err
		},
		"NewHeartbeat": func() error {
			_, err := NewHeartbeat(nil, HeartbeatWriterConfig{Table: "a.b.c"}, nil)
			return err
		},
		"HeartbeatSource": func() error {
			_, err := HeartbeatSource(HeartbeatConfig{Table: "a.b.c"})
			return err
		},
		"NewReplicationThrottler": func() error {
			_, err := NewReplicationThrottler(nil, 0, nil, WithInterval(0))
			return err
		},
		"NewSchedule": func() error {
			_, err := NewSchedule(ScheduleConfig{}, nil, WithQueryTimeout(time.Minute))
			return err
		},
	} {
		err := make()
		assert.ErrorIs(t, err, ErrInvalidConfig, name)
		assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()), "%s: %v", name, err)
	}
}
