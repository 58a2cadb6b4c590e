package throttler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// replicaKey identifies a member: a replica that comes back at another
// address is another member (and the old one is dropped as replaced).
type replicaKey struct {
	serverID uint32
	host     string
	port     int
}

// discoveryMember is one replica the Discovery watches or tries to. Its
// fields are guarded by Discovery.opMu; the hot path reads snapshots.
type discoveryMember struct {
	host     ReplicaHost
	db       *sql.DB      // nil until opened
	r        *Replication // nil until built
	open     bool         // r is open
	err      error        // why it cannot be watched; nil when open
	warned   bool         // the current failure has been logged
	excluded string       // why it is left out (a configured delay); "" while it counts
	vanished time.Time    // when the primary stopped listing it; zero while listed
}

func (m *discoveryMember) label() string {
	s := m.host.name() + " (server_id " + strconv.FormatUint(uint64(m.host.ServerID), 10)
	if m.host.Host == "" {
		s = "server_id " + strconv.FormatUint(uint64(m.host.ServerID), 10) + " (no host"
	}
	if !m.vanished.IsZero() {
		s += ", no longer listed by the primary"
	}
	return s + ")"
}

// errNoHost is a member listed without a host: nothing to connect to.
var errNoHost = errors.New("listed by the primary without a host: set report_host (and report_port) on that replica so that it can be watched")

// openMembers lists the replicas and opens a member for each.
func (d *Discovery) openMembers(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	hosts, err := d.showReplicas(ctx)
	if err != nil {
		return fmt.Errorf("discover replicas: %w", err)
	}
	now := time.Now()
	d.lastListed, d.listErr, d.listStale = now, nil, false
	d.reconcile(ctx, hosts, now)
	return nil
}

// rediscover lists the replicas again and reconciles the members: new ones
// opened, vanished ones dropped (see Discovery), failed ones retried. lctx
// bounds the listing, mctx the members' lives. A caller that waited for a
// listing in flight shares it (its error, if any) rather than asking the
// primary again; once mctx ends it lists no more and returns ErrClosed.
func (d *Discovery) rediscover(lctx, mctx context.Context) error {
	seen := d.listings.Load()
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if mctx.Err() != nil {
		return ErrClosed
	}
	if d.listings.Load() != seen {
		return d.listErr
	}
	hosts, err := d.showReplicas(lctx)
	if lctx.Err() != nil || mctx.Err() != nil {
		return err // stopping, or the caller gave up: not the primary's fault
	}
	d.listings.Add(1)
	now := time.Now()
	if err != nil {
		if d.listErr == nil {
			d.log.Warn("throttler: cannot ask the primary for its replicas; keeping the last membership", "error", err)
		}
		d.listErr = err
		if !d.listStale && now.Sub(d.lastListed) >= satMul(d.cfg.Every, discoveryStaleListings) {
			d.listStale = true
			d.log.Warn("throttler: replica list stale: throttling until the primary can be asked again", "error", err)
		}
		d.retryLocked(mctx)
	} else {
		if d.listErr != nil {
			d.log.Info("throttler: the primary lists its replicas again")
		}
		d.lastListed, d.listErr, d.listStale = now, nil, false
		d.reconcile(mctx, hosts, now)
	}
	d.publish()
	return err
}

// retryFailed tries again to open every failed member.
func (d *Discovery) retryFailed(mctx context.Context) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if mctx.Err() != nil {
		return
	}
	if d.retryLocked(mctx) > 0 {
		d.publish()
	}
}

// retryLocked retries the failed members and says how many it tried.
func (d *Discovery) retryLocked(mctx context.Context) int {
	var failed []*discoveryMember
	for _, m := range d.members {
		if !m.open {
			failed = append(failed, m)
		}
	}
	d.openAll(mctx, failed)
	return len(failed)
}

