package throttler

import (
	"context"
	"fmt"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/poller"
)

// polling gives a throttler built on internal/poller the methods that only
// read or drive the poller, so that each throttler's file holds only what is
// its own (its probe, Open, Close). Embed it and set both fields in the
// constructor.
type polling struct {
	poll *poller.Poller
	// updating names what UpdateLag does, for its errors ("update lag").
	updating string
}

// UpdateLag measures once and publishes the result, as the package doc says;
// a caller waiting on a measurement in flight when the throttler stops
// returns ErrClosed at once, and that measurement is cancelled.
func (p *polling) UpdateLag(ctx context.Context) error {
	if err := p.poll.Update(ctx); err != nil {
		return fmt.Errorf("throttler: %s: %w", p.updating, err)
	}
	return nil
}

// IsThrottled reports whether work should wait now.
func (p *polling) IsThrottled() bool { return p.poll.Throttled() }

// BlockWait returns at once when not throttled, and otherwise blocks as the
// package doc says.
func (p *polling) BlockWait(ctx context.Context) {
	if p.poll.Throttled() { // inlined: the unthrottled call costs one atomic load
		_ = p.poll.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned (see Waiter).
func (p *polling) Wait(ctx context.Context) error { return p.poll.Wait(ctx) }

// ThrottleReason is "" when not throttled; otherwise it names the signal and
// the comparison, or, when no measurement succeeded for the stale window,
// the last error.
func (p *polling) ThrottleReason() string { return p.poll.Reason() }

// Stats is what the throttler has done since Open (see Stats).
func (p *polling) Stats() Stats {
	ok, failed, last := p.poll.Counts()
	return statsOf(p.poll.Gate().Ledger(), ok, failed, last)
}

// utilization is Utilizer's rule applied to ratio, the signal over its
// threshold: 0 unless open, and at least 1 while throttled for any reason.
func (p *polling) utilization(ratio float64) float64 {
	switch {
	case !p.poll.Live():
		return 0
	case p.poll.Throttled():
		return max(ratio, 1)
	}
	return ratio
}

// stateGate is the gate a Multi or Discovery holding the throttler watches.
func (p *polling) stateGate() *gate.Gate { return p.poll.Gate() }
