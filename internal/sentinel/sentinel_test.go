package sentinel

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Callers branch on these with errors.Is: no two may match each other.
func TestDistinct(t *testing.T) {
	all := []error{ErrAlreadyOpen, ErrClosed, ErrNotOpen, ErrMaxWait}
	for i, a := range all {
		for j, b := range all {
			assert.Equal(t, i == j, errors.Is(a, b), "%v vs %v", a, b)
		}
	}
}
