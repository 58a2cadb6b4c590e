package throttler

import (
	"cmp"
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

// Pause throttles on an operator's word: while Pause (or PauseFor, until it
// expires) is in effect (an operator's command, a control server's endpoint,
// a chat-ops bot), or while a flag file exists (gh-ost's
// --throttle-flag-file: `touch` it to pause, `rm` it to resume).
//
// Pause, PauseFor and Resume publish at once, with no I/O, and Resume wakes
// every blocked BlockWait the moment it is called unless the flag file also
// throttles. The flag file, when configured, is checked by one monitor
// goroutine every WithInterval (os.Stat): a file that exists throttles; one
// that does not exist does not; a file that cannot be checked (a permission
// denied on its directory, a path component that is not a directory)
// throttles at once, with the error in ThrottleReason, because a flag nobody
// can see is not a flag anybody removed. With no flag file there is no
// goroutine at all.
//
// Pause, PauseFor and Resume may be called before Open (the state is
// remembered and takes effect at Open) and have no effect once the throttler
// is released.
//
// Callers that copy use BlockWait before each chunk; operators use Pause,
// PauseFor and Resume.
type Pause struct {
	name     string // WithName's, or ""
	flagFile string
	log      *slog.Logger
	maxWait  time.Duration

	// gate is the Pause's state: throttled while the manual pause or the
	// flag file throttles, recomputed (refresh) whenever either changes.
	gate gate.Gate
	poll *poller.Poller // the flag file; nil when there is none; its gate is quiet
	life lifecycle.Runner

	mu     sync.Mutex // guards the fields below
	paused bool
	reason string
	until  time.Time   // a PauseFor's end; zero for a Pause
	expiry *time.Timer // resumes at until; nil when none is armed
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
// flag file, only WithMaxWait, WithName and WithOnChange apply.
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
		pc := o.pollerConfig(logger.With("signal", "flag file", "path", p.flagFile), "flag file check", "")
		pc.Owned, pc.Quiet, pc.Notify = true, true, nil
		p.poll = poller.New(pc, p.probe)
		p.poll.Gate().Watch(p.refresh)
	}
	p.life.Gate, p.life.Log = &p.gate, logger
	p.gate.Observe(logger, o.notifier(p.String()))
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
// allowed). Calling it again replaces the reason and ends a PauseFor's
// expiry. Before Open it is remembered; after Close it has no effect.
func (p *Pause) Pause(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pauseLocked(reason, time.Time{})
}

// PauseFor throttles for d, then resumes by itself (like freno's TTL'd
// throttle-app): an operator's pause that nobody forgets to lift. Pause,
// Resume or another PauseFor replace it. d must be positive and at most a
// week; otherwise it returns an error wrapping ErrInvalidConfig and changes
// nothing. Before Open the time already counts.
func (p *Pause) PauseFor(d time.Duration, reason string) error {
	if err := checkSpan(fmt.Sprintf("PauseFor(%v): the pause", d), d, ""); err != nil {
		return configError([]error{err}) // checkSpan without a zero: d must be positive
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pauseLocked(reason, time.Now().Add(d))
	return nil
}

func (p *Pause) pauseLocked(reason string, until time.Time) {
	if p.life.Closing() || p.paused && p.reason == reason && p.until.Equal(until) {
		return
	}
	p.stopExpiry()
	p.paused, p.reason, p.until = true, reason, until
	if !until.IsZero() {
		p.expiry = time.AfterFunc(time.Until(until), p.expire)
	}
	p.refreshLocked()
}

// expire ends a PauseFor whose time is up.
func (p *Pause) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused && !p.until.IsZero() && !time.Now().Before(p.until) {
		p.paused, p.reason, p.until, p.expiry = false, "", time.Time{}, nil
		p.refreshLocked()
	}
}

// stopExpiry disarms a PauseFor's timer. Caller holds mu.
func (p *Pause) stopExpiry() {
	if p.expiry != nil {
		p.expiry.Stop()
		p.expiry = nil
	}
}

// Resume ends a Pause or PauseFor: waiters wake at once unless the flag file
// throttles too. Before Open it is remembered; after Close it has no effect.
func (p *Pause) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.Closing() || !p.paused {
		return
	}
	p.stopExpiry()
	p.paused, p.reason, p.until = false, "", time.Time{}
	p.refreshLocked()
}

// Paused reports whether Pause or PauseFor is in effect (calls after Close
// do not count). It says nothing of the flag file: IsThrottled does.
func (p *Pause) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// PausedUntil is when a PauseFor ends by itself; zero when no pause is in
// effect or it lasts until Resume.
func (p *Pause) PausedUntil() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until
}

// manualReason is the reason of a manual pause. Caller holds mu.
func (p *Pause) manualReason() string {
	r := "paused manually"
	if p.reason != "" {
		r += ": " + p.reason
	}
	if !p.until.IsZero() {
		r += " (until " + p.until.Format(time.RFC3339) + ")"
	}
	return r
}

// refresh publishes the combined state of the manual pause and the flag
// file; it runs when either changes.
func (p *Pause) refresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked()
}

// refreshLocked publishes the combined state once open. Caller holds mu.
func (p *Pause) refreshLocked() {
	if p.life.CheckOpen() != nil {
		return // remembered; Open publishes it
	}
	var reason, kind string
	if p.paused {
		reason, kind = p.manualReason(), "paused"
	}
	if p.poll != nil {
		// The flag file's state read at once, as a Multi reads a child's.
		if flagged, k, f := p.poll.Gate().State(); flagged {
			if reason == "" {
				reason, kind = f, k
			} else {
				reason += "; " + f
			}
		}
	}
	p.gate.Set(reason != "", kind, reason)
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
	p.refresh()
	p.log.Info("throttler: open", "paused", p.Paused(), "flag_file", p.flagFile, "throttled", p.IsThrottled())
	return nil
}

func (p *Pause) Close() error {
	if p.life.Close() && p.poll != nil {
		p.poll.Close()
	}
	p.mu.Lock()
	p.stopExpiry()
	p.mu.Unlock()
	return nil
}

// IsThrottled reports whether work should wait now.
func (p *Pause) IsThrottled() bool { return p.gate.Throttled() }

// BlockWait blocks until neither the manual pause nor the flag file
// throttles, as the package doc says.
func (p *Pause) BlockWait(ctx context.Context) {
	if p.gate.Throttled() {
		_ = p.gate.Wait(ctx, p.maxWait)
	}
}

// Wait is BlockWait that says why it returned (see Waiter).
func (p *Pause) Wait(ctx context.Context) error { return p.gate.Wait(ctx, p.maxWait) }

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
// throttles: "paused manually: <reason>" (with "(until <time>)" for
// PauseFor), "flag file /path exists", a flag file check's error, or both
// joined with "; ".
func (p *Pause) ThrottleReason() string { return p.gate.Reason() }

// Stats is what the Pause has done since Open (see Stats); Measurements
// are the flag file's checks.
func (p *Pause) Stats() Stats {
	var ok, failed int64
	var last time.Time
	if p.poll != nil {
		ok, failed, last = p.poll.Counts()
	}
	return statsOf(p.gate.Ledger(), ok, failed, last)
}

func (p *Pause) stateGate() *gate.Gate { return &p.gate }

var (
	_ Throttler = (*Pause)(nil)
	_ Waiter    = (*Pause)(nil)
	_ Reasoner  = (*Pause)(nil)
)

// String is the name given with WithName, or "pause", which names it in the
// reasons of a Multi that holds it.
func (p *Pause) String() string { return cmp.Or(p.name, "pause") }
