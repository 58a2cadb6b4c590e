package throttler

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// discoFleet fakes everything around a Discovery: the primary's replica
// list, the replicas' *sql.DBs (real DBs on a connector that never
// connects, so closing them is observable and goleak sees their
// goroutines) and each replica's lag, by DSN ("fake://host:port").
type discoFleet struct {
	mu      sync.Mutex
	hosts   []ReplicaHost
	listErr error
	openErr map[string]error
	measure map[string]Measurement
	measErr map[string]error
	dsnOf   map[*sql.DB]string
	opens   map[string]int
	server  *fakedb // every replica's *sql.DB is on it; counts their closes
	primary *fakedb // answers SHOW REPLICAS from hosts; set by newDisco
}

func newFleet(hosts ...ReplicaHost) *discoFleet {
	return &discoFleet{
		hosts:   hosts,
		openErr: map[string]error{},
		measure: map[string]Measurement{},
		measErr: map[string]error{},
		dsnOf:   map[*sql.DB]string{},
		opens:   map[string]int{},
		server:  newFakeServer(),
	}
}

func fakeDSN(h ReplicaHost) string { return fmt.Sprintf("fake://%s:%d", h.Host, h.Port) }

// listing is the primary's answer to SHOW REPLICAS, as MariaDB gives it.
func (f *discoFleet) listing(string, []driver.NamedValue) fakedbResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return fakedbResult{err: f.listErr}
	}
	r := fakedbResult{cols: []string{"Server_id", "Host", "Port", "Master_id"}}
	for _, h := range f.hosts {
		r.rows = append(r.rows, []driver.Value{int64(h.ServerID), h.Host, int64(h.Port), int64(1)})
	}
	return r
}

func (f *discoFleet) setHosts(hosts ...ReplicaHost) {
	f.mu.Lock()
	f.hosts = hosts
	f.mu.Unlock()
}

func (f *discoFleet) setListErr(err error) {
	f.mu.Lock()
	f.listErr = err
	f.mu.Unlock()
}

func (f *discoFleet) open(dsn string) (*sql.DB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens[dsn]++
	if err := f.openErr[dsn]; err != nil {
		return nil, err
	}
	db := f.server.open()
	f.dsnOf[db] = dsn
	return db, nil
}

func (f *discoFleet) set(h ReplicaHost, m Measurement, err error) {
	f.mu.Lock()
	f.measure[fakeDSN(h)], f.measErr[fakeDSN(h)] = m, err
	f.mu.Unlock()
}

func (f *discoFleet) setOpenErr(h ReplicaHost, err error) {
	f.mu.Lock()
	f.openErr[fakeDSN(h)] = err
	f.mu.Unlock()
}

// The fleet is the members' LagSource too.
func (f *discoFleet) String() string { return "fake" }

func (f *discoFleet) Measure(_ context.Context, db *sql.DB) (Measurement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dsn := f.dsnOf[db]
	return f.measure[dsn], f.measErr[dsn]
}

var (
	hostA = ReplicaHost{ServerID: 2, Host: "10.0.0.1", Port: 3306}
	hostB = ReplicaHost{ServerID: 3, Host: "10.0.0.2", Port: 3306}
	hostC = ReplicaHost{ServerID: 4, Host: "10.0.0.3", Port: 3306}
)

// newDisco returns an unopened Discovery on the fleet that only acts when
// told (UpdateLag), unless opts say otherwise.
func newDisco(t testing.TB, f *discoFleet, logger *slog.Logger, mod func(*DiscoveryConfig), opts ...Option) *Discovery {
	t.Helper()
	cfg := DiscoveryConfig{DSNTemplate: "fake://{{.Host}}:{{.Port}}", Every: time.Hour, OpenDB: f.open}
	if mod != nil {
		mod(&cfg)
	}
	all := append([]Option{WithInterval(time.Hour), WithStaleAfter(time.Hour), WithLagSource(f)}, opts...)
	primary, p := newFakedb(t)
	p.set(f.listing)
	f.primary = p
	d, err := NewDiscovery(primary, time.Second, cfg, logger, all...)
	require.NoError(t, err)
	return d
}

