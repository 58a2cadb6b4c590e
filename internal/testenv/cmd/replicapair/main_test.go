package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUsageErrors: bad command lines exit 2 with the usage, and touch no
// server (these run without a pair).
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		say  string
	}{
		{nil, 2, "usage: replicapair"},
		{[]string{"-dir", "/tmp/x"}, 2, "usage: replicapair"},
		{[]string{"launch"}, 2, `unknown command "launch"`},
		{[]string{"up", "-bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"down", "-second"}, 2, "flag provided but not defined: -second"},
		{[]string{"status", "extra"}, 2, ""},
		{[]string{"help"}, 0, ""},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		assert.Equal(t, c.code, code, "%q", c.args)
		if c.say != "" {
			assert.Contains(t, errOut.String(), c.say, "%q", c.args)
		}
	}
	var out bytes.Buffer
	run([]string{"help"}, &out, &bytes.Buffer{})
	assert.Contains(t, out.String(), "usage: replicapair up|down|status|env")
}

func TestStatusOfAMissingPair(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"status", "-dir", t.TempDir()}, &out, &errOut)
	assert.Equal(t, 1, code, "no pair there: %s%s", out.String(), errOut.String())
}
