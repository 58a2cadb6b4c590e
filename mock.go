package throttler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
)

// Mock is a Throttler for unit tests of code that takes one. It needs no
// database and no Open.
//
// The zero value reports throttled, and its BlockWait blocks for one second
// (BlockTime) or until ctx is done, whichever is first: code under test that
// ignores the throttler shows up as slow. SetThrottled switches it between
// throttled and clear at run time, waking blocked callers when it clears;
// BlockWaitCalls counts the calls.
// A Mock must not be copied after first use.
type Mock struct {
	// BlockTime is how long BlockWait blocks while throttled; 0 means one
	// second. Set it before the Mock is shared between goroutines.
	BlockTime time.Duration
	// Reason is what ThrottleReason reports while throttled; "" means
	// "mock: throttled".
	Reason string

	once   sync.Once
	gate   gate.Gate
	opened atomic.Bool
	calls  atomic.Int64
	mu     sync.Mutex
	err    error // returned by Open and UpdateLag; guarded by mu
}

func (m *Mock) init() {
	m.once.Do(func() { m.gate.Set(true, m.reason()) })
}

func (m *Mock) reason() string {
	if m.Reason != "" {
		return m.Reason
	}
	return "mock: throttled"
}

// SetThrottled switches the mock between throttled and clear; clearing it
// wakes every blocked BlockWait. It has no effect after Close.
func (m *Mock) SetThrottled(throttled bool) {
	m.init()
	m.gate.Set(throttled, m.reason())
}

// SetError makes Open and UpdateLag return err (nil to stop).
func (m *Mock) SetError(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

// BlockWaitCalls is the number of BlockWait calls so far, throttled or not.
func (m *Mock) BlockWaitCalls() int64 { return m.calls.Load() }

// Open returns the error set with SetError.
func (m *Mock) Open(context.Context) error {
	m.init()
	if m.gate.Released() {
		return ErrClosed
	}
	if err := m.getErr(); err != nil {
		return err
	}
	if !m.opened.CompareAndSwap(false, true) {
		return ErrAlreadyOpen
	}
	return nil
}

func (m *Mock) getErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *Mock) Close() error {
	m.init()
	m.gate.Release()
	return nil
}

// IsThrottled reports the state set by SetThrottled (throttled at first).
func (m *Mock) IsThrottled() bool {
	m.init()
	return m.gate.Throttled()
}

// BlockWait blocks while throttled for at most BlockTime, which plays the
// role of WithMaxWait.
func (m *Mock) BlockWait(ctx context.Context) {
	_ = m.Wait(ctx)
}

// Wait is BlockWait that says why it returned (see Waiter; ErrMaxWait when
// BlockTime elapsed). It counts as a BlockWait call.
func (m *Mock) Wait(ctx context.Context) error {
	m.calls.Add(1)
	m.init()
	d := m.BlockTime
	if d <= 0 {
		d = time.Second
	}
	return m.gate.Wait(ctx, d)
}

// UpdateLag returns the error set with SetError.
func (m *Mock) UpdateLag(context.Context) error { return m.getErr() }

// ThrottleReason is Reason (or "mock: throttled") while throttled, else "".
func (m *Mock) ThrottleReason() string {
	m.init()
	return m.gate.Reason()
}