func openDisco(t testing.TB, f *discoFleet, mod func(*DiscoveryConfig), opts ...Option) *Discovery {
	t.Helper()
	d := newDisco(t, f, nil, mod, opts...)
	require.NoError(t, d.Open(context.Background()))
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func update(t testing.TB, d *Discovery) {
	t.Helper()
	_ = d.UpdateLag(context.Background())
}

func TestNewDiscoveryValidates(t *testing.T) {
	open := func(string) (*sql.DB, error) { return nil, errors.New("unused") }
	ok := DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp({{.Host}}:{{.Port}})/?timeout=2s"}
	for name, tc := range map[string]struct {
		primary   *sql.DB
		cfg       DiscoveryConfig
		tolerance time.Duration
		opts      []Option
		want      string
	}{
		"nil primary":       {cfg: ok, tolerance: time.Second, want: "primary *sql.DB is nil"},
		"zero tolerance":    {primary: fakeDB, cfg: ok, want: "lag tolerance 0s must be positive"},
		"empty template":    {primary: fakeDB, cfg: DiscoveryConfig{}, tolerance: time.Second, want: "DSNTemplate is empty"},
		"template syntax":   {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp({{.Host}:{{.Port}})/"}, tolerance: time.Second, want: "DSNTemplate does not parse"},
		"unknown field":     {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp({{.Hots}}:{{.Port}})/"}, tolerance: time.Second, want: "does not render for a sample replica"},
		"same for all":      {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp(db.example:3306)/"}, tolerance: time.Second, want: "renders the same host and port for every replica"},
		"server id only":    {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp(db.example:3306)/?connectionAttributes=sid:{{.ServerID}}"}, tolerance: time.Second, want: "renders the same host and port for every replica"},
		"host ignored":      {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp(db.example:{{.Port}})/?connectionAttributes=sid:{{.ServerID}}"}, tolerance: time.Second, want: "does not change with the replica's host"},
		"port ignored":      {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@tcp({{.Host}}:3306)/"}, tolerance: time.Second, want: "does not change with the replica's port"},
		"driver rejects":    {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: "monitor:s3cret@{{.Host}}:{{.Port}}"}, tolerance: time.Second, want: "DSN the mysql driver rejects"},
		"negative every":    {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: ok.DSNTemplate, Every: -time.Second}, tolerance: time.Second, want: "DiscoveryConfig.Every -1s must be positive"},
		"negative forget":   {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: ok.DSNTemplate, ForgetAfter: -time.Second}, tolerance: time.Second, want: "DiscoveryConfig.ForgetAfter -1s must not be negative"},
		"every 1ns":         {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: ok.DSNTemplate, Every: 1}, tolerance: time.Second, want: "DiscoveryConfig.Every 1ns must be at least 10ms"},
		"every past a day":  {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: ok.DSNTemplate, Every: 25 * time.Hour}, tolerance: time.Second, want: "DiscoveryConfig.Every 25h0m0s must be at most 24h0m0s"},
		"forget past week":  {primary: fakeDB, cfg: DiscoveryConfig{DSNTemplate: ok.DSNTemplate, ForgetAfter: maxDuration}, tolerance: time.Second, want: "DiscoveryConfig.ForgetAfter 2562047h47m16.854775807s must be at most 168h0m0s"},
		"bad option":        {primary: fakeDB, cfg: ok, tolerance: time.Second, opts: []Option{WithInterval(0)}, want: "WithInterval(0s)"},
		"bad option and cf": {primary: fakeDB, cfg: DiscoveryConfig{}, tolerance: time.Second, opts: []Option{nil}, want: "option 0 is nil"},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := NewDiscovery(tc.primary, tc.tolerance, tc.cfg, nil, tc.opts...)
			require.Error(t, err)
			assert.Nil(t, d)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "s3cret", "the template's password is never echoed")
			assert.Equal(t, 1, strings.Count(err.Error(), ErrInvalidConfig.Error()))
		})
	}

	// Valid: defaults filled in; a custom OpenDB skips the driver's check;
	// {{.Addr}} brackets IPv6.
	d, err := NewDiscovery(fakeDB, time.Second, ok, nil)
	require.NoError(t, err)
	assert.Equal(t, defaultDiscoveryEvery, d.cfg.Every)
	assert.Equal(t, "replica discovery", d.String())
	d, err = NewDiscovery(fakeDB, time.Second, DiscoveryConfig{DSNTemplate: "x://{{.Addr}}/{{.ServerID}}", OpenDB: open, Every: time.Minute}, nil, WithName("fleet"))
	require.NoError(t, err)
	assert.Equal(t, "fleet", d.String())
	dsn, err := renderDSN(d.tmpl, ReplicaHost{ServerID: 7, Host: "::1", Port: 3306})
	require.NoError(t, err)
	assert.Equal(t, "x://[::1]:3306/7", dsn)
	require.NoError(t, d.Close(), "closing an unopened Discovery is fine")
}

