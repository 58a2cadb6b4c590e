package throttler

import (
	"context"
	"time"
)

// Noop never throttles. Every method returns at once; Open and Close may be
// called any number of times. Use it where a Throttler is required but the
// work must never wait.
type Noop struct{}

// Open returns nil.
func (Noop) Open(context.Context) error { return nil }

// Close returns nil.
func (Noop) Close() error { return nil }

// IsThrottled returns false.
func (Noop) IsThrottled() bool { return false }

// BlockWait returns at once.
func (Noop) BlockWait(context.Context) {}

// UpdateLag returns nil.
func (Noop) UpdateLag(context.Context) error { return nil }

// ThrottleReason returns "".
func (Noop) ThrottleReason() string { return "" }

// Lag returns 0.
func (Noop) Lag() time.Duration { return 0 }

// Stats is the zero Stats: a Noop does nothing worth counting.
func (Noop) Stats() Stats { return Stats{} }
