//go:build linux

package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// processArgs returns the argument vector of a live (non-zombie) process, or
// ok=false when there is no such process. A zombie counts as gone: a killed
// server whose parent has not reaped it yet no longer serves anything.
func processArgs(pid int) (args []string, ok bool) {
	if pid <= 0 {
		return nil, false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces or parentheses, so look after the last ')'.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return nil, false
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(raw) == 0 {
		return nil, false
	}
	for _, a := range bytes.Split(bytes.TrimRight(raw, "\x00"), []byte{0}) {
		args = append(args, string(a))
	}
	return args, true
}

// exiting reports whether pid is a process on its way out: not yet a zombie,
// but its memory (and so its cmdline) already released. A server stopped by
// a signal passes through this state, during which processArgs already
// reports it gone.
func exiting(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && len(raw) == 0
}

// signalProcess sends sig to pid.
func signalProcess(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// startDetached runs argv in a new session through a short-lived shell that
// backgrounds it and prints its PID. The server is thus reparented to init and
// never becomes a zombie child of the (possibly long-lived) test process, and
// it survives the exit of whoever started it. Its stdout and stderr (early
// start-up errors, before log-error is open) are appended to logPath.
func startDetached(ctx context.Context, logPath string, argv ...string) (int, error) {
	script := `log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "sh", logPath}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(out)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("start %s: unexpected pid output %q", argv[0], out)
	}
	// $! is known before the forked shell has exec'd the program; until it
	// has, the PID's cmdline is the shell's, and ownership checks would
	// take the server for dead. Wait for the exec (or the exit).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if args, ok := processArgs(pid); !ok || args[0] == argv[0] {
			break
		}
	}
	return pid, nil
}

// lockFile takes an exclusive flock(2) on path, polling so that ctx bounds
// the wait (a blocking flock cannot be interrupted). The lock is released by
// the returned function, or by the kernel when the process exits, so a
// crashed holder never leaves a stale lock behind.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

const (
	sigKill = syscall.SIGKILL
	sigTerm = syscall.SIGTERM
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)
