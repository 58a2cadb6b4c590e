package throttler

import (
	"errors"
	"fmt"
	"time"
)

// Steering a running throttler: SetTolerance and Utilization for the
// throttlers that hold others (Discovery, Multi). Their members and children
// do the judging (see ToleranceSetter and Utilizer); these only fan out.

// toleranceChecker is a ToleranceSetter of this package whose check can be
// asked before anything changes, so that a set of them changes all or
// nothing.
type toleranceChecker interface {
	// checkTolerance says why d cannot be the tolerance, or nil;
	// setTolerance sets one it accepted.
	checkTolerance(d time.Duration) error
	setTolerance(d time.Duration)
}

var (
	_ toleranceChecker = (*Replication)(nil)
	_ toleranceChecker = (*Discovery)(nil)
)

// toleranceError is SetTolerance's error for problems found before any
// change: it wraps ErrInvalidConfig once.
func toleranceError(problems ...error) error {
	return configError([]error{fmt.Errorf("SetTolerance: %w", errors.Join(problems...))})
}

// Tolerance is the lag tolerance now: the constructor's, or the last
// SetTolerance's.
func (d *Discovery) Tolerance() time.Duration { return time.Duration(d.tolerance.Load()) }

// SetTolerance changes the lag tolerance of every member, watched now or
// later, as ToleranceSetter says.
func (d *Discovery) SetTolerance(tol time.Duration) error {
	if err := d.checkTolerance(tol); err != nil {
		return toleranceError(err)
	}
	d.setTolerance(tol)
	return nil
}

func (d *Discovery) checkTolerance(tol time.Duration) error {
	if tol <= 0 {
		return fmt.Errorf("the lag tolerance %v must be positive", tol)
	}
	if _, err := d.o.paceTarget(tol); d.o.pacing && err != nil {
		return err
	}
	return nil
}

func (d *Discovery) setTolerance(tol time.Duration) {
	old := time.Duration(d.tolerance.Swap(int64(tol)))
	// Members being opened now read the new tolerance, or are published
	// after this store, and publish syncs them then.
	d.syncTolerance(d.cur.Load())
	if old != tol {
		d.log.Info("throttler: lag tolerance changed", "tolerance", tol, "was", old)
	}
}

// syncTolerance gives every watched member of s the tolerance now. It runs
// after each change of tolerance and after each publish of a snapshot, so
// that a member opened with the old tolerance while it changed gets the new
// one; tolMu keeps two changes from crossing on a member.
func (d *Discovery) syncTolerance(s *discoverySet) {
	if s == nil {
		return
	}
	d.tolMu.Lock()
	defer d.tolMu.Unlock()
	tol := d.Tolerance()
	for _, r := range s.watched {
		if r.Tolerance() != tol {
			r.setTolerance(tol)
		}
	}
}

// Utilization is the largest of the watched members', and at least 1 while
// a member cannot be watched; see Utilizer.
func (d *Discovery) Utilization() float64 {
	s := d.cur.Load()
	if s == nil || s.released || d.gate.Released() {
		return 0
	}
	u := 0.0
	if s.failed {
		u = 1
	}
	for _, r := range s.watched {
		u = max(u, r.Utilization())
	}
	return u
}

// SetTolerance sets the lag tolerance of every child (the replicas of
// NewReplicasThrottler), as ToleranceSetter says, or of none: every child
// must have one. The children of this package are asked first whether they
// accept it, and any problem changes nothing; a child of another kind (or a
// Multi) cannot be asked beforehand, so it is set before them, in order, and
// its error stops the change there.
func (m *Multi) SetTolerance(d time.Duration) error {
	if m.invalid != nil {
		return m.invalid
	}
	var problems []error
	var others []int
	for i, t := range m.children {
		switch c := t.(type) {
		case toleranceChecker:
			if err := c.checkTolerance(d); err != nil {
				problems = append(problems, fmt.Errorf("%s: %w", m.names[i], err))
			}
		case ToleranceSetter:
			others = append(others, i)
		default:
			problems = append(problems, fmt.Errorf("%s has no lag tolerance to set", m.names[i]))
		}
	}
	if len(problems) > 0 {
		return toleranceError(problems...)
	}
	for _, i := range others {
		if err := m.children[i].(ToleranceSetter).SetTolerance(d); err != nil {
			return fmt.Errorf("throttler: SetTolerance: %s: %w", m.names[i], err)
		}
	}
	for _, t := range m.children {
		if c, ok := t.(toleranceChecker); ok {
			c.setTolerance(d)
		}
	}
	return nil
}

// Utilization is the largest of the children's: a child that is not a
// Utilizer counts 1 while throttled, 0 otherwise; see Utilizer.
func (m *Multi) Utilization() float64 {
	if m.invalid != nil || m.ended() {
		return 0
	}
	u := 0.0
	for _, t := range m.children {
		if x, ok := t.(Utilizer); ok {
			u = max(u, x.Utilization())
		} else if t.IsThrottled() {
			u = max(u, 1)
		}
	}
	return u
}

var (
	_ Utilizer        = (*Discovery)(nil)
	_ Utilizer        = (*Multi)(nil)
	_ ToleranceSetter = (*Discovery)(nil)
	_ ToleranceSetter = (*Multi)(nil)
)
