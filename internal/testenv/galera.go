package testenv

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Galera cluster: three MariaDB nodes (galera1..galera3 in the
// topology) on loopback, as plain processes like the pair's servers, with
// Debian's galera-4 provider and rsync state transfers. Measured facts
// behind the settings are in the project's notes/galera.md: 10-12s from
// nothing to three nodes Synced, about 130MB RSS per node.

// Names of the objects the cluster is created with.
const (
	// GaleraDatabase is created on the cluster; the nodes' admin DSNs
	// select it.
	GaleraDatabase = "throttler_galera"
	// GaleraTable has an auto-increment key and a payload column, for
	// tests that write to the cluster.
	GaleraTable = GaleraDatabase + ".writes"

	galeraClusterName = "throttler_test"
	// galeraUser runs the nodes when we are root: rsync SST fails as root
	// (the rsync daemon the donor starts drops to nobody, who cannot write
	// into a root-owned datadir).
	galeraUser = "mysql"
	// galeraFCLimit is gcs.fc_limit's default, which repair restores on a
	// node a test changed.
	galeraFCLimit = 16
)

// GaleraNode is a Galera node's cluster settings, recorded with its server.
type GaleraNode struct {
	GComm          int    `json:"gcomm_port"` // group communication
	IST            int    `json:"ist_port"`   // incremental state transfer receiver
	SST            int    `json:"sst_port"`   // rsync state transfer receiver
	ClusterAddress string `json:"cluster_address"`
	Provider       string `json:"provider"` // libgalera_smm.so
}

// Cluster is the Galera cluster of a state directory: three nodes that Down
// stops, Purge removes and Reset repairs like the pair's servers.
type Cluster struct{ p *Pair }

// galeraSpecs are the topology's Galera nodes, in order.
func galeraSpecs() []spec {
	var out []spec
	for _, sp := range topology {
		if sp.role == roleGalera {
			out = append(out, sp)
		}
	}
	return out
}

// Galera returns the pair's Galera cluster, starting it the first time
// (about 12s): node 1 bootstraps it with the database, root's password and
// the monitoring user, then nodes 2 and 3 join by rsync state transfer, one
// after the other. A recorded cluster is repaired (see Reset) and reused;
// one beyond repair is built again. It returns once every node is Synced,
// ready, in the Primary component and agrees on a view of three.
func (p *Pair) Galera(ctx context.Context) (*Cluster, error) {
	ctx, cancel := withDefaultTimeout(ctx, 2*defaultStartTimeout)
	defer cancel()
	c := &Cluster{p: p}
	if err := p.locked(ctx, false, func() error { return c.ensure(ctx, true) }); err != nil {
		return nil, fmt.Errorf("testenv: galera: %w", err)
	}
	return c, nil
}

// HasGalera reports whether the state file records a Galera cluster; it
// starts nothing (Galera does).
func (p *Pair) HasGalera() bool {
	for _, sp := range galeraSpecs() {
		if _, err := p.record(sp.name); err != nil {
			return false
		}
	}
	return true
}

// GaleraDSNs are the monitoring user on each Galera node, galera1 first;
// nil when the pair has no cluster. It starts nothing (Galera does).
func (p *Pair) GaleraDSNs() []string {
	if !p.HasGalera() {
		return nil
	}
	var out []string
	for _, n := range (&Cluster{p: p}).Nodes() {
		out = append(out, n.DSN())
	}
	return out
}

// Nodes are the cluster's three nodes, galera1 first.
func (c *Cluster) Nodes() []*Node {
	var out []*Node
	for _, sp := range galeraSpecs() {
		out = append(out, c.p.node(sp.name))
	}
	return out
}

// Node is node i, from 1 to 3.
func (c *Cluster) Node(i int) *Node { return c.Nodes()[i-1] }

// ensure repairs a recorded cluster, or builds one when there is none or
// it is beyond repair. The caller holds the dir lock.
func (c *Cluster) ensure(ctx context.Context, held bool) error {
	if c.p.HasGalera() {
		err := c.repair(ctx, held)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// Beyond repair (no node left in a Primary component, a node
		// that cannot rejoin): build it again.
	}
	return c.p.locked(ctx, held, func() error { return c.create(ctx) })
}

// create builds the cluster afresh. On error nothing of it is left running.
func (c *Cluster) create(ctx context.Context) (err error) {
	p := c.p
	specs := galeraSpecs()
	for _, sp := range specs {
		if err := p.node(sp.name).stopLeftovers(); err != nil {
			return err
		}
		p.setRecord(sp.name, nil)
	}
	bins, err := findBinaries()
	if err != nil {
		return err
	}
	if p.Mariadbd != "" {
		bins.mariadbd = p.Mariadbd
	}
	provider, err := ensureGalera(ctx)
	if err != nil {
		return err
	}
	ports, err := freePorts(4 * len(specs))
	if err != nil {
		return err
	}
	k := len(specs)
	var gcomm []string
	for i := range specs {
		gcomm = append(gcomm, "127.0.0.1:"+strconv.Itoa(ports[k+i]))
	}
	servers := make([]Server, k)
	for i, sp := range specs {
		s := newServer(p.Dir, sp)
		s.Port = ports[i]
		s.Galera = &GaleraNode{GComm: ports[k+i], IST: ports[2*k+i], SST: ports[3*k+i],
			ClusterAddress: "gcomm://" + strings.Join(gcomm, ","), Provider: provider}
		servers[i] = s
		if err := initServer(ctx, bins, s, sp); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil { // leave nothing running that no state file points to
			for i := range servers {
				_ = stopServer(servers[i])
				p.setRecord(servers[i].Name, nil)
			}
			_ = writeState(p)
		}
	}()
	for i, sp := range specs {
		s := &servers[i]
		ready, extra := p.adminDSN(*s), []string(nil)
		if sp.galera == 1 {
			ready, extra = dsn("root", "", s.Port, ""), []string{"--wsrep-new-cluster"}
		}
		s.PID, err = startServer(ctx, bins.mariadbd, *s, ready, extra...)
		if err != nil {
			return err
		}
		p.setRecord(sp.name, s)
		if err := writeState(p); err != nil {
			return err
		}
		if err := p.node(sp.name).waitSynced(ctx, ready); err != nil {
			return err
		}
		if sp.galera == 1 {
			if err := p.setUpGalera(ctx, *s); err != nil {
				return err
			}
		}
	}
	return c.waitHealthy(ctx)
}

// setUpGalera secures root and creates the monitoring user and the
// database on the bootstrapped node 1, before anyone joins: the joiners get
// them with the datadir.
func (p *Pair) setUpGalera(ctx context.Context, s Server) error {
	err := withConn(ctx, dsn("root", "", s.Port, ""), func(c *sql.Conn) error {
		return setRootPassword(ctx, c, p.AdminPassword)
	})
	if err != nil {
		return fmt.Errorf("secure root on %s: %w", s.Name, err)
	}
	err = withConn(ctx, p.adminDSN(s), func(c *sql.Conn) error {
		return execAll(ctx, c,
			fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", MonitorUser, p.MonitorPassword),
			grantMonitorStatement,
			"CREATE DATABASE IF NOT EXISTS "+GaleraDatabase,
			"CREATE TABLE IF NOT EXISTS "+GaleraTable+" (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(255) NOT NULL DEFAULT '')",
		)
	})
	if err != nil {
		return fmt.Errorf("set up %s: %w", s.Name, err)
	}
	return nil
}

// repair brings a recorded cluster back to healthy, acting only where
// something differs: every node thawed, a dead or unresponsive node
// restarted to rejoin by IST, wsrep_desync off and gcs.fc_limit at its
// default, and then every node Synced in one view of three. A cluster with
// no node left answering is an error (ensure builds it again).
func (c *Cluster) repair(ctx context.Context, held bool) error {
	return c.p.locked(ctx, held, func() error {
		var dead, alive []*Node
		for _, n := range c.Nodes() {
			s, err := n.server()
			if err != nil {
				return err
			}
			if isOurServer(s) {
				_ = signalProcess(s.PID, sigCont)
			}
			if !isOurServer(s) || ping(ctx, c.p.adminDSN(s), 3*time.Second) != nil {
				dead = append(dead, n)
			} else {
				alive = append(alive, n)
			}
		}
		if len(alive) == 0 {
			return errors.New("no Galera node answers")
		}
		for _, n := range alive {
			if err := n.undoGaleraFaults(ctx); err != nil {
				return err
			}
		}
		for _, n := range dead {
			if err := n.restartGalera(ctx); err != nil {
				return fmt.Errorf("restart %s: %w", n.Name(), err)
			}
		}
		return c.waitHealthy(ctx)
	})
}

// undoGaleraFaults turns off what tests turn on: wsrep_desync and a
// changed flow-control limit.
func (n *Node) undoGaleraFaults(ctx context.Context) error {
	return n.do(ctx, "undo faults", func(ctx context.Context, c *sql.Conn) error {
		var desync int
		var opts string
		if err := c.QueryRowContext(ctx, "SELECT @@wsrep_desync, @@wsrep_provider_options").Scan(&desync, &opts); err != nil {
			return err
		}
		if desync != 0 {
			if _, err := c.ExecContext(ctx, "SET GLOBAL wsrep_desync = OFF"); err != nil {
				return err
			}
		}
		if !strings.Contains(opts, fmt.Sprintf("gcs.fc_limit = %d;", galeraFCLimit)) {
			return execAll(ctx, c, fmt.Sprintf("SET GLOBAL wsrep_provider_options = 'gcs.fc_limit=%d'", galeraFCLimit))
		}
		return nil
	})
}

// restartGalera starts node n again so that it rejoins the running
// cluster: stopped first if it still runs, its last committed position
// recovered from InnoDB (after a kill its grastate.dat says -1, and a
// plain start would cost a full SST) and given as its start position, so
// that a donor sends only what it missed (IST). It returns once the node
// accepts connections, which it does after the state transfer; it may
// still be Joining. The caller holds the dir lock.
func (n *Node) restartGalera(ctx context.Context) error {
	s, err := n.server()
	if err != nil {
		return err
	}
	if err := stopServer(s); err != nil {
		return err
	}
	var extra []string
	if pos, err := galeraRecover(ctx, n.p.Mariadbd, s); err == nil && pos != "" {
		extra = append(extra, "--wsrep-start-position="+pos)
	}
	s.PID, err = startServer(ctx, n.p.Mariadbd, s, n.p.adminDSN(s), extra...)
	if err != nil {
		return err
	}
	n.p.setRecord(s.Name, &s)
	return writeState(n.p)
}

// galeraRecover runs mariadbd --wsrep-recover on s's datadir (it exits by
// itself, in about a second) and returns the "uuid:seqno" it logs.
func galeraRecover(ctx context.Context, mariadbd string, s Server) (string, error) {
	log := filepath.Join(s.Dir, "recover.log")
	_ = os.Remove(log)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mariadbd, "--defaults-file="+s.DefaultsFile, "--wsrep-recover", "--log-error="+log).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("wsrep-recover: %w\n%s", err, tailLines(out, 10))
	}
	f, err := os.Open(log)
	if err != nil {
		return "", err
	}
	defer f.Close()
	const marker = "WSREP: Recovered position: "
	pos := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if _, after, ok := strings.Cut(sc.Text(), marker); ok {
			pos = strings.TrimSpace(after)
		}
	}
	if strings.HasSuffix(pos, ":-1") {
		return "", nil // nothing recovered: let it ask for a full transfer
	}
	return pos, sc.Err()
}

