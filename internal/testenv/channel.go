package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Channel drives one replication channel of a replica: the default one
// (Node.Replication, from the replica's source in the topology) or a named
// MariaDB multi-source connection (Node.Channel, made by Node.AddChannel).
//
// Measured on MariaDB 10.11.19 (loopback, 2 cores):
//
//   - SHOW ALL SLAVES STATUS returns one row per channel, the default one
//     ("" Connection_name) first; each row has its own
//     Slave_IO_Running/Slave_SQL_Running, Seconds_Behind_Master, SQL_Delay
//     and Gtid_Slave_Pos. Gtid_Slave_Pos is the replica-wide
//     @@gtid_slave_pos (one entry per domain, for example "0-1-88,1-4-30"),
//     which is why the second source writes in its own gtid_domain_id. The
//     monitoring user's SLAVE MONITOR covers SHOW ALL SLAVES STATUS.
//   - Every per-channel statement takes the name (STOP SLAVE 'east'
//     SQL_THREAD, CHANGE MASTER 'east' TO MASTER_DELAY=5); unnamed ones act
//     on the default channel only. SHOW SLAVE 'nope' STATUS is Error 1617.
//     MASTER_DELAY is per channel and needs both of its threads stopped.
//   - With MASTER_DELAY=5 on "east" and both sources writing every 100ms,
//     east's Seconds_Behind_Master read 1..5 at one-second steps and held at
//     5 while the default row stayed at 0. A stopped thread shows No and
//     Seconds_Behind_Master NULL on its channel only. A killed source: the
//     channel's IO thread "Connecting" (Last_IO_Errno 2013 or 2003),
//     reconnecting within about 0.9s of its restart (MASTER_CONNECT_RETRY=1).
type Channel struct {
	n    *Node
	name string // "" for the default channel
}

// Replication is n's default channel.
func (n *Node) Replication() *Channel { return &Channel{n: n} }

// Channel is n's named channel name; Node.AddChannel creates it.
func (n *Node) Channel(name string) *Channel { return &Channel{n: n, name: name} }

// channelName is what MariaDB accepts as a connection name here: the named
// channels of this package are plain identifiers.
var channelName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

func checkChannelName(name string) error {
	if !channelName.MatchString(name) {
		return fmt.Errorf("connection name %q: want 1-64 letters, digits or underscores (the default channel \"\" is Node.Replication)", name)
	}
	return nil
}

// quoteChannel is the name as it goes into a per-channel statement, with a
// trailing space; nothing for the default channel.
func quoteChannel(name string) string {
	if name == "" {
		return ""
	}
	return "'" + name + "' "
}

// stmt is verb for this channel: stmt("STOP SLAVE", "SQL_THREAD") is
// "STOP SLAVE 'east' SQL_THREAD" on "east", "STOP SLAVE SQL_THREAD" on the
// default one.
func (c *Channel) stmt(verb, rest string) string {
	return strings.TrimSpace(verb + " " + quoteChannel(c.name) + rest)
}

// Name is the channel's name, "" for the default.
func (c *Channel) Name() string { return c.name }

func (c *Channel) label(what string) string {
	if c.name == "" {
		return c.n.spec.name + ": " + what
	}
	return fmt.Sprintf("%s: channel %q: %s", c.n.spec.name, c.name, what)
}

// Replication threads that exec waits for after its statements.
const (
	noThread    = ""
	ioThread    = "Slave_IO_Running"
	sqlThread   = "Slave_SQL_Running"
	bothThreads = "both"
)

// exec runs statements on the replica as admin, bounded by ctx or
// defaultOpTimeout, then waits until the thread(s) named by wait report Yes:
// START SLAVE returns while the IO thread is still "Preparing" or
// "Connecting", and callers want a settled state to assert on.
func (c *Channel) exec(ctx context.Context, what, wait string, stmts ...string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	var err error
	if c.name != "" {
		err = checkChannelName(c.name)
	}
	if err == nil {
		err = c.n.admin(ctx, func(ctx context.Context, conn *sql.Conn) error { return execAll(ctx, conn, stmts...) })
	}
	if err == nil && wait != noThread {
		err = c.waitThreads(ctx, wait)
	}
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", c.label(what), err)
	}
	return nil
}