func TestParseReplicaHosts(t *testing.T) {
	str := func(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }
	// MariaDB 10.11's SHOW SLAVE HOSTS, as measured.
	mariadb := []statusRow{
		{"Server_id": str("2"), "Host": str("127.0.0.1"), "Port": str("41391"), "Master_id": str("1")},
		{"Server_id": str("3"), "Host": str("127.0.0.1"), "Port": str("33097"), "Master_id": str("1")},
	}
	got, err := parseReplicaHosts(mariadb)
	require.NoError(t, err)
	assert.Equal(t, []ReplicaHost{{2, "127.0.0.1", 41391}, {3, "127.0.0.1", 33097}}, got)

	// MySQL 8.0.22+'s SHOW REPLICAS; a replica without report_host has an
	// empty Host.
	mysql8 := []statusRow{
		{"Server_Id": str("12"), "Host": str(""), "Port": str("3306"), "Source_Id": str("1"), "Replica_UUID": str("x")},
		{"Server_Id": str("4294967295"), "Host": str("db-2"), "Port": str("3307"), "Source_Id": str("1"), "Replica_UUID": str("y")},
	}
	got, err = parseReplicaHosts(mysql8)
	require.NoError(t, err)
	assert.Equal(t, []ReplicaHost{{12, "", 3306}, {4294967295, "db-2", 3307}}, got)

	got, err = parseReplicaHosts(nil)
	require.NoError(t, err)
	assert.Empty(t, got)

	for name, row := range map[string]statusRow{
		"no host column": {"Server_id": str("2"), "Port": str("1")},
		"bad server id":  {"Server_id": str("-1"), "Host": str("h"), "Port": str("1")},
		"bad port":       {"Server_id": str("2"), "Host": str("h"), "Port": str("99999")},
	} {
		_, err := parseReplicaHosts([]statusRow{row})
		assert.Error(t, err, name)
	}
}

func TestDiscoveryListErrorNamesTheGrant(t *testing.T) {
	err := discoveryListError("SHOW SLAVE HOSTS", &mysql.MySQLError{Number: 1227, Message: "Access denied; you need (at least one of) the REPLICATION MASTER ADMIN privilege(s) for this operation"})
	assert.ErrorIs(t, err, ErrAccessDenied)
	assert.Contains(t, err.Error(), "grant REPLICATION MASTER ADMIN (MariaDB 10.5.2+) or REPLICATION SLAVE (MySQL)")
	err = discoveryListError("SHOW REPLICAS", errBoom)
	assert.ErrorIs(t, err, errBoom)
	assert.NotErrorIs(t, err, ErrAccessDenied)
}