// WaitHealthy waits until every node is Synced, ready, in the Primary
// component with a view of three that all of them agree on (a thawed node
// reports Synced for seconds before it notices it was evicted; its view id
// gives it away), and has an empty receive queue.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		return fmt.Errorf("testenv: galera: %w", err)
	}
	return nil
}

func (c *Cluster) waitHealthy(ctx context.Context) error {
	nodes := c.Nodes()
	var last string
	for {
		ok, views := true, map[string]bool{}
		var states []string
		for _, n := range nodes {
			s, err := n.server()
			if err != nil {
				return err
			}
			if !isOurServer(s) {
				return fmt.Errorf("%s (pid %d) is not running; last log lines:\n%s", s.Name, s.PID, s.logTail())
			}
			st, err := n.wsrepStatus(ctx)
			if err != nil {
				ok = false
				states = append(states, fmt.Sprintf("%s: %v", s.Name, err))
				continue
			}
			healthy := st["wsrep_local_state"] == "4" && st["wsrep_ready"] == "ON" && st["wsrep_cluster_status"] == "Primary" &&
				st["wsrep_cluster_size"] == strconv.Itoa(len(nodes)) && st["wsrep_local_recv_queue"] == "0"
			ok = ok && healthy
			views[st["wsrep_cluster_conf_id"]] = true
			states = append(states, fmt.Sprintf("%s: %s ready=%s %s size=%s view=%s queue=%s", s.Name,
				st["wsrep_local_state_comment"], st["wsrep_ready"], st["wsrep_cluster_status"],
				st["wsrep_cluster_size"], st["wsrep_cluster_conf_id"], st["wsrep_local_recv_queue"]))
		}
		if ok && len(views) == 1 {
			return nil
		}
		last = strings.Join(states, "; ")
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy (%s): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitSynced waits until n is Synced and ready, asking as the account of
// dsn, failing at once if its process exits (a joiner whose state
// transfer failed aborts).
func (n *Node) waitSynced(ctx context.Context, dsn string) error {
	s, err := n.server()
	if err != nil {
		return err
	}
	var last string
	for {
		if !isOurServer(s) {
			return fmt.Errorf("%s (pid %d) exited; last log lines:\n%s", s.Name, s.PID, s.logTail())
		}
		st, err := wsrepStatus(ctx, dsn)
		if err == nil && st["wsrep_local_state"] == "4" && st["wsrep_ready"] == "ON" {
			return nil
		}
		last = fmt.Sprint(err)
		if err == nil {
			last = st["wsrep_local_state_comment"] + " ready=" + st["wsrep_ready"]
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not Synced (%s): %w; last log lines:\n%s", s.Name, last, ctx.Err(), s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WsrepStatus is n's SHOW GLOBAL STATUS LIKE 'wsrep%', by variable name.
func (n *Node) WsrepStatus(ctx context.Context) (map[string]string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultOpTimeout)
	defer cancel()
	st, err := n.wsrepStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: wsrep status: %w", n.spec.name, err)
	}
	return st, nil
}

func (n *Node) wsrepStatus(ctx context.Context) (map[string]string, error) {
	s, err := n.server()
	if err != nil {
		return nil, err
	}
	return wsrepStatus(ctx, n.p.adminDSN(s))
}

func wsrepStatus(ctx context.Context, dsn string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second) // a frozen node answers nothing
	defer cancel()
	st := map[string]string{}
	err := withConn(ctx, dsn, func(c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, "SHOW GLOBAL STATUS LIKE 'wsrep%'")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			st[k] = v
		}
		return rows.Err()
	})
	return st, err
}

