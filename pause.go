package throttler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/throttlekit/throttler/internal/gate"
	"github.com/throttlekit/throttler/internal/lifecycle"
	"github.com/throttlekit/throttler/internal/poller"
)

// Pause throttles on an operator's word: while Pause is in effect (an
// operator's command, a control server's endpoint, a chat-ops bot), or while
// a flag file exists (gh-ost's --throttle-flag-file: `touch` it to pause,
// `rm` it to resume).
//
// The two signals are kept apart and combined on read: Pause and Resume
// publish the manual state at once, with no I/O, and Resume wakes every
// blocked BlockWait the moment it is called unless the flag file also
// throttles. The flag file, when configured, is checked by one monitor
// goroutine every WithInterval (os.Stat): a file that exists throttles; one
// that does not exist does not; a file that cannot be checked (a permission
// denied on its directory, a path component that is not a directory)
// throttles at once, with the error in ThrottleReason, because a flag nobody
// can see is not a flag anybody removed. With no flag file there is no
// goroutine at all.
//
// Pause and Resume may be called before Open (the state is remembered and
// takes effect at Open) and have no effect once the throttler is released.
//
// Callers that copy use BlockWait before each chunk; operators use Pause and
// Resume.
type Pause struct {
	name     string // WithName's, or ""
	flagFile string
	log      *slog.Logger
	maxWait  time.Duration

	manual gate.Gate      // the manual pause, published by Pause, Resume and Open
	poll   *poller.Poller // the flag file; nil when there is none
	life   lifecycle.Runner

	mu     sync.Mutex // guards the fields below
	paused bool
	reason string
}

// PauseConfig configures a Pause.
type PauseConfig struct {
	// FlagFile, if set, is a path whose existence throttles. It is checked
	// by Open (an error other than "does not exist" fails Open) and then
	// every WithInterval.
	FlagFile string
}

// NewPause returns a Pause. It does no I/O; Open does. A nil logger logs
// nothing. Bad options are an error wrapping ErrInvalidConfig. Without a
// flag file, only WithMaxWait applies.
func NewPause(cfg PauseConfig, logger *slog.Logger, opts ...Option) (*Pause, error) {
	forWhat, accepts := "a Pause throttler without a flag file", commonOptions
	if cfg.FlagFile != "" {
		forWhat, accepts = "a Pause throttler", pollingOptions // the file is polled
	}
	o, problems := buildOptions(opts, forWhat, accepts)
	if err := configError(problems); err != nil {
		return nil, err
	}
	logger = o.logger(logger) // WithName's name on every line
	p := &Pause{name: o.name, flagFile: cfg.FlagFile, log: logger, maxWait: o.maxWait}
	if p.flagFile != "" {
		pc := o.pollerConfig(logger.With("signal", "flag file", "path", p.flagFile), "flag file check")
		pc.MaxWait = 0 // Wait caps the combined wait itself
		pc.Owned = true
		p.poll = poller.New(pc, p.probe)
	}
	p.life.Gate, p.life.Log = &p.manual, logger
	return p, nil
}

// probe checks the flag file once.
func (p *Pause) probe(context.Context) (poller.Verdict, error) {
	_, err := os.Stat(p.flagFile)
	switch {
	case err == nil:
		return poller.Verdict{Throttled: true, Kind: "flag file", Reason: "flag file " + p.flagFile + " exists"}, nil
	case errors.Is(err, fs.ErrNotExist):
		return poller.Verdict{}, nil
	}
	// Stat is local and cheap: an error is not a blip to wait out but a
	// flag that cannot be seen. Throttle now, and say why.
	err = fmt.Errorf("flag file: %w", err)
	return poller.Verdict{Throttled: true, Kind: "flag file unreadable", Reason: err.Error()}, err
}

// Pause throttles until Resume, with reason in ThrottleReason ("" is
// allowed). Calling it again replaces the reason. Before Open it is
// remembered; after Close it has no effect.
func (p *Pause) Pause(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.Closing() || p.paused && p.reason == reason {
		return
	}
	p.paused, p.reason = true, reason
	if p.life.CheckOpen() == nil {
		p.manual.Set(true, p.manualReason())
	}
	p.log.Warn("throttler: paused manually", "reason", p.manualReason())
}

