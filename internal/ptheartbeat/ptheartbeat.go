// Package ptheartbeat holds pt-heartbeat's table definition, shared by the
// library's heartbeat writer, the test servers of internal/testenv and the
// tests, so that all of them create the same table.
package ptheartbeat

// CreateTable is pt-heartbeat's --create-table definition; %s is the table
// name, quoted as needed.
const CreateTable = `CREATE TABLE IF NOT EXISTS %s (
  ts                    varchar(26) NOT NULL,
  server_id             int unsigned NOT NULL PRIMARY KEY,
  file                  varchar(255) DEFAULT NULL,
  position              bigint unsigned DEFAULT NULL,
  relay_master_log_file varchar(255) DEFAULT NULL,
  exec_master_log_pos   bigint unsigned DEFAULT NULL
)`
