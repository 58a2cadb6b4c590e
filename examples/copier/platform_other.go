//go:build !linux

package main

import (
	"context"
	"io"
)

// holdPair is a no-op where the local pair is unsupported (testenv.Up then
// says so).
func holdPair(context.Context, string, func()) (func(), error) { return func() {}, nil }

// terminalWidth is a conservative guess where it is not looked up.
func terminalWidth(io.Writer) int { return 80 }
