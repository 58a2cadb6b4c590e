// Package doormanpb is the Go code generated from proto/doorman.proto: the
// messages and the gRPC service (doorman.Capacity) of YouTube's Doorman wire
// protocol, which the module's throttler speaks and its tests serve.
//
// The .proto was written for this module from the protocol's public
// description, not copied from Doorman's repository. Its message names are
// Doorman's (package doorman), as the wire requires: a program that also
// links Doorman's own generated package registers each name twice.
package doormanpb
