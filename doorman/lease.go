package doorman

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/throttlekit/throttler"
	pb "github.com/throttlekit/throttler/doorman/doormanpb"
)

// The monitor is a loop of its own rather than the root's internal/poller:
// its schedule is the server's (each lease brings its refresh interval and
// expiry), and what follows a silent server is the lease's expiry and the
// safe capacity, not a fixed stale window.

// grant is one lease as the throttler holds it.
type grant struct {
	ok       bool
	capacity float64
	expiry   time.Time     // by the server's clock, which should be ours
	refresh  time.Duration // within [minRefresh, maxRefresh]
	safe     float64
	hasSafe  bool
	server   string    // the address that granted it
	at       time.Time // when it was received
	wire     *pb.Lease // as received, sent back as "has"
}

// flight is one request in flight; its outcome is set before done closes.
type flight struct {
	done chan struct{}
	err  error
	// abandoned: its caller left before it ended, so its outcome was not
	// published; whoever shared it asks anew.
	abandoned bool
}

// Kinds of throttled states (Stats.ThrottledByKind, OnChange).
const (
	kindNoCapacity = "no capacity"
	kindExpired    = "lease expired"
	kindBadGrant   = "bad grant"
)

// monitor refreshes the lease until the life ends, then releases it.
func (t *Throttler) monitor(life context.Context) {
	defer t.releaseCapacity()
	timer := time.NewTimer(t.nextRefresh())
	defer timer.Stop()
	for {
		select {
		case <-life.Done():
			return
		case <-timer.C:
		}
		_ = t.update(life)
		if life.Err() != nil {
			return
		}
		timer.Reset(t.nextRefresh())
	}
}

// nextRefresh is the time until the next request: the server's refresh
// interval, but no later than halfway to the lease's expiry, so that one
// slow or failed request still leaves time for another before it.
func (t *Throttler) nextRefresh() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.lease.refresh
	if t.lastErr == nil && !t.expired {
		if half := time.Until(t.lease.expiry) / 2; half < d {
			d = max(half, minRefresh/10)
		}
	}
	return d
}

