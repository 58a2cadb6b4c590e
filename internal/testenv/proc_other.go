//go:build !linux

package testenv

import (
	"context"
	"errors"
	"syscall"
)

// The test environment relies on /proc, setsid and flock as found on Linux;
// elsewhere the package compiles (so tests importing it build) and every
// entry point reports that it is unsupported, which Require turns into a skip.
var errUnsupported = errors.New("testenv: the local MariaDB pair is only supported on Linux")

func processArgs(int) ([]string, bool)                 { return nil, false }
func exiting(int) bool                                 { return false }
func signalProcess(int, syscall.Signal) error          { return errUnsupported }
func lockFile(context.Context, string) (func(), error) { return nil, errUnsupported }
func startDetached(context.Context, string, ...string) (int, error) {
	return 0, errUnsupported
}

const (
	sigKill = syscall.SIGKILL
	sigTerm = syscall.SIGTERM
	sigStop = syscall.Signal(0x13)
	sigCont = syscall.Signal(0x12)
)
