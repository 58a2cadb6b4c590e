package ptheartbeat

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The columns the readers depend on are there with pt-heartbeat's types:
// HeartbeatSource reads ts and server_id, and pt-heartbeat --update writes
// all six.
func TestCreateTable(t *testing.T) {
	stmt := fmt.Sprintf(CreateTable, "`percona`.`heartbeat`")
	assert.Contains(t, stmt, "CREATE TABLE IF NOT EXISTS `percona`.`heartbeat` (")
	for _, col := range []string{
		`ts\s+varchar\(26\) NOT NULL`,
		`server_id\s+int unsigned NOT NULL PRIMARY KEY`,
		`file\s+varchar\(255\)`,
		`position\s+bigint unsigned`,
		`relay_master_log_file\s+varchar\(255\)`,
		`exec_master_log_pos\s+bigint unsigned`,
	} {
		assert.Regexp(t, regexp.MustCompile(col), stmt)
	}
}