// update asks the server once and publishes the outcome; while a request
// is in flight it waits for that one and shares its outcome. ctx ends the
// wait, and a request it ends is abandoned unpublished.
func (t *Throttler) update(ctx context.Context) error {
	for {
		t.flightMu.Lock()
		f := t.flight
		if f == nil && t.gate.Released() {
			t.flightMu.Unlock()
			return throttler.ErrClosed
		}
		if f == nil {
			f = &flight{done: make(chan struct{})}
			t.flight = f
			t.flightMu.Unlock()
			return t.fly(ctx, f)
		}
		t.flightMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !f.abandoned {
			return f.err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func (t *Throttler) fly(ctx context.Context, f *flight) error {
	defer func() {
		t.flightMu.Lock()
		t.flight = nil
		t.flightMu.Unlock()
		close(f.done)
	}()
	g, err := t.fetch(ctx)
	if ctx.Err() != nil {
		f.abandoned = true // not the server's doing: the caller left
		if err == nil {
			err = ctx.Err()
		}
		f.err = err
		return err
	}
	f.err = err
	if err != nil {
		t.failed(err, true)
		return err
	}
	t.apply(g)
	return nil
}

// fetch sends one GetCapacity, following redirects to the master, each
// attempt within RPCTimeout; it publishes nothing.
func (t *Throttler) fetch(ctx context.Context) (grant, error) {
	t.mu.Lock()
	req := &pb.GetCapacityRequest{
		ClientId: proto.String(t.cfg.ClientID),
		Resource: []*pb.ResourceRequest{{
			ResourceId: proto.String(t.cfg.ResourceID),
			Priority:   proto.Int64(t.cfg.Priority),
			Wants:      proto.Float64(t.wants),
		}},
	}
	// The lease held, so that a new master in learning mode grants it
	// again; not one that expired, which the server must not re-grant.
	if t.lease.ok && !t.expired && time.Now().Before(t.lease.expiry) {
		req.Resource[0].Has = t.lease.wire
	}
	t.mu.Unlock()
	for redirects := 0; ; redirects++ {
		c, addr, err := t.client()
		if err != nil {
			return grant{}, err
		}
		rctx, cancel := context.WithTimeout(ctx, t.cfg.RPCTimeout)
		sent := time.Now()
		resp, err := pb.NewCapacityClient(c).GetCapacity(rctx, req)
		cancel()
		if err != nil {
			t.dropConn(c)
			return grant{}, fmt.Errorf("GetCapacity from %s: %w", addr, err)
		}
		if m := resp.Mastership; m != nil {
			master := m.GetMasterAddress()
			if master == "" {
				t.dropConn(c)
				return grant{}, fmt.Errorf("GetCapacity from %s: the server is not the master and does not know which is", addr)
			}
			if redirects >= maxRedirects {
				t.dropConn(c)
				return grant{}, fmt.Errorf("GetCapacity from %s: redirected to %s after %d redirects already: giving up", addr, master, redirects)
			}
			t.log.Info("doorman: redirected to the master", "from", addr, "master", master)
			t.redirect(c, master)
			continue
		}
		for _, r := range resp.Response {
			if r.GetResourceId() == t.cfg.ResourceID && r.Gets != nil {
				return t.grantOf(r, addr, sent), nil
			}
		}
		return grant{}, fmt.Errorf("GetCapacity from %s: the answer has no lease for resource %q", addr, t.cfg.ResourceID)
	}
}

// grantOf reads a lease. Numbers that do not fit are made to: a refresh
// interval out of range is clamped, an expiry before the request was sent
// (a server clock behind ours) is read as one refresh interval from then.
func (t *Throttler) grantOf(r *pb.ResourceResponse, addr string, sent time.Time) grant {
	l := r.Gets
	g := grant{ok: true, capacity: l.GetCapacity(), server: addr, at: time.Now(), wire: l}
	g.refresh = minRefresh
	if s := l.GetRefreshInterval(); s > 0 {
		g.refresh = time.Duration(min(s, int64(maxRefresh/time.Second))) * time.Second
	}
	g.expiry = time.Unix(l.GetExpiryTime(), 0)
	if floor := sent.Add(g.refresh); g.expiry.Before(floor) && !g.expiry.After(sent) {
		g.expiry = floor
	}
	if r.SafeCapacity != nil && !math.IsNaN(r.GetSafeCapacity()) {
		g.safe, g.hasSafe = r.GetSafeCapacity(), true
	}
	return g
}

// verdict is what capacity c calls for: throttled (with kind and reason)
// or a rate in calls per second.
func (t *Throttler) verdict(c float64, g grant) (throttled bool, kind, reason string, r float64) {
	switch {
	case math.IsNaN(c) || c < 0:
		return true, kindBadGrant, fmt.Sprintf("doorman: %s granted capacity %v for resource %q, which is not a capacity", g.server, c, t.cfg.ResourceID), 0
	case c == 0:
		return true, kindNoCapacity, fmt.Sprintf("doorman: capacity 0 for resource %q from %s (lease until %s)", t.cfg.ResourceID, g.server, g.expiry.Format(time.TimeOnly)), 0
	}
	return false, "", "", c / t.cfg.UnitsPerCall
}

// apply publishes a fresh lease. It runs under the Runner's lock in Open.
func (t *Throttler) apply(g grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gate.Released() {
		return
	}
	wasExpired, wasFailing := t.expired, t.failing
	t.lease, t.expired, t.failing, t.lastErr = g, false, false, nil
	t.okCount++
	t.lastOK = g.at
	if t.expiry != nil {
		t.expiry.Stop()
	}
	t.expiry = time.AfterFunc(time.Until(g.expiry), t.expire)
	throttled, kind, reason, r := t.verdict(g.capacity, g)
	t.publish(throttled, kind, reason, r)
	if wasExpired || wasFailing {
		t.log.Info("doorman: the server answers again", "capacity", g.capacity, "lease_until", g.expiry, "server", g.server)
	}
}

// publish sets the gate and the pace. Caller holds mu.
func (t *Throttler) publish(throttled bool, kind, reason string, r float64) {
	if throttled {
		t.gate.Set(true, kind, reason)
		r = 0
	}
	// Any change of the grant sends the waiters back: to queue at the new
	// rate, or to the gate.
	t.pace.Start()
	if t.pace.Set(r) || throttled {
		t.pace.Requeue()
	}
	t.rate.Store(math.Float64bits(r))
	if !throttled {
		t.gate.Set(false, "", "")
	}
}

// failed books a failed request: the lease stands until it expires, and
// an expired one's reason gets the new error.
func (t *Throttler) failed(err error, open bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errCount++
	t.lastErr = err
	if !open || t.gate.Released() {
		return
	}
	if !t.failing && !t.expired {
		t.failing = true
		t.log.Warn("doorman: refresh failed; the lease stands until it expires", "lease_until", t.lease.expiry, "err", err)
	}
	if t.expired {
		t.fallback(false)
	}
}

// expire runs at the lease's expiry.
func (t *Throttler) expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gate.Released() || t.expired || !t.lease.ok || time.Now().Before(t.lease.expiry) {
		return // released, or renewed meanwhile
	}
	t.expired = true
	t.fallback(true)
}

// fallback publishes what an expired lease calls for: the safe capacity
// when the server sent one (and it is not ignored), else throttled. log
// writes the one line of the fallback. Caller holds mu.
func (t *Throttler) fallback(log bool) {
	g := t.lease
	cause := "no request has been answered since"
	if t.lastErr != nil {
		cause = "the server has not answered since: " + t.lastErr.Error()
	}
	base := fmt.Sprintf("doorman: lease for resource %q expired at %s and %s", t.cfg.ResourceID, g.expiry.Format(time.TimeOnly), cause)
	switch {
	case !g.hasSafe || t.cfg.IgnoreSafeCapacity:
		why := "no safe capacity"
		if g.hasSafe {
			why = "safe capacity ignored"
		}
		t.publish(true, kindExpired, base+" ("+why+": failing closed)", 0)
		if log {
			t.log.Warn("doorman: lease expired without a refresh; failing closed", "expired", g.expiry, "why", why, "err", t.lastErr)
		}
	case g.safe == 0:
		t.publish(true, kindExpired, base+" (safe capacity 0)", 0)
		if log {
			t.log.Warn("doorman: lease expired without a refresh; the safe capacity is 0", "expired", g.expiry, "err", t.lastErr)
		}
	default:
		r := math.Inf(1)
		if g.safe > 0 {
			r = g.safe / t.cfg.UnitsPerCall
		}
		t.publish(false, "", "", r)
		if log {
			t.log.Warn("doorman: lease expired without a refresh; pacing to the safe capacity", "expired", g.expiry,
				"safe_capacity", safeText(g.safe), "err", t.lastErr)
		}
	}
}

// safeText shows a safe capacity; a negative one means unlimited.
func safeText(s float64) string {
	if s < 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(s, 'g', -1, 64)
}

func (t *Throttler) stopExpiry() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expiry != nil {
		t.expiry.Stop()
	}
}

// client returns the connection to the server to ask: the one asked last,
// or a new one to Config.Addr.
func (t *Throttler) client() (*grpc.ClientConn, string, error) {
	t.connMu.Lock()
	defer t.connMu.Unlock()
	if t.connDone {
		return nil, "", throttler.ErrClosed
	}
	if t.conn != nil {
		return t.conn, t.connAddr, nil
	}
	c, err := grpc.NewClient(t.cfg.Addr, t.dialOpt...)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s: %w", t.cfg.Addr, err)
	}
	t.conn, t.connAddr = c, t.cfg.Addr
	return c, t.cfg.Addr, nil
}