func TestDiscoveryWatchesEveryReplica(t *testing.T) {
	f := newFleet(hostB, hostA)
	d := openDisco(t, f, nil)
	assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306"}, d.Replicas(), "sorted")
	assert.False(t, d.IsThrottled())
	assert.Equal(t, "", d.ThrottleReason())

	f.set(hostB, lagOf(5*time.Second), nil)
	f.set(hostA, lagOf(300*time.Millisecond), nil)
	require.NoError(t, d.UpdateLag(context.Background()))
	assert.True(t, d.IsThrottled())
	assert.Equal(t, "10.0.0.2:3306 (server_id 3): replica lag 5s >= 1s", d.ThrottleReason())
	assert.Equal(t, 5*time.Second, d.Lag())

	f.set(hostA, lagOf(2*time.Second), nil)
	require.NoError(t, d.UpdateLag(context.Background()))
	assert.Equal(t, "10.0.0.1:3306 (server_id 2): replica lag 2s >= 1s; 10.0.0.2:3306 (server_id 3): replica lag 5s >= 1s", d.ThrottleReason())

	f.set(hostA, lagOf(0), nil)
	f.set(hostB, lagOf(0), nil)
	require.NoError(t, d.UpdateLag(context.Background()))
	assert.False(t, d.IsThrottled())

	require.NoError(t, d.Close())
	assert.EqualValues(t, 2, f.server.closes.Load(), "the Discovery closes the DBs it opened")
	assert.Nil(t, d.Replicas())
}

func TestDiscoveryMembersAreNamedAndOptioned(t *testing.T) {
	f := newFleet(hostA)
	d := openDisco(t, f, nil, WithName("fleet"), WithMaxWait(30*time.Millisecond))
	s := d.cur.Load()
	require.Len(t, s.watched, 1)
	member := s.watched[0]
	assert.Equal(t, "10.0.0.1:3306", member.String(), "WithName on a member is its host:port")
	assert.Equal(t, LagSource(f), member.Source(), "the options apply to every member")
	assert.Equal(t, "fleet", d.String())

	// The member's own cap is the Discovery's: WithMaxWait reached both.
	f.set(hostA, lagOf(time.Hour), nil)
	require.NoError(t, member.UpdateLag(context.Background()))
	assert.ErrorIs(t, member.Wait(context.Background()), ErrMaxWait)
	err := d.Wait(context.Background())
	assert.ErrorIs(t, err, ErrMaxWait)
	assert.Contains(t, err.Error(), "10.0.0.1:3306 (server_id 2): replica lag 1h0m0s >= 1s")
}

// A replica that cannot be opened is a failed member: throttled, named,
// listed, never skipped; retried until it can be watched.
func TestDiscoveryFailedMemberFailsClosed(t *testing.T) {
	f := newFleet(hostA, hostB)
	f.setOpenErr(hostB, errors.New("dial tcp 10.0.0.2:3306: connection refused"))
	d := openDisco(t, f, nil)
	assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306"}, d.Replicas(), "a failed member is not skipped")
	assert.True(t, d.IsThrottled(), "fail closed")
	assert.Equal(t, "10.0.0.2:3306 (server_id 3): cannot be watched: open its *sql.DB: dial tcp 10.0.0.2:3306: connection refused", d.ThrottleReason())
	err := d.UpdateLag(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "10.0.0.2:3306 (server_id 3)")

	// A DB that opens but whose first measurement fails: still failed.
	f.setOpenErr(hostB, nil)
	f.set(hostB, Measurement{}, fmt.Errorf("%w: grant SLAVE MONITOR", ErrAccessDenied))
	update(t, d)
	assert.True(t, d.IsThrottled())
	assert.Contains(t, d.ThrottleReason(), "10.0.0.2:3306 (server_id 3): cannot be watched: fake: missing privilege: grant SLAVE MONITOR")

	f.set(hostB, lagOf(0), nil)
	require.NoError(t, d.UpdateLag(context.Background()), "the retry opens it")
	assert.False(t, d.IsThrottled(), d.ThrottleReason())
	f.mu.Lock()
	assert.Equal(t, 3, f.opens[fakeDSN(hostB)], "OpenDB is retried while it fails (Open, UpdateLag), then once: the DB is kept across Replication retries")
	f.mu.Unlock()
}