// reconcile brings the members in line with a successful listing. The
// caller holds opMu.
func (d *Discovery) reconcile(mctx context.Context, hosts []ReplicaHost, now time.Time) {
	listed := make(map[replicaKey]bool, len(hosts))
	listedIDs := make(map[uint32]bool, len(hosts))
	var toOpen, toClose []*discoveryMember
	for _, h := range hosts {
		if slices.Contains(d.cfg.Exclude, h.ServerID) {
			continue
		}
		k := replicaKey{h.ServerID, h.Host, h.Port}
		if listed[k] {
			continue
		}
		listed[k], listedIDs[h.ServerID] = true, true
		m, ok := d.members[k]
		switch {
		case !ok:
			m = &discoveryMember{host: h}
			d.members[k] = m
			toOpen = append(toOpen, m)
		case !m.vanished.IsZero():
			m.vanished = time.Time{}
			d.log.Info("throttler: replica listed again", "replica", m.label())
		}
		if ok && !m.open {
			toOpen = append(toOpen, m)
		}
	}
	for k, m := range d.members {
		if listed[k] {
			continue
		}
		justVanished := m.vanished.IsZero()
		if justVanished {
			m.vanished = now
		}
		gone := now.Sub(m.vanished)
		healthy := m.open && !m.r.IsThrottled()
		switch {
		case listedIDs[m.host.ServerID]:
			d.log.Info("throttler: replica gone: listed at another address now", "replica", m.label())
		case healthy && gone >= d.o.staleAfter:
			// Seen healthy well after it vanished: it replicates from
			// elsewhere now, or it was rebuilt. Not ours to wait for.
			d.log.Info("throttler: replica gone: no longer listed by the primary", "replica", m.label())
		case d.cfg.ForgetAfter > 0 && gone >= d.cfg.ForgetAfter:
			d.log.Warn("throttler: replica forgotten: unlisted and not seen healthy for DiscoveryConfig.ForgetAfter", "replica", m.label(), "unlisted_for", gone.Round(time.Second))
		default:
			if justVanished {
				d.log.Warn("throttler: replica no longer listed by the primary; watching it until it is seen healthy (a crashed replica is unlisted too)", "replica", m.label())
			}
			if !m.open {
				toOpen = append(toOpen, m)
			}
			continue
		}
		delete(d.members, k)
		toClose = append(toClose, m)
	}
	var wg sync.WaitGroup
	wg.Go(func() { d.openAll(mctx, toOpen) })
	for _, m := range toClose {
		wg.Go(m.close)
	}
	wg.Wait()
	if len(d.members) == 0 && !d.warnedEmpty {
		d.log.Warn("throttler: the primary lists no replicas: nothing to wait for, not throttled")
	}
	d.warnedEmpty = len(d.members) == 0
}

// openAll opens members concurrently and logs each one's change.
func (d *Discovery) openAll(mctx context.Context, ms []*discoveryMember) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { d.openMember(mctx, m) })
	}
	wg.Wait()
	for _, m := range ms {
		switch {
		case m.open && m.warned:
			m.warned = false
			d.log.Info("throttler: replica watched now", "replica", m.label())
		case m.open:
			d.log.Info("throttler: replica discovered", "replica", m.label())
		case !m.warned:
			m.warned = true
			d.log.Warn("throttler: replica cannot be watched: throttling until it can", "replica", m.label(), "error", m.err)
		}
	}
}

// openMember builds what the member lacks and opens its Replication, whose
// monitor then lives as long as mctx.
func (d *Discovery) openMember(mctx context.Context, m *discoveryMember) {
	if m.open {
		return
	}
	if m.host.Host == "" {
		m.err = errNoHost
		return
	}
	if m.host.Port == 0 {
		m.err = errors.New("listed by the primary without a port: set report_port on that replica")
		return
	}
	if m.db == nil {
		dsn, err := renderDSN(d.tmpl, m.host)
		if err != nil {
			m.err = fmt.Errorf("DiscoveryConfig.DSNTemplate: %w", err)
			return
		}
		db, err := d.cfg.OpenDB(dsn)
		if err == nil && db == nil {
			err = errors.New("DiscoveryConfig.OpenDB returned a nil *sql.DB")
		}
		if err != nil {
			m.err = fmt.Errorf("open its *sql.DB: %w", err)
			return
		}
		m.db = db
	}
	if m.r == nil {
		opts := append(d.opts, WithName(m.host.name()))
		r, err := NewReplicationThrottler(m.db, d.Tolerance(), d.baseLog, opts...)
		if err != nil {
			m.err = err
			return
		}
		r.poll.Gate().Watch(d.refresh)
		m.r = r
	}
	if err := m.r.Open(mctx); err != nil {
		m.err = err
		return
	}
	m.open, m.err = true, nil
}

// close stops the member's monitor and closes the DB the Discovery opened.
func (m *discoveryMember) close() {
	if m.r != nil {
		_ = m.r.Close()
	}
	if m.db != nil {
		_ = m.db.Close()
	}
}

