package throttler

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// psFixture is one recorded situation: the rows the performance_schema query
// returns, and what the source must make of them.
type psFixture struct {
	Description string                 `json:"description"`
	Rows        []performanceSchemaRow `json:"rows"`
	Config      fixtureConfig          `json:"config"`
	// Group is this member's row of the Group Replication query, for a
	// server with the Group Replication channels.
	Group *groupMember `json:"group"`
	Want  lagWant      `json:"want"`
}

func TestPerformanceSchemaFixtures(t *testing.T) {
	eachFixture(t, "testdata/performance_schema", 20, func(t *testing.T, fx *psFixture) {
		m, err := performanceSchemaLag(fx.Config.channels(t), fx.Rows, fx.Group)
		fx.Want.check(t, fx.Description, m, err)
	})
}

// TestPerformanceSchemaUnixTime checks the scan of UNIX_TIMESTAMP(column):
// exact to the microsecond, 0 and NULL unset, whatever the protocol's type.
func TestPerformanceSchemaUnixTime(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC)
	sec := at.Unix()
	cases := []struct {
		name string
		in   any
		want time.Time
		err  string
	}{
		{"nil", nil, time.Time{}, ""},
		{"decimal bytes", []byte("1795435200.123456"), at, ""},
		{"decimal string", "1795435200.123456", at, ""},
		{"every microsecond kept", []byte("1795435200.999999"), time.Unix(sec, 999999000).UTC(), ""},
		{"one microsecond", []byte("1795435200.000001"), time.Unix(sec, 1000).UTC(), ""},
		{"fewer digits", []byte("1795435200.12"), time.Unix(sec, 120000000).UTC(), ""},
		{"more digits round half up", []byte("1795435200.1234565"), time.Unix(sec, 123457000).UTC(), ""},
		{"more digits carry", []byte("1795435200.9999996"), time.Unix(sec+1, 0).UTC(), ""},
		{"integer", []byte("1795435200"), time.Unix(sec, 0).UTC(), ""},
		{"binary integer", int64(1795435200), time.Unix(sec, 0).UTC(), ""},
		{"binary unsigned", uint64(1795435200), time.Unix(sec, 0).UTC(), ""},
		{"float", 1795435200.123456, at, ""},
		{"unset", []byte("0.000000"), time.Time{}, ""},
		{"unset integer", []byte("0"), time.Time{}, ""},
		{"unset binary", int64(0), time.Time{}, ""},
		{"negative", []byte("-1.5"), time.Time{}, `cannot parse Unix time "-1.5"`},
		{"wall clock", []byte("2026-11-23 12:00:00.123456"), time.Time{}, "cannot parse Unix time"},
		{"empty", []byte(""), time.Time{}, "cannot parse Unix time"},
		{"exponent", []byte("1.7954352e9"), time.Time{}, "cannot parse Unix time"},
		{"too large", []byte("99999999999999"), time.Time{}, "cannot parse Unix time"},
		{"negative binary", int64(-5), time.Time{}, "cannot use Unix time -5"},
		{"wrong type", at, time.Time{}, "cannot scan time.Time"},
	}
	for _, c := range cases {
		var u unixTime
		err := u.Scan(c.in)
		if c.err != "" {
			assert.ErrorContains(t, err, c.err, c.name)
			assert.True(t, u.t.IsZero(), c.name)
			continue
		}
		assert.NoError(t, err, c.name)
		assert.True(t, c.want.Equal(u.t), "%s: got %v, want %v", c.name, u.t, c.want)
	}
}

func TestPerformanceSchemaParseGTID(t *testing.T) {
	const uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	cases := []struct {
		in     string
		source string
		seq    int64
		ok     bool
	}{
		{uuid + ":1001", uuid, 1001, true},
		{uuid + ":batch_7:42", uuid + ":batch_7", 42, true}, // MySQL 8.4 tagged GTID
		{"ANONYMOUS", "", 0, false},
		{"", "", 0, false},
		{uuid, "", 0, false},
		{uuid + ":", "", 0, false},
		{uuid + ":0", "", 0, false},
		{uuid + ":1-5", "", 0, false}, // a set, not a GTID
		{":5", "", 0, false},
	}
	for _, c := range cases {
		g, ok := parseGTID(c.in)
		assert.Equal(t, c.ok, ok, c.in)
		if ok {
			assert.Equal(t, c.source, g.source, c.in)
			assert.Equal(t, c.seq, g.seq, c.in)
		}
	}
}