// The monitor retries failed members every poll interval, with no
// UpdateLag, and a waiter blocked on the failed member wakes.
func TestDiscoveryRetriesFailedMembers(t *testing.T) {
	f := newFleet(hostA)
	f.set(hostA, Measurement{}, errBoom)
	d := newDisco(t, f, nil, nil, WithInterval(minPeriod), WithStaleAfter(time.Hour), WithMaxWait(0))
	require.NoError(t, d.Open(context.Background()))
	defer d.Close()
	require.True(t, d.IsThrottled())
	done := waiters(context.Background(), d, 20)
	requireBlocked(t, done, "failed member")
	f.set(hostA, lagOf(0), nil)
	requireReturns(t, done, 5*time.Second, "member opened by the monitor's retry")
	assert.False(t, d.IsThrottled())
}

func TestDiscoveryReplicaWithoutHost(t *testing.T) {
	f := newFleet(ReplicaHost{ServerID: 9, Port: 3306}, hostA)
	d := openDisco(t, f, nil)
	assert.Equal(t, []string{"server_id 9", "10.0.0.1:3306"}, d.Replicas())
	assert.True(t, d.IsThrottled())
	assert.Equal(t, "server_id 9 (no host): cannot be watched: listed by the primary without a host: set report_host (and report_port) on that replica so that it can be watched", d.ThrottleReason())

	// Once the replica reports a host it is listed under a new address: the
	// hostless entry is replaced, not kept.
	fixed := ReplicaHost{ServerID: 9, Host: "10.0.0.9", Port: 3306}
	f.setHosts(fixed, hostA)
	require.NoError(t, d.UpdateLag(context.Background()))
	assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.9:3306"}, d.Replicas())
	assert.False(t, d.IsThrottled(), d.ThrottleReason())
}

func TestDiscoveryExclude(t *testing.T) {
	f := newFleet(hostA, hostB)
	f.set(hostB, lagOf(time.Hour), nil)
	d := openDisco(t, f, func(c *DiscoveryConfig) { c.Exclude = []uint32{hostB.ServerID} })
	assert.Equal(t, []string{"10.0.0.1:3306"}, d.Replicas())
	assert.False(t, d.IsThrottled())
}

func TestDiscoveryMembershipChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // time passes on a fake clock
		var logs syncBuffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		f := newFleet(hostA, hostB)
		d := newDisco(t, f, logger, nil, WithStaleAfter(time.Minute), WithInterval(time.Minute))
		require.NoError(t, d.Open(context.Background()))
		defer d.Close()
		require.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306"}, d.Replicas())

		// A new replica is added.
		f.setHosts(hostA, hostB, hostC)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306", "10.0.0.3:3306"}, d.Replicas())

		// A healthy replica vanishes: kept until seen healthy a stale window
		// after it vanished (a crashed one would have gone stale by then).
		f.setHosts(hostA, hostC)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Contains(t, d.Replicas(), "10.0.0.2:3306")
		assert.False(t, d.IsThrottled())
		time.Sleep(time.Minute + time.Second) // past the instant the members poll
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.3:3306"}, d.Replicas())
		assert.EqualValues(t, 1, f.server.closes.Load(), "its DB is closed")

		// A throttling replica vanishes (as a crashed one does): kept, and the
		// reason says it is no longer listed.
		f.set(hostC, lagOf(time.Hour), nil)
		f.setHosts(hostA)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Equal(t, "10.0.0.3:3306 (server_id 4, no longer listed by the primary): replica lag 1h0m0s >= 1s", d.ThrottleReason())
		time.Sleep(time.Hour + time.Second)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.True(t, d.IsThrottled(), "never dropped while it throttles")
		assert.Contains(t, d.Replicas(), "10.0.0.3:3306")

		// It comes back: listed again, and clear once its lag is.
		f.setHosts(hostA, hostC)
		f.set(hostC, lagOf(0), nil)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.False(t, d.IsThrottled(), d.ThrottleReason())
		assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.3:3306"}, d.Replicas())

		// Unlisted again, then seen healthy later: dropped.
		f.setHosts(hostA)
		require.NoError(t, d.UpdateLag(context.Background()))
		time.Sleep(time.Minute + time.Second) // past the instant the members poll
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Equal(t, []string{"10.0.0.1:3306"}, d.Replicas())

		// A replica listed at another address is another member; the old one
		// is dropped at once, whatever its state.
		moved := ReplicaHost{ServerID: hostA.ServerID, Host: hostA.Host, Port: 3307}
		f.set(hostA, lagOf(time.Hour), nil)
		require.NoError(t, d.UpdateLag(context.Background()))
		require.True(t, d.IsThrottled())
		f.setHosts(moved)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.Equal(t, []string{"10.0.0.1:3307"}, d.Replicas())
		assert.False(t, d.IsThrottled(), d.ThrottleReason())
		assert.EqualValues(t, 3, f.server.closes.Load())

		// Every change is logged once.
		out := logs.String()
		for line, n := range map[string]int{
			"replica discovered":                           4, // A, B, C, A at 3307
			"replica gone: no longer":                      2, // B, then C
			"no longer listed by the primary; watching it": 3, // B, C, C again
			"replica listed again":                         1,
			"listed at another address":                    1,
		} {
			assert.Equal(t, n, strings.Count(out, line), "%q in:\n%s", line, out)
		}
	})
}

func TestDiscoveryForgetAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // time passes on a fake clock
		f := newFleet(hostA, hostB)
		f.set(hostB, Measurement{}, errBoom)
		d := openDisco(t, f, func(c *DiscoveryConfig) { c.ForgetAfter = 10 * time.Minute })
		require.True(t, d.IsThrottled())
		f.setHosts(hostA)
		update(t, d)
		time.Sleep(9 * time.Minute)
		update(t, d)
		assert.True(t, d.IsThrottled(), "still within ForgetAfter")
		time.Sleep(time.Minute)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.False(t, d.IsThrottled(), d.ThrottleReason())
		assert.Equal(t, []string{"10.0.0.1:3306"}, d.Replicas())
	})
}

func TestDiscoveryNoReplicas(t *testing.T) {
	var logs syncBuffer
	f := newFleet()
	d := newDisco(t, f, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, d.Open(context.Background()))
	defer d.Close()
	assert.False(t, d.IsThrottled())
	assert.Empty(t, d.Replicas())
	require.NoError(t, d.UpdateLag(context.Background()))
	require.NoError(t, d.UpdateLag(context.Background()))
	assert.Equal(t, 1, strings.Count(logs.String(), "the primary lists no replicas"), logs.String())
	assert.Contains(t, logs.String(), "level=WARN")
	d.BlockWait(context.Background())
}

// The primary cannot be asked: Open fails; later, the membership stands for
// a while, then throttles as stale.
func TestDiscoveryListFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // time passes on a fake clock
		f := newFleet(hostA)
		f.setListErr(errBoom)
		d := newDisco(t, f, nil, nil)
		err := d.Open(context.Background())
		require.ErrorIs(t, err, errBoom)
		assert.Contains(t, err.Error(), "discover replicas")
		assert.False(t, d.IsThrottled())
		assert.ErrorIs(t, d.UpdateLag(context.Background()), ErrNotOpen)

		f.setListErr(nil)
		require.NoError(t, d.Open(context.Background()), "a failed Open may be retried")
		defer d.Close()
		assert.Equal(t, []string{"10.0.0.1:3306"}, d.Replicas())

		f.setListErr(errBoom)
		err = d.UpdateLag(context.Background())
		require.ErrorIs(t, err, errBoom)
		assert.False(t, d.IsThrottled(), "the last membership stands for a while")
		time.Sleep(3*time.Hour + time.Second) // three periods of Every, past the instant the monitor lists
		update(t, d)
		assert.True(t, d.IsThrottled())
		assert.Equal(t, "replica discovery: the primary could not be asked for its replicas for 3h0m1s, so replicas may be unwatched: SHOW REPLICAS: boom", d.ThrottleReason())

		f.setListErr(nil)
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.False(t, d.IsThrottled(), d.ThrottleReason())
	})
}

