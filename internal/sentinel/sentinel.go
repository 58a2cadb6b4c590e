// Package sentinel defines the errors of a throttler's lifecycle and wait
// once, for the internal packages that return them and for the root package,
// which exports them under the same names: nothing maps one to another.
package sentinel

import "errors"

var (
	ErrAlreadyOpen = errors.New("throttler already open")
	ErrClosed      = errors.New("throttler closed")
	ErrNotOpen     = errors.New("throttler not open")
	ErrMaxWait     = errors.New("throttled past the maximum wait")
)