// publish swaps in a snapshot of the members. The caller holds opMu.
func (d *Discovery) publish() {
	keys := make([]replicaKey, 0, len(d.members))
	for k := range d.members {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b replicaKey) int {
		if c := strings.Compare(a.host, b.host); c != 0 {
			return c
		}
		if a.port != b.port {
			return a.port - b.port
		}
		return int(a.serverID) - int(b.serverID)
	})
	s := &discoverySet{}
	for _, k := range keys {
		m := d.members[k]
		s.names = append(s.names, m.host.name())
		if m.open && d.exclude(m) {
			s.excluded = append(s.excluded, excludedMember{m.host.name(), m.excluded, m.r})
			continue
		}
		if m.open {
			s.watched = append(s.watched, m.r)
			s.entries = append(s.entries, discoveryEntry{label: m.label(), name: m.host.name(), r: m.r})
			continue
		}
		s.failed = true
		// Replication.Open's errors start with "throttler: open: ".
		why := strings.TrimPrefix(m.err.Error(), "throttler: open: ")
		s.entries = append(s.entries, discoveryEntry{label: m.label(), name: m.host.name(), failure: "cannot be watched: " + why})
	}
	if d.listStale {
		s.failed = true
		s.entries = append(s.entries, discoveryEntry{label: d.name, always: true, failure: fmt.Sprintf(
			"the primary could not be asked for its replicas for %v, so replicas may be unwatched: %v",
			time.Since(d.lastListed).Round(time.Second), d.listErr)})
	}

	defer d.syncTolerance(s) // once s is published: see SetTolerance
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	old := d.cur.Load()
	if d.stopped || old != nil && old.sameAs(s) {
		return // nothing to publish: no waiter needs waking
	}
	// A failed snapshot throttles before waiters see it, and a clear one
	// wakes them after, so that a waiter never waits on a stale verdict.
	if s.failed {
		d.judge(s)
		d.cur.Store(s)
	} else {
		d.cur.Store(s)
		d.judge(s)
	}
}

// refresh publishes the Discovery's state after a member's changed.
func (d *Discovery) refresh() {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	if s := d.cur.Load(); s != nil && !d.stopped {
		d.judge(s)
	}
}

// judge publishes snapshot s's state to the gate: throttled while a member
// cannot be watched or any watched member throttles (more than the set
// tolerates, skips aside). Caller holds pubMu.
func (d *Discovery) judge(s *discoverySet) {
	kind, reason, _ := s.verdict(d.rule)
	d.gate.Set(reason != "", kind, reason)
}

// sameAs reports whether t shows the same members in the same states.
func (s *discoverySet) sameAs(t *discoverySet) bool {
	return !s.released && s.failed == t.failed &&
		slices.Equal(s.entries, t.entries) && slices.Equal(s.names, t.names) &&
		slices.Equal(s.excluded, t.excluded)
}

// exclude decides, from its last measurement, whether an open member is
// left out for a configured delay on a channel that counts, and logs a
// change of that once. A member not yet measured, or whose source reads no
// delay, counts. The caller holds opMu.
func (d *Discovery) exclude(m *discoveryMember) bool {
	why := ""
	if meas, _, ok := m.r.LastMeasurement(); ok && !d.cfg.IncludeDelayed {
		var delay time.Duration
		for _, c := range meas.Channels {
			if !c.Ignored {
				delay = max(delay, c.Delay)
			}
		}
		if delay > 0 {
			why = fmt.Sprintf("configured delay %v (MASTER_DELAY): left out; DiscoveryConfig.IncludeDelayed watches it beyond its delay", delay)
		}
	}
	switch {
	case why != "" && m.excluded == "":
		d.log.Info("throttler: replica left out: it has a configured delay", "replica", m.label(), "why", why)
	case why == "" && m.excluded != "":
		d.log.Info("throttler: replica watched now: its configured delay was removed", "replica", m.label())
	}
	if (why != "") != (m.excluded != "") {
		m.r.setSteering(why == "") // a replica left out does not pace the callers either
	}
	m.excluded = why
	return why != ""
}

// shutdown releases, then closes every member and DB.
func (d *Discovery) shutdown() {
	d.release()
	d.opMu.Lock()
	defer d.opMu.Unlock()
	var wg sync.WaitGroup
	for k, m := range d.members {
		wg.Go(m.close)
		delete(d.members, k)
	}
	wg.Wait()
}