func TestDiscoveryWaitFollowsMembership(t *testing.T) {
	f := newFleet(hostA)
	d := openDisco(t, f, nil, WithMaxWait(0))
	f.set(hostA, lagOf(time.Minute), nil)
	update(t, d)
	errc := make(chan error, 1)
	go func() { errc <- d.Wait(context.Background()) }()

	f.set(hostB, lagOf(time.Minute), nil)
	f.setHosts(hostA, hostB)
	update(t, d)
	f.set(hostA, lagOf(0), nil)
	update(t, d)
	select {
	case err := <-errc:
		t.Fatalf("returned while the new member lags: %v (%s)", err, d.ThrottleReason())
	case <-time.After(30 * time.Millisecond):
	}
	f.set(hostB, lagOf(0), nil)
	update(t, d)
	select {
	case err := <-errc:
		assert.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("still waiting after every member cleared: " + d.ThrottleReason())
	}
}

// Close while Open is still asking: Open fails with ErrClosed and nothing
// is left behind.
func TestDiscoveryCloseDuringOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(hostA)
		d := newDisco(t, f, nil, nil)
		f.primary.setHang(true) // the listing waits for its context
		errc := make(chan error, 1)
		go func() { errc <- d.Open(context.Background()) }()
		synctest.Wait()
		require.Len(t, f.primary.hung(), 1, "Open is asking")
		require.NoError(t, d.Close())
		assert.ErrorIs(t, <-errc, ErrClosed)
		assert.False(t, d.IsThrottled())
	})
}

func TestDiscoveryHotPathDoesNotAllocate(t *testing.T) {
	f := newFleet(hostA, hostB, hostC)
	d := openDisco(t, f, nil)
	ctx := context.Background()
	require.False(t, d.IsThrottled())
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = d.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { d.BlockWait(ctx) }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = d.Lag() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = d.ThrottleReason() }))
}

// The monitor rediscovers on its own every Every.
func TestDiscoveryRediscoversPeriodically(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // time passes on a fake clock
		f := newFleet(hostA)
		d := openDisco(t, f, func(c *DiscoveryConfig) { c.Every = time.Minute })
		f.set(hostB, lagOf(time.Minute), nil)
		f.setHosts(hostA, hostB)
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		require.Equal(t, []string{"10.0.0.1:3306"}, d.Replicas(), "not asked again before Every")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306"}, d.Replicas(), "asked again at Every")
		require.NoError(t, d.UpdateLag(context.Background()))
		assert.True(t, d.IsThrottled())
	})
}

// TestDiscoveryNotThrottledAsSoonAsCancelReturns: a failed member throttles,
// and IsThrottled is false the moment Open's context is cancelled, not a
// goroutine switch later.
func TestDiscoveryNotThrottledAsSoonAsCancelReturns(t *testing.T) {
	for range 100 {
		f := newFleet(hostA, hostB)
		f.setOpenErr(hostB, errors.New("connection refused"))
		d := newDisco(t, f, nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, d.Open(ctx))
		require.True(t, d.IsThrottled())
		cancel()
		require.False(t, d.IsThrottled())
		require.NoError(t, d.Close())
	}
}