// redirect replaces connection c (if it is still current) by one to the
// master.
func (t *Throttler) redirect(c *grpc.ClientConn, master string) {
	t.connMu.Lock()
	defer t.connMu.Unlock()
	if t.conn != c {
		return // someone moved on already
	}
	_ = c.Close()
	t.conn, t.connAddr = nil, ""
	if t.connDone {
		return
	}
	nc, err := grpc.NewClient(master, t.dialOpt...)
	if err != nil {
		t.log.Warn("doorman: cannot dial the master named by a redirect", "master", master, "err", err)
		return // the next request asks Config.Addr again
	}
	t.conn, t.connAddr = nc, master
}

// dropConn closes connection c if it is still current (any when nil): the
// next request dials Config.Addr afresh.
func (t *Throttler) dropConn(c *grpc.ClientConn) {
	t.connMu.Lock()
	defer t.connMu.Unlock()
	if t.conn == nil || c != nil && t.conn != c {
		return
	}
	_ = t.conn.Close()
	t.conn, t.connAddr = nil, ""
}

// closeConn closes the connection for good: a request that straggles
// after the release dials nothing.
func (t *Throttler) closeConn() {
	t.dropConn(nil)
	t.connMu.Lock()
	defer t.connMu.Unlock()
	t.connDone = true
}