// Desync sets wsrep_desync on n: with it ON the node leaves flow control
// (its receive queue may grow without pausing the cluster) and reports
// wsrep_local_state 2, Donor/Desynced. Reset turns it off.
func (n *Node) Desync(ctx context.Context, on bool) error {
	v := map[bool]string{false: "OFF", true: "ON"}[on]
	return n.Exec(ctx, "desync "+v, "SET GLOBAL wsrep_desync = "+v)
}

// SetFlowControlLimit sets n's gcs.fc_limit: n asks the cluster to pause
// once its receive queue passes about limit·√(cluster size). Reset puts
// back the default, 16.
func (n *Node) SetFlowControlLimit(ctx context.Context, limit int) error {
	return n.Exec(ctx, "set gcs.fc_limit", fmt.Sprintf("SET GLOBAL wsrep_provider_options = 'gcs.fc_limit=%d'", limit))
}

// galeraNoKeyTable has no key at all, and galeraNoKeyRows rows: an update
// of all of them is one scan on the node that runs it and, in row-based
// replication, one full scan per row on every node that applies it.
const (
	galeraNoKeyTable = GaleraDatabase + ".nokey"
	galeraNoKeyRows  = 2000
)

// StartCostlyWriter writes from n, until stop is called or ctx ends, write
// sets that cost the other nodes' appliers far more than they cost n: each
// updates every row of a table without a key, which n does in one scan and
// an applier row by row, a full scan each (measured: 20ms on the writer,
// about 0.7s to apply). The other nodes' receive queues grow at once; with
// SetFlowControlLimit(1) on one of them, that node pauses the cluster
// within a second, and keeps it paused most of the time while the writer
// runs (each commit waits while flow control is on). Unlike a CPU quota it
// needs no cgroup. stop waits for the writer and may be called more than
// once.
func (n *Node) StartCostlyWriter(ctx context.Context) (stop func(), err error) {
	s, err := n.server()
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: costly writer: %w", n.spec.name, err)
	}
	err = n.Exec(ctx, "costly writer table",
		"CREATE TABLE IF NOT EXISTS "+galeraNoKeyTable+" (a INT NOT NULL, v INT NOT NULL) ENGINE=InnoDB",
		fmt.Sprintf("INSERT INTO %s SELECT seq, 0 FROM %s.seq_1_to_%d WHERE NOT EXISTS (SELECT 1 FROM %s)", galeraNoKeyTable, GaleraDatabase, galeraNoKeyRows, galeraNoKeyTable))
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", n.p.adminDSN(s))
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: costly writer: %w", n.spec.name, err)
	}
	db.SetMaxOpenConns(1)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer db.Close()
		for wctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(wctx, 30*time.Second)
			if _, err := db.ExecContext(qctx, "UPDATE "+galeraNoKeyTable+" SET v = v + 1"); err != nil && wctx.Err() == nil {
				time.Sleep(50 * time.Millisecond) // a view change: try again
			}
			qcancel()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}, nil
}