// SetDelay makes the channel apply each transaction d after its source
// committed it (MASTER_DELAY). MariaDB only accepts the change with both of
// the channel's threads stopped, so they are stopped and started again; it
// returns once both run. The delay has whole-second resolution (d is rounded
// up, so a non-zero d never turns into none), and MariaDB counts it from the
// event's whole-second timestamp: a write committed late in its second
// appears up to 1s sooner than d.
func (c *Channel) SetDelay(ctx context.Context, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("testenv: %s: negative delay %v", c.label("set delay"), d)
	}
	secs := int64((d + time.Second - 1) / time.Second)
	return c.exec(ctx, fmt.Sprintf("set delay %ds", secs), bothThreads, c.delayStatements(secs)...)
}

func (c *Channel) delayStatements(secs int64) []string {
	return []string{c.stmt("STOP SLAVE", ""), c.stmt("CHANGE MASTER", fmt.Sprintf("TO MASTER_DELAY=%d", secs)), c.stmt("START SLAVE", "")}
}

// StopSQLThread stops the channel's applier; its IO thread keeps fetching,
// so the backlog grows while the source writes.
func (c *Channel) StopSQLThread(ctx context.Context) error {
	return c.exec(ctx, "stop SQL thread", noThread, c.stmt("STOP SLAVE", "SQL_THREAD"))
}

// StartSQLThread starts the channel's applier again.
func (c *Channel) StartSQLThread(ctx context.Context) error {
	return c.exec(ctx, "start SQL thread", sqlThread, c.stmt("START SLAVE", "SQL_THREAD"))
}

// StopIOThread disconnects the channel from its source; the replica applies
// what it already fetched and then falls silently behind. The source stops
// listing the replica in SHOW SLAVE HOSTS when it next sends it an event (at
// once while it writes).
func (c *Channel) StopIOThread(ctx context.Context) error {
	return c.exec(ctx, "stop IO thread", noThread, c.stmt("STOP SLAVE", "IO_THREAD"))
}

// StartIOThread reconnects the channel to its source.
func (c *Channel) StartIOThread(ctx context.Context) error {
	return c.exec(ctx, "start IO thread", ioThread, c.stmt("START SLAVE", "IO_THREAD"))
}

// Status is the channel's SHOW SLAVE STATUS row by column name (NULL
// columns are absent), or nil when the default channel is not configured.
func (c *Channel) Status(ctx context.Context) (map[string]string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	st, err := c.status(ctx)
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: %w", c.label("status"), err)
	}
	return st, nil
}

func (c *Channel) status(ctx context.Context) (map[string]string, error) {
	if c.name != "" {
		if err := checkChannelName(c.name); err != nil {
			return nil, err
		}
	}
	var st map[string]string
	err := c.n.admin(ctx, func(ctx context.Context, conn *sql.Conn) error {
		var err error
		st, err = queryStatus(ctx, conn, c.stmt("SHOW SLAVE", "STATUS"))
		return err
	})
	return st, err
}

