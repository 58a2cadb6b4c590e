package throttler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"text/template"

	"github.com/go-sql-driver/mysql"
)

// ReplicaHost is one replica as the primary lists it; DSNTemplate renders
// from it.
type ReplicaHost struct {
	ServerID uint32
	Host     string // report_host; "" when the replica does not report one (MySQL)
	Port     int    // report_port, which defaults to the replica's port
}

// Addr is Host and Port joined for a DSN ("[::1]:3306" for IPv6).
func (h ReplicaHost) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// name is how logs and Replicas name the replica.
func (h ReplicaHost) name() string {
	if h.Host == "" {
		return fmt.Sprintf("server_id %d", h.ServerID)
	}
	return h.Addr()
}

// discoveryTemplate parses the DSN template and renders it for sample
// replicas, so that a typo fails at construction rather than as a failed
// member of every replica at Open. The samples differ from the first only in
// the host, or only in the port: a DSN that does not change with both would
// connect every member to one server (a template that varies with
// {{.ServerID}} alone is different per replica, yet watches one host).
func discoveryTemplate(text string, mysqlDSN bool) (*template.Template, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New(`DiscoveryConfig.DSNTemplate is empty: give one such as "user:password@tcp({{.Host}}:{{.Port}})/?timeout=2s"`)
	}
	tmpl, err := template.New("DSNTemplate").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate does not parse: %w", err)
	}
	samples := []ReplicaHost{
		{ServerID: 101, Host: "replica-a.example", Port: 3306},
		{ServerID: 101, Host: "replica-b.example", Port: 3306}, // another host only
		{ServerID: 101, Host: "replica-a.example", Port: 3307}, // another port only
	}
	var dsns []string
	for _, h := range samples {
		dsn, err := renderDSN(tmpl, h)
		if err != nil {
			return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate does not render for a sample replica %s (server_id %d): %w", h.Addr(), h.ServerID, err)
		}
		if mysqlDSN {
			if _, err := mysql.ParseDSN(dsn); err != nil {
				return nil, fmt.Errorf("DiscoveryConfig.DSNTemplate renders a DSN the mysql driver rejects for a sample replica %s: %w", h.Addr(), err)
			}
		}
		dsns = append(dsns, dsn)
	}
	switch {
	case dsns[0] == dsns[1] && dsns[0] == dsns[2]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate renders the same host and port for every replica: use {{.Host}} and {{.Port}} (or {{.Addr}})")
	case dsns[0] == dsns[1]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate does not change with the replica's host: every member would watch one server: use {{.Host}} (or {{.Addr}})")
	case dsns[0] == dsns[2]:
		return nil, errors.New("DiscoveryConfig.DSNTemplate does not change with the replica's port: replicas on one host would be watched as one: use {{.Port}} (or {{.Addr}})")
	}
	return tmpl, nil
}

func renderDSN(tmpl *template.Template, h ReplicaHost) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, h); err != nil {
		return "", err
	}
	if strings.TrimSpace(b.String()) == "" {
		return "", errors.New("the DSN is empty")
	}
	return b.String(), nil
}

// discoveryStatements are tried in order until one parses: MySQL 8.0.22's
// spelling, then the one MariaDB and older MySQL know. (MariaDB 10.5.1+ also
// parses SHOW REPLICA HOSTS, a synonym of SHOW SLAVE HOSTS.)
var discoveryStatements = []string{"SHOW REPLICAS", "SHOW SLAVE HOSTS"}

// showReplicas asks the primary for its replicas, within the query timeout.
//
// What the primary lists, measured on MariaDB 10.11: one row per replica
// whose receiver (IO) thread is connected, with columns Server_id, Host,
// Port, Master_id. Host is the replica's report_host or, when it has none,
// the address its connection comes from (MariaDB 10.5.1+; MySQL and older
// MariaDB leave Host empty). Port is report_port, which defaults to the
// replica's own port. A replica whose IO thread stops, or that crashes, is
// unlisted when the primary next sends it something (at once while the
// primary writes); a frozen replica or one whose applier (SQL) thread
// stopped stays listed.
func (d *Discovery) showReplicas(ctx context.Context) ([]ReplicaHost, error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.queryTimeout)
	defer cancel()
	return onSession(ctx, d.primary, d.listOn)
}

func (d *Discovery) listOn(ctx context.Context, primary querier) ([]ReplicaHost, error) {
	stmt, rows, err := d.stmts.queryRows(ctx, primary)
	if err != nil {
		return nil, discoveryListError(stmt, err)
	}
	hosts, err := parseReplicaHosts(rows)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stmt, err)
	}
	return hosts, nil
}

func discoveryListError(stmt string, err error) error {
	if mysqlErrorNumber(err) == erSpecificAccessDenied {
		return fmt.Errorf("%s: %w: grant REPLICATION MASTER ADMIN (MariaDB 10.5.2+) or REPLICATION SLAVE (MySQL) to the user the Discovery asks the primary as: %w", stmt, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s: %w", stmt, err)
}

// parseReplicaHosts reads SHOW REPLICAS / SHOW SLAVE HOSTS rows. It does no
// I/O, so recorded outputs test it.
func parseReplicaHosts(rows []statusRow) ([]ReplicaHost, error) {
	out := make([]ReplicaHost, 0, len(rows))
	for _, r := range rows {
		id, ok1 := r.first("Server_Id", "Server_id")
		host, ok2 := r.first("Host")
		port, ok3 := r.first("Port")
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("unrecognised replica list: no Server_Id, Host or Port column among %d columns", len(r))
		}
		sid, err := strconv.ParseUint(id.String, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("Server_Id %q is not a server id", id.String)
		}
		h := ReplicaHost{ServerID: uint32(sid), Host: host.String}
		if port.Valid && port.String != "" {
			p, err := strconv.Atoi(port.String)
			if err != nil || p < 0 || p > 65535 {
				return nil, fmt.Errorf("server_id %d: Port %q is not a port", sid, port.String)
			}
			h.Port = p
		}
		out = append(out, h)
	}
	return out, nil
}
