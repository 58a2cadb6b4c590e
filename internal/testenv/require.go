package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// SkipMessage is how Require skips when no pair is configured.
const SkipMessage = "integration test: needs the local MariaDB replica pair; `make test` starts it (or: go run ./internal/testenv/cmd/replicapair up)"

// useLockName is the lock a test process holds while it may inject faults.
const useLockName = "use.lock"

// held keeps, per pair directory, the lock this process owns the pair by.
// The release functions stay referenced here: a lost *os.File would be
// closed by its finalizer, silently dropping the lock.
var held struct {
	sync.Mutex
	dirs map[string]func()
}

// Require returns the pair named by THROTTLER_TESTENV_DIR for an
// integration test, healthy, and resets it when the test ends so that a
// test's faults never leak into the next one.
//
// Without THROTTLER_TESTENV_DIR the test is skipped. When the pair cannot be
// loaded or repaired, the test fails if THROTTLER_TESTENV_REQUIRED is "1"
// (CI) and is skipped otherwise.
//
// `go test ./...` runs packages in parallel processes, and one package's
// injected faults (a frozen replica, a revoked grant) would break another's
// tests. So the first Require in a test process takes an exclusive lock on
// the pair and keeps it until the process exits: test binaries that use the
// pair take turns. Within a process tests run one after another unless they
// call t.Parallel, which tests using Require must not do.
func Require(t testing.TB) *Pair {
	t.Helper()
	dir := os.Getenv(EnvDir)
	if dir == "" {
		t.Skip(SkipMessage)
	}
	unusable := func(err error) {
		t.Helper()
		if os.Getenv(EnvRequired) == "1" {
			t.Fatalf("testenv: %v", err)
		}
		t.Skipf("testenv: pair unavailable (set %s=1 to fail instead): %v", EnvRequired, err)
	}
	if _, err := readState(dir); err != nil {
		unusable(err)
	}
	if err := holdPair(t, dir); err != nil {
		unusable(err)
	}
	p, err := Load(dir)
	if err != nil {
		unusable(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), defaultStartTimeout)
		defer cancel()
		if err := p.Reset(ctx); err != nil {
			t.Errorf("testenv: could not leave the pair healthy: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), defaultStartTimeout)
	defer cancel()
	if err := p.Reset(ctx); err != nil {
		unusable(err)
	}
	return p
}

// holdPair takes this process's lifetime lock on the pair in dir, waiting
// for other test processes (bounded by the test's deadline, or 10 minutes).
func holdPair(t testing.TB, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	held.Lock()
	defer held.Unlock()
	if held.dirs[abs] != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			ctx, cancel = context.WithDeadline(ctx, deadline.Add(-5*time.Second))
			defer cancel()
		}
	}
	quick, cancelQuick := context.WithTimeout(ctx, 100*time.Millisecond)
	unlock, err := lockFile(quick, filepath.Join(abs, useLockName))
	cancelQuick()
	if err != nil {
		t.Logf("testenv: waiting for another test process to finish with the pair in %s", abs)
		unlock, err = lockFile(ctx, filepath.Join(abs, useLockName))
	}
	if err != nil {
		return fmt.Errorf("take the pair: %w", err)
	}
	if held.dirs == nil {
		held.dirs = make(map[string]func())
	}
	held.dirs[abs] = unlock // never called: the kernel releases it at exit
	return nil
}

// Hold takes the pair's use lock in dir for a process that injects faults
// outside a test (the demo), waiting, bounded by ctx, while a test process
// holds it; waiting is called once if it must wait. Tests use Require, which
// takes the same lock. The kernel drops the lock if the process dies.
func Hold(ctx context.Context, dir string, waiting func()) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("take the pair's use lock: %w", err)
	}
	path := filepath.Join(dir, useLockName)
	quick, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	release, err = lockFile(quick, path)
	cancel()
	if err == nil {
		return release, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("take the pair's use lock: %w", err)
	}
	if waiting != nil {
		waiting()
	}
	release, err = lockFile(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("take the pair's use lock: %w", err)
	}
	return release, nil
}