// waitThreads polls until the named thread(s) of the channel report Yes. A
// thread that stopped on an error it will not get over fails at once
// instead of timing out.
func (c *Channel) waitThreads(ctx context.Context, which string) error {
	var last map[string]string
	for {
		var err error
		last, err = c.status(ctx)
		if err == nil && last != nil {
			io, sqlRunning := last[ioThread] == "Yes", last[sqlThread] == "Yes"
			switch {
			case which == ioThread && io, which == sqlThread && sqlRunning, io && sqlRunning:
				return nil
			case last["Last_SQL_Errno"] != "" && last["Last_SQL_Errno"] != "0" && !sqlRunning:
				return fmt.Errorf("SQL thread stopped on an error (%s)", summarize(last, nil))
			case last["Last_IO_Errno"] == "1236":
				// The source refused our position: retrying will not help.
				return fmt.Errorf("IO thread stopped on an error (%s)", summarize(last, nil))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replication threads not running (%s): %w", summarize(last, err), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitCaughtUp waits until the replica has applied everything the channel's
// source has binlogged so far (MASTER_GTID_WAIT on the source's
// gtid_binlog_pos), within ctx or defaultOpTimeout.
func (c *Channel) WaitCaughtUp(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	if err := c.waitCaughtUp(ctx); err != nil {
		return fmt.Errorf("testenv: %s: %w", c.label("wait caught up"), err)
	}
	return nil
}

func (c *Channel) waitCaughtUp(ctx context.Context) error {
	src, err := c.source(ctx)
	if err != nil {
		return err
	}
	pos, err := src.BinlogPos(ctx)
	if err != nil {
		return fmt.Errorf("read the source's position: %w", err)
	}
	if pos == "" {
		return nil
	}
	// Bound the server-side wait by our deadline, so that giving up here
	// also ends the query there.
	deadline, _ := ctx.Deadline()
	wait := max(time.Until(deadline)-100*time.Millisecond, 100*time.Millisecond)
	var res sql.NullInt64
	err = c.n.admin(ctx, func(ctx context.Context, conn *sql.Conn) error {
		return conn.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos, wait.Seconds()).Scan(&res)
	})
	if err == nil && (!res.Valid || res.Int64 != 0) {
		err = fmt.Errorf("not caught up after %.1fs", wait.Seconds())
	}
	if err != nil {
		// The status gets its own short timeout: ctx is typically spent.
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		st, serr := c.status(sctx)
		return fmt.Errorf("to %s: %w (%s)", pos, err, summarize(st, serr))
	}
	return nil
}

// source is the server the channel replicates from: the topology's for the
// default channel, the recorded server on its Master_Port for a named one.
func (c *Channel) source(ctx context.Context) (*Node, error) {
	if c.name == "" {
		return c.n.p.node(c.n.spec.source), nil
	}
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range c.n.p.Servers() {
		if strconv.Itoa(s.Port) == st["Master_Port"] {
			return c.n.p.node(s.Name), nil
		}
	}
	return nil, fmt.Errorf("no server of the pair on the channel's port %s", st["Master_Port"])
}

// AddChannel makes replica n also replicate from src as the MariaDB
// multi-source channel name (CHANGE MASTER 'name' TO ...,
// MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE 'name'),
// replacing a channel of that name if there is one, and returns once both of
// its threads run and it has applied everything src binlogged. The default
// channel is untouched. Reset removes every named channel again.
func (n *Node) AddChannel(ctx context.Context, name string, src *Node) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	c := n.Channel(name)
	err := checkChannelName(name)
	var s Server
	if err == nil && (src == nil || src.p != n.p) {
		err = fmt.Errorf("the source is not this pair's (use SecondSource)")
	}
	if err == nil {
		s, err = src.server()
	}
	if err == nil {
		err = n.admin(ctx, func(ctx context.Context, conn *sql.Conn) error {
			if err := removeChannel(ctx, conn, name); err != nil {
				return err
			}
			return execAll(ctx, conn, n.p.changeMaster(name, s), c.stmt("START SLAVE", ""))
		})
	}
	if err == nil {
		err = c.waitThreads(ctx, bothThreads)
	}
	if err == nil {
		err = c.waitCaughtUp(ctx)
	}
	if err != nil {
		return fmt.Errorf("testenv: %s: add channel %q: %w", n.spec.name, name, err)
	}
	return nil
}

// RemoveChannel stops and forgets the named channel (STOP SLAVE 'name';
// RESET SLAVE 'name' ALL). Removing a channel that does not exist is not an
// error.
func (n *Node) RemoveChannel(ctx context.Context, name string) error {
	err := checkChannelName(name)
	if err == nil {
		err = n.do(ctx, fmt.Sprintf("remove channel %q", name), func(ctx context.Context, conn *sql.Conn) error {
			return removeChannel(ctx, conn, name)
		})
	}
	return err
}

// removeChannel removes the named channel if it exists.
func removeChannel(ctx context.Context, conn *sql.Conn, name string) error {
	names, err := namedChannels(ctx, conn)
	if err != nil {
		return err
	}
	for _, x := range names {
		if x == name {
			c := Channel{name: name}
			return execAll(ctx, conn, c.stmt("STOP SLAVE", ""), c.stmt("RESET SLAVE", "ALL"))
		}
	}
	return nil
}

// AllChannelsStatus is n's SHOW ALL SLAVES STATUS: one row per channel, the
// default one ("" Connection_name) first.
func (n *Node) AllChannelsStatus(ctx context.Context) ([]map[string]string, error) {
	var rows []map[string]string
	err := n.do(ctx, "all channels status", func(ctx context.Context, conn *sql.Conn) error {
		var err error
		rows, err = queryStatusRows(ctx, conn, "SHOW ALL SLAVES STATUS")
		return err
	})
	return rows, err
}

// namedChannels lists the replica's channels other than the default.
func namedChannels(ctx context.Context, conn *sql.Conn) ([]string, error) {
	rows, err := queryStatusRows(ctx, conn, "SHOW ALL SLAVES STATUS")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range rows {
		if x := r["Connection_name"]; x != "" {
			names = append(names, x)
		}
	}
	return names, nil
}

// removeNamedChannels removes every named channel on conn's replica.
func removeNamedChannels(ctx context.Context, conn *sql.Conn) error {
	names, err := namedChannels(ctx, conn)
	for _, x := range names {
		if err == nil {
			err = removeChannel(ctx, conn, x)
		}
	}
	return err
}

// forgetDomain makes replica n forget what it replicated from src's GTID
// domain: its entry in the shared gtid_slave_pos and src's database. A
// newly created source starts its binlog at sequence 1 again; a replica
// still asking for a later position would be refused (Error 1236) and, were
// the position simply dropped, would replay the source's whole binlog over
// rows it already has. SET GLOBAL gtid_slave_pos needs every channel
// stopped: the named ones are removed, the default one restarted around it.
//
// An entry that stays is harmless otherwise (measured): RESET SLAVE 'east'
// ALL keeps domain 1 in gtid_slave_pos, and the default channel still
// reconnects to the primary, which has never logged domain 1, without error
// (gtid_strict_mode is OFF, the default); the primary ignores the domain.
func (n *Node) forgetDomain(ctx context.Context, src spec) error {
	return n.admin(ctx, func(ctx context.Context, conn *sql.Conn) error {
		var pos string
		if err := conn.QueryRowContext(ctx, "SELECT @@gtid_slave_pos").Scan(&pos); err != nil {
			return err
		}
		var keep []string
		prefix := fmt.Sprintf("%d-", src.domainID)
		found := false
		for g := range strings.SplitSeq(pos, ",") {
			g = strings.TrimSpace(g)
			switch {
			case g == "":
			case strings.HasPrefix(g, prefix):
				found = true
			default:
				keep = append(keep, g)
			}
		}
		if !found {
			return nil
		}
		if err := removeNamedChannels(ctx, conn); err != nil {
			return err
		}
		return execAll(ctx, conn,
			"STOP SLAVE",
			"SET GLOBAL gtid_slave_pos = '"+strings.Join(keep, ",")+"'",
			"START SLAVE",
			"SET SESSION sql_log_bin = 0",
			"DROP DATABASE IF EXISTS "+src.database,
		)
	})
}

// queryStatus runs a SHOW ... STATUS statement and returns its first row,
// nil when there is none.
func queryStatus(ctx context.Context, conn *sql.Conn, stmt string) (map[string]string, error) {
	all, err := queryStatusRows(ctx, conn, stmt)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	return all[0], nil
}

// queryStatusRows runs a SHOW ... STATUS statement and returns its rows by
// column name, NULL columns absent.
func queryStatusRows(ctx context.Context, conn *sql.Conn, stmt string) ([]map[string]string, error) {
	rows, err := conn.QueryContext(ctx, stmt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.ToLower(stmt), err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		st := make(map[string]string, len(cols))
		for i, col := range cols {
			if vals[i].Valid {
				st[col] = vals[i].String
			}
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func summarize(st map[string]string, err error) string {
	if err != nil {
		return "status unavailable: " + err.Error()
	}
	if st == nil {
		return "replication not configured"
	}
	parts := []string{
		"IO=" + st[ioThread],
		"SQL=" + st[sqlThread],
		"delay=" + st["SQL_Delay"],
	}
	for _, k := range []string{"Last_IO_Error", "Last_SQL_Error"} {
		if st[k] != "" {
			parts = append(parts, k+"="+st[k])
		}
	}
	return strings.Join(parts, " ")
}