// Resume ends a Pause: waiters wake at once unless the flag file throttles
// too. Before Open it is remembered; after Close it has no effect.
func (p *Pause) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.Closing() || !p.paused {
		return
	}
	p.paused, p.reason = false, ""
	if p.life.CheckOpen() == nil {
		p.manual.Set(false, "")
	}
	p.log.Info("throttler: resumed manually")
}

// Paused reports whether Pause was called without a later Resume (calls
// after Close do not count). It says nothing of the flag file:
// IsThrottled does.
func (p *Pause) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// manualReason is the reason of a manual pause. Caller holds mu.
func (p *Pause) manualReason() string {
	if p.reason == "" {
		return "paused manually"
	}
	return "paused manually: " + p.reason
}

// Open publishes the manual state and, with a flag file, checks it once and
// returns that check's error. Without a flag file it starts no goroutine, and
// the throttler is still released when ctx ends.
func (p *Pause) Open(ctx context.Context) error {
	life, err := p.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	if p.poll != nil {
		err = p.poll.Open(life)
	} else {
		err = ctx.Err()
	}
	if err != nil {
		if p.life.Abort() != nil {
			err = ErrClosed // Close ran while we checked
		}
		return fmt.Errorf("throttler: open: %w", err)
	}
	if err := p.life.Start(nil, nil); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	// Published after Start, not in its before: Pause and Resume take mu,
	// then ask the Runner, so nothing may take mu under the Runner's lock.
	p.mu.Lock()
	p.manual.Set(p.paused, p.manualReason())
	paused := p.paused
	p.mu.Unlock()
	p.log.Info("throttler: open", "paused", paused, "flag_file", p.flagFile, "throttled", p.IsThrottled())
	return nil
}

func (p *Pause) Close() error {
	if p.life.Close() && p.poll != nil {
		p.poll.Close()
	}
	return nil
}

// IsThrottled reports whether work should wait now: two atomic loads.
func (p *Pause) IsThrottled() bool {
	return p.manual.Throttled() || p.poll != nil && p.poll.Throttled()
}

// BlockWait blocks until neither the manual pause nor the flag file
// throttles, as the package doc says.
func (p *Pause) BlockWait(ctx context.Context) {
	if p.IsThrottled() {
		_ = p.Wait(ctx)
	}
}

// Wait is BlockWait that says why it returned (see Waiter).
func (p *Pause) Wait(ctx context.Context) error {
	if !p.IsThrottled() && !p.manual.Released() {
		return nil
	}
	var deadline time.Time // one cap for the whole wait, on either signal
	if p.maxWait > 0 {
		deadline = time.Now().Add(p.maxWait)
	}
	// Wait on whichever signal throttles until both are clear at once;
	// each wait is woken by its own signal's broadcast.
	for {
		var err error
		switch {
		case p.manual.Throttled():
			err = p.manual.WaitUntil(ctx, deadline)
		case p.poll != nil && p.poll.Throttled():
			err = p.poll.WaitUntil(ctx, deadline)
		case p.manual.Released():
			return ErrClosed
		default:
			return nil
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, ErrMaxWait) && p.IsThrottled():
			return fmt.Errorf("%w: %s", ErrMaxWait, p.ThrottleReason()) // both signals' reasons
		case errors.Is(err, ErrMaxWait):
			return nil
		}
		return err
	}
}

// UpdateLag checks the flag file now and returns that check's error. Without
// a flag file there is nothing to check and it returns nil once open: Pause
// and Resume publish at once.
func (p *Pause) UpdateLag(ctx context.Context) error {
	if p.poll == nil {
		return nil
	}
	if err := p.poll.Update(ctx); err != nil {
		return fmt.Errorf("throttler: update: %w", err)
	}
	return nil
}

// ThrottleReason is "" when not throttled; otherwise it names what
// throttles: "paused manually: <reason>", "flag file /path exists", a flag
// file check's error, or both signals joined with "; ".
func (p *Pause) ThrottleReason() string {
	m := p.manual.Reason()
	f := ""
	if p.poll != nil {
		f = p.poll.Reason()
	}
	switch {
	case f == "":
		return m
	case m == "":
		return f
	}
	return m + "; " + f
}

var (
	_ Throttler = (*Pause)(nil)
	_ Waiter    = (*Pause)(nil)
	_ Reasoner  = (*Pause)(nil)
)

// String is the name given with WithName, or "pause", which names it in the
// reasons of a Multi that holds it.
func (p *Pause) String() string {
	if p.name != "" {
		return p.name
	}
	return "pause"
}
