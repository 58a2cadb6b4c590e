package mysql8test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Emulator stops its server and waits for its connections in Close, so
// a leaked goroutine is a bug, in the throttler (its monitor) or here.
//
// The exceptions only exist where a Docker engine runs the real MySQL 8 test:
// testcontainers keeps one connection to its Ryuk reaper container open for
// the life of the process on purpose (so that Ryuk removes the containers if
// the process dies), and has no call to close it; and a Docker API connection
// returned to net/http's pool after the client's last CloseIdleConnections
// keeps its two goroutines until the pool's idle timeout.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/testcontainers/testcontainers-go.(*Reaper).connect.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}