// galeraConfig writes a Galera node's own lines of its defaults file (the
// lean settings of notes/galera.md), with shortened group-communication
// timeouts so that a dead or frozen node is evicted within about 3s rather
// than 6.
func (s Server) galeraConfig(w func(format string, args ...any)) {
	g := s.Galera
	w("binlog-format=ROW")
	w("default-storage-engine=InnoDB")
	w("innodb-autoinc-lock-mode=2")
	w("wsrep-on=ON")
	w("wsrep-provider=%s", g.Provider)
	w("wsrep-cluster-name=%s", galeraClusterName)
	w("wsrep-cluster-address=%s", g.ClusterAddress)
	w("wsrep-node-name=%s", s.Name)
	w("wsrep-node-address=127.0.0.1:%d", g.GComm)
	w("wsrep-node-incoming-address=127.0.0.1:%d", s.Port)
	w("wsrep-sst-receive-address=127.0.0.1:%d", g.SST)
	w("wsrep-sst-method=rsync")
	// The keepalive period must stay under a third of the suspect timeout,
	// or the provider refuses to start.
	w(`wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:%d;ist.recv_addr=127.0.0.1:%d;gcache.size=32M;`+
		`evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.install_timeout=PT4S"`, g.GComm, g.IST)
	w("wsrep-slave-threads=2")
}

// galeraOwn gives dir to galeraUser when we are root, so that the node
// (which drops to that user) and its rsync state transfers can write there.
func galeraOwn(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(galeraUser)
	if err != nil {
		return fmt.Errorf("galera nodes run as %s: %w", galeraUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}
