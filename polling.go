package throttler

import (
	"context"
	"fmt"

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

// UpdateLag measures once, synchronously, and publishes the result before it
// returns; a clear result wakes every waiter. While a measurement is in
// flight (the monitor's or another caller's) it starts none: it waits for
// that one and returns its result, so concurrent callers cost one
// measurement. It returns ErrNotOpen before Open and ErrClosed after the
// throttler stopped (Close, or the end of Open's context): at once, also
// to callers that were waiting, whose measurement in flight is cancelled.
func (p *polling) UpdateLag(ctx context.Context) error {
	if err := p.poll.Update(ctx); err != nil {
		return fmt.Errorf("throttler: %s: %w", p.updating, err)
	}
	return nil
}

// IsThrottled reports whether work should wait: one atomic load. It is false
// before Open, after a failed Open, after Close, and after Open's context
// ends.
func (p *polling) IsThrottled() bool { return p.poll.Throttled() }

// BlockWait returns at once when not throttled. Otherwise it blocks until the
// throttle clears, ctx is done, the throttler stops, or WithMaxWait elapses.
// Callers that must know why it returned use Wait.
func (p *polling) BlockWait(ctx context.Context) {
	if p.poll.Throttled() { // inlined: the unthrottled call costs one atomic load
		_ = p.poll.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned: nil when clear, ErrMaxWait
// when WithMaxWait elapsed while still throttled, ErrClosed when the
// throttler stopped, or ctx's error.
func (p *polling) Wait(ctx context.Context) error { return p.poll.Wait(ctx) }

// ThrottleReason is "" when not throttled; otherwise it names the signal and
// the comparison, for example "replica lag 12.4s >= 10s", or, when no
// measurement succeeded for the stale window, the last error.
func (p *polling) ThrottleReason() string { return p.poll.Reason() }