// Callers of UpdateLag queued behind a listing in flight return ErrClosed
// once the Discovery closes; none asks the primary after Close.
func TestDiscoveryUpdateLagAfterCloseListsNoMore(t *testing.T) {
	// Real time: the callers queue on a mutex, which synctest does not
	// count as blocked; nothing here waits for the clock.
	f := newFleet(hostA)
	d := newDisco(t, f, nil, nil)
	// Once hang is set the primary does not answer: a listing says it has
	// started, then waits for its context to end.
	var answered atomic.Int64
	var hang atomic.Bool
	listing := make(chan struct{}, 1)
	f.primary.set(func(q string, args []driver.NamedValue) fakedbResult {
		if hang.Load() {
			select {
			case listing <- struct{}{}:
			default:
			}
			return fakedbResult{hang: true}
		}
		answered.Add(1)
		return f.listing(q, args)
	})
	require.NoError(t, d.Open(context.Background()))
	hang.Store(true)
	const callers = 8
	errs, started := make(chan error, callers), make(chan struct{}, callers)
	for range callers {
		go func() {
			started <- struct{}{}
			errs <- d.UpdateLag(context.Background())
		}()
	}
	for range callers {
		<-started
	}
	select {
	case <-listing: // one listing in flight
	case <-time.After(10 * time.Second): // a guard, not a wait
		t.Fatal("no caller asked the primary")
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second): // a guard, not a wait: Close returns at once
		t.Fatal("Close waited for a listing that its callers should have given up")
	}
	hang.Store(false) // a listing that outlived Close would now answer
	for range callers {
		assert.ErrorIs(t, <-errs, ErrClosed)
	}
	assert.Equal(t, int64(1), answered.Load(), "Open's listing only")
	assert.Len(t, f.primary.hung(), 1, "no listing after Close")
}

// TestDiscoveryLeavesDelayedReplicasOut: a member with a configured delay
// on a channel that counts is listed but left out, logged once, and watched
// again once the delay is removed; IncludeDelayed watches it.
func TestDiscoveryLeavesDelayedReplicasOut(t *testing.T) {
	delayed := Measurement{Lag: time.Hour, Channels: []ChannelLag{{Name: "", Lag: time.Hour, Delay: time.Hour}}}
	var logs syncBuffer
	f := newFleet(hostA, hostB)
	f.set(hostB, delayed, nil)
	d := newDisco(t, f, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, d.Open(context.Background()))
	defer d.Close()
	assert.Equal(t, []string{"10.0.0.1:3306", "10.0.0.2:3306"}, d.Replicas(), "listed")
	assert.Equal(t, map[string]string{"10.0.0.2:3306": "configured delay 1h0m0s (MASTER_DELAY): left out; DiscoveryConfig.IncludeDelayed watches it beyond its delay"}, d.Excluded())
	assert.False(t, d.IsThrottled(), d.ThrottleReason())
	update(t, d)
	update(t, d)
	assert.Equal(t, 1, strings.Count(logs.String(), "replica left out: it has a configured delay"), logs.String())
	assert.False(t, d.IsThrottled(), d.ThrottleReason())

	// A delay on an ignored channel does not count.
	f.set(hostB, Measurement{Channels: []ChannelLag{{Name: ""}, {Name: "old", Delay: time.Hour, Ignored: true}}}, nil)
	update(t, d)
	update(t, d) // the member measured on the first, the Discovery looks on the second
	assert.Nil(t, d.Excluded())
	assert.Equal(t, 1, strings.Count(logs.String(), "replica watched now: its configured delay was removed"), logs.String())

	// Left out, it does not pace the callers either.
	f.set(hostB, delayed, nil)
	paced := openDisco(t, f, nil, WithPacing(0))
	require.Equal(t, map[string]string{"10.0.0.2:3306": "configured delay 1h0m0s (MASTER_DELAY): left out; DiscoveryConfig.IncludeDelayed watches it beyond its delay"}, paced.Excluded())
	paced.pace.mu.Lock()
	assert.Len(t, paced.pace.ctrls, 1, "only the watched member steers")
	paced.pace.mu.Unlock()

	// Included: watched, and throttles on what its source reads.
	in := openDisco(t, f, func(c *DiscoveryConfig) { c.IncludeDelayed = true })
	assert.Nil(t, in.Excluded())
	assert.True(t, in.IsThrottled())
	assert.Equal(t, "10.0.0.2:3306 (server_id 3): replica lag 1h0m0s >= 1s", in.ThrottleReason())
}
