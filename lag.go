package throttler

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LagSource measures replication lag on one server. Implementations are
// stateless or safe for concurrent use; the throttler calls Measure from at
// most one goroutine at a time, with a context bounded by WithQueryTimeout.
//
// An implementation of your own should not leave a session that was denied
// access in db's pool: MySQL and MariaDB fix a session's privileges when it
// logs in, so a pooled session stays denied after the grant is given back.
// The package's sources run each measurement on one *sql.Conn and discard
// it after "access denied" (conn.Raw returning driver.ErrBadConn).
type LagSource interface {
	// Measure reads the server once. A replica whose replication is not
	// running is a successful measurement with NotFlowing set; a server with
	// no replication channel is ErrNotReplica; a measurement that could not
	// be taken is any other error.
	Measure(ctx context.Context, db *sql.DB) (Measurement, error)
	// String names the source in logs and errors.
	String() string
}

// Measurement is one reading of a replica.
type Measurement struct {
	// Lag is the worst lag over the replica's flowing channels that count
	// (WithChannels); with WithLagBeyondDelay, the worst lag beyond each
	// channel's configured delay.
	Lag time.Duration
	// Channel names the channel that Lag (or NotFlowing) is about; "" is
	// the default channel.
	Channel string
	// NotFlowing is empty while replication flows on every channel, and
	// otherwise says why it does not (for example "receiver (IO) thread
	// Connecting: error 2003 ..."). A measurement with NotFlowing set
	// throttles whatever its Lag.
	NotFlowing string
	// Backlog is what the replica has received but not yet applied, where
	// the source can see it (Backlog.Known): ReplicaStatusSource and
	// PerformanceSchemaSource can, HeartbeatSource and AuroraSource cannot.
	// Lag is late (it grows at most one second per second, while the work
	// that causes it is already queued); the backlog is not.
	Backlog Backlog
	// Predicted is the lag the newest received transaction will have when
	// it is applied, from the backlog and the applier's measured rate (0
	// when either is unknown). A Replication throttles on it as it does on
	// Lag, so that a backlog throttles within one measurement of forming.
	Predicted time.Duration
	// GroupReplication is set when the replica is a Group Replication
	// (InnoDB Cluster) member, and nil otherwise.
	GroupReplication *GroupReplicationStatus
	// Channels is every channel the source read, in the source's order
	// (ReplicaStatusSource, PerformanceSchemaSource; nil for the other
	// sources), after any channel named in WithChannels Only that the
	// replica lacks. Ignored channels are here, and only here.
	Channels []ChannelLag

	// channelProblem says what in WithChannels does not fit the replica's
	// channels; the first measurement (Open) refuses it.
	channelProblem string
}

// ChannelLag is one channel's part of a Measurement.
type ChannelLag struct {
	// Name is the channel's name; "" is the default channel.
	Name string
	// Lag is the channel's lag: with WithLagBeyondDelay, beyond its
	// configured delay. Meaningless while NotFlowing is set.
	Lag time.Duration
	// NotFlowing says why the channel's replication does not flow; empty
	// while it does.
	NotFlowing string
	// Delay is the channel's configured delay (MASTER_DELAY, SOURCE_DELAY):
	// SQL_Delay, which ReplicaStatusSource always reads, or DESIRED_DELAY,
	// which PerformanceSchemaSource reads with WithLagBeyondDelay; 0
	// otherwise.
	Delay time.Duration
	// Ignored is set for a channel that does not count: one WithChannels
	// leaves out, or a Group Replication member's recovery channel while
	// the member is ONLINE. It never throttles.
	Ignored bool
}

// Backlog is what a replica has received (in its relay log) but not applied.
// The sources fill Known, Transactions and Bytes; the throttler fills the
// rates and ApplyTime from successive measurements of the same replica.
type Backlog struct {
	// Known is set when the source could compare the received and applied
	// positions. The other fields are meaningless without it.
	Known bool
	// Transactions received but not applied, summed over channels (and
	// GTID domains); -1 when only bytes can be counted (GTIDs off).
	Transactions int64
	// Bytes of the source's binary log received but not applied, summed
	// over channels; -1 when unknown.
	Bytes int64
	// TransactionsPerSecond (or BytesPerSecond when transactions cannot be
	// counted) is the rate the applier was measured to apply while it had
	// work queued; 0 until measured.
	TransactionsPerSecond float64
	BytesPerSecond        float64
	// ApplyTime is the time the applier needs to apply the backlog at its
	// measured rate; 0 when the backlog is empty or the rate unknown.
	ApplyTime time.Duration

	// appliedTransactions and appliedBytes are counters that grow as the
	// applier applies (a sum of applied GTID sequence numbers; a binary log
	// position), for the rates. appliedBytes is -1 when unknown, and is only
	// comparable between two readings of the same binary log file
	// (appliedFile).
	appliedTransactions int64
	appliedBytes        int64
	appliedFile         string
	// bytesExact says Bytes is exact, not an upper bound (Relay_Log_Space).
	bytesExact bool
	// delayed is set when a counted channel has a configured delay
	// (SQL_Delay): its applier waits on the delay, so its pace says
	// nothing of its capacity.
	delayed bool
}