// TestPerformanceSchemaMeasureGroupMember runs Measure over the fake driver:
// a server with the Group Replication channels is asked for its member row
// (and only such a server), whose columns arrive as text.
func TestPerformanceSchemaMeasureGroupMember(t *testing.T) {
	const group = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	now := []byte("1795435200.000000") // 2026-11-23 12:00:00 UTC
	channel := func(name, state string, queued string, worker string) []driver.Value {
		return []driver.Value{[]byte("1795435200000000"), []byte(name), []byte(state), []byte("0"), []byte(""),
			[]byte("0.000000"), []byte(queued), now, now, now, []byte(""), []byte("0.000000"),
			[]byte("1"), []byte(worker), []byte("0"), []byte(""), []byte(queued), now, []byte(""), []byte("0.000000"), nil}
	}
	psCols := make([]string, 21)
	for i := range psCols {
		psCols[i] = fmt.Sprintf("c%d", i)
	}
	member := []driver.Value{[]byte("ONLINE"), []byte("SECONDARY"), []byte("x"), []byte("2"), []byte("99999999999999999999"),
		[]byte("1234"), []byte("QUOTA"), []byte("25000"), []byte("25000"), nil}
	answer := func(q string, _ []driver.NamedValue) fakedbResult {
		switch q {
		case performanceSchemaPlainQuery:
			return fakedbResult{cols: psCols, rows: [][]driver.Value{
				channel(groupApplierChannel, "ON", group+":10", "ON"),
				channel(groupRecoveryChannel, "OFF", "", "OFF"),
			}}
		case groupMemberQuery:
			return fakedbResult{cols: psCols[:10], rows: [][]driver.Value{member}}
		}
		return fakedbResult{err: fmt.Errorf("unexpected query %q", q)}
	}
	db, f := newFakedbAnswering(t, answer)
	m, err := PerformanceSchemaSource().Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Empty(t, m.NotFlowing)
	assert.Equal(t, groupApplierChannel, m.Channel)
	assert.Equal(t, &GroupReplicationStatus{MemberState: "ONLINE", MemberRole: "SECONDARY",
		ApplierQueue: math.MaxInt64, CertificationQueue: 2, // a count past int64 saturates toward throttled
		FlowControl: GroupFlowControl{Mode: "QUOTA", ApplierThreshold: 25000, CertifierThreshold: 25000, Triggered: true, ThrottledSessions: -1}},
		m.GroupReplication)
	assert.Equal(t, []string{performanceSchemaPlainQuery, groupMemberQuery}, f.log())

	// No row for @@server_uuid: not running, not an error.
	member = nil
	db, _ = newFakedbAnswering(t, func(q string, args []driver.NamedValue) fakedbResult {
		if q == groupMemberQuery {
			return fakedbResult{cols: psCols[:10]}
		}
		return answer(q, args)
	})
	m, err = PerformanceSchemaSource().Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Contains(t, m.NotFlowing, "Group Replication is not running")

	// An ordinary replica is not asked.
	db, f = newFakedbAnswering(t, func(q string, args []driver.NamedValue) fakedbResult {
		if q == performanceSchemaPlainQuery {
			return fakedbResult{cols: psCols, rows: [][]driver.Value{channel("", "ON", group+":10", "ON")}}
		}
		return answer(q, args)
	})
	m, err = PerformanceSchemaSource().Measure(context.Background(), db)
	require.NoError(t, err)
	assert.Nil(t, m.GroupReplication)
	assert.Equal(t, []string{performanceSchemaPlainQuery}, f.log())
}