// releaseCapacity gives the lease back when the life ends, so that other
// clients get it at their next refresh instead of at its expiry.
func (t *Throttler) releaseCapacity() {
	t.pace.Release()
	t.stopExpiry()
	defer t.closeConn()
	req := &pb.ReleaseCapacityRequest{ClientId: proto.String(t.cfg.ClientID), ResourceId: []string{t.cfg.ResourceID}}
	var err error
	for redirects := 0; ; redirects++ {
		var c *grpc.ClientConn
		var addr string
		if c, addr, err = t.client(); err != nil {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.RPCTimeout)
		var resp *pb.ReleaseCapacityResponse
		resp, err = pb.NewCapacityClient(c).ReleaseCapacity(ctx, req)
		cancel()
		if err != nil {
			err = fmt.Errorf("ReleaseCapacity to %s: %w", addr, err)
			break
		}
		master := resp.GetMastership().GetMasterAddress()
		if resp.Mastership == nil {
			t.log.Info("doorman: capacity released", "server", addr)
			return
		}
		if master == "" || redirects >= maxRedirects {
			err = errors.New("ReleaseCapacity to " + addr + ": not the master, and no master to redirect to")
			break
		}
		t.redirect(c, master)
	}
	t.log.Warn("doorman: could not release the capacity; the server forgets it when the lease expires", "err", err)
}

// Grant is a snapshot of the throttler's lease.
type Grant struct {
	// Capacity is the capacity of the last lease; Rate what the callers
	// are paced to now, in calls per second: +Inf unpaced, 0 throttled.
	Capacity, Rate float64
	// Expiry is when the lease ends; Refresh the server's refresh interval.
	Expiry  time.Time
	Refresh time.Duration
	// SafeCapacity is what the lease falls back to on expiry, when
	// HasSafeCapacity: negative is unlimited.
	SafeCapacity    float64
	HasSafeCapacity bool
	// Expired: the lease expired without a refresh; Rate is the fallback's.
	Expired bool
	// Server is the address that granted the lease (the master).
	Server string
	// Wants is what the throttler asks for.
	Wants float64
}

// Grant returns the last lease and what it calls for now; zero before Open.
func (t *Throttler) Grant() Grant {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.lease
	if !g.ok {
		return Grant{Wants: t.wants}
	}
	return Grant{Capacity: g.capacity, Rate: math.Float64frombits(t.rate.Load()), Expiry: g.expiry, Refresh: g.refresh,
		SafeCapacity: g.safe, HasSafeCapacity: g.hasSafe, Expired: t.expired, Server: g.server, Wants: t.wants}
}

// SetWants changes the capacity asked for from the next request on (call
// UpdateLag to ask now). It must be a positive finite number; otherwise it
// returns an error wrapping throttler.ErrInvalidConfig and changes nothing.
func (t *Throttler) SetWants(w float64) error {
	if err := checkWants("SetWants:", w); err != nil {
		return fmt.Errorf("%w: %w", throttler.ErrInvalidConfig, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wants = w
	return nil
}