// Flavor is what the server says it is, from @@version and @@version_comment
// (and, on MySQL, @@aurora_version).
type Flavor struct {
	Version        string // @@version, for example "8.0.36" or "10.11.6-MariaDB-0+deb12u1"
	VersionComment string // @@version_comment
	Major, Minor   int
	MariaDB        bool
	// Aurora is set for Amazon Aurora MySQL: by ParseFlavor when the version
	// carries Aurora's engine version ("8.0.mysql_aurora.3.05.2"), by
	// DetectFlavor also when the server has @@aurora_version.
	Aurora bool
}

// DetectFlavor reads the server's version.
//
// Aurora MySQL usually reports the community version in @@version (8.0.32 on
// Aurora 3, 5.7.12 on Aurora 2), so on a server that says neither MariaDB
// nor Aurora it asks @@aurora_version as well: one more round trip, on MySQL
// only, once per Open. A server error there (1193, unknown system variable,
// on anything but Aurora) means "not Aurora"; a failed connection is an
// error.
func DetectFlavor(ctx context.Context, db *sql.DB) (Flavor, error) {
	var version, comment string
	if err := db.QueryRowContext(ctx, "SELECT @@version, @@version_comment").Scan(&version, &comment); err != nil {
		return Flavor{}, fmt.Errorf("read server version: %w", err)
	}
	f, err := ParseFlavor(version, comment)
	if err != nil || f.MariaDB || f.Aurora {
		return f, err
	}
	var aurora sql.NullString
	switch err := db.QueryRowContext(ctx, "SELECT @@aurora_version").Scan(&aurora); {
	case err == nil:
		f.Aurora = aurora.String != ""
	case mysqlErrorNumber(err) != 0:
		// The server answered that it has no such variable: not Aurora.
	default:
		return f, fmt.Errorf("read @@aurora_version: %w", err)
	}
	return f, nil
}

// ParseFlavor interprets @@version and @@version_comment. A version that does
// not start with major.minor in decimal digits is an error.
func ParseFlavor(version, comment string) (Flavor, error) {
	f := Flavor{Version: version, VersionComment: comment}
	f.MariaDB = strings.Contains(strings.ToLower(version+" "+comment), "mariadb")
	f.Aurora = !f.MariaDB && strings.Contains(strings.ToLower(version), "mysql_aurora")
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	minor = strings.TrimRightFunc(minor, func(r rune) bool { return r < '0' || r > '9' })
	// Digits only: Atoi would take a sign, and "-1.-5" is not a version.
	var err1, err2 error
	f.Major, err1 = strconv.Atoi(major)
	f.Minor, err2 = strconv.Atoi(minor)
	if err1 != nil || err2 != nil || !allDigits(major) || !allDigits(minor) {
		f.Major, f.Minor = 0, 0
		return f, fmt.Errorf("cannot parse server version %q: want major.minor in digits", version)
	}
	return f, nil
}

// DefaultLagSource is the source Open chooses when WithLagSource is not given:
// AuroraSource on Aurora MySQL, PerformanceSchemaSource on MySQL 8.0 and later
// (including Percona Server, and Group Replication / InnoDB Cluster members,
// which it recognises by their channels), ReplicaStatusSource on MariaDB and
// older MySQL.
//
// Aurora readers do not replicate the binary log: they read the writer's
// storage volume and lag only in applying its redo to their caches. SHOW
// REPLICA STATUS and performance_schema's replication tables are empty on
// them, so the binlog sources would call every reader "not a replica"; the
// storage-level lag is in information_schema.replica_host_status. An Aurora
// cluster that is itself a binlog replica of an outside source has that
// channel on its writer: pass WithLagSource(PerformanceSchemaSource()) to
// watch it.
func DefaultLagSource(f Flavor) LagSource {
	if f.Aurora {
		return auroraSource{} // AuroraConfig{}: valid, nothing to check
	}
	if !f.MariaDB && f.Major >= 8 {
		return PerformanceSchemaSource()
	}
	return ReplicaStatusSource()
}
