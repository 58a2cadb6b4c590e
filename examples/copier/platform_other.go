//go:build !linux

package main

import "io"

// terminalWidth is a conservative guess where it is not looked up.
func terminalWidth(io.Writer) int { return 80 }
