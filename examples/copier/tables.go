package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// columns are the copied columns, in table order.
const columns = "id, customer, email, amount, created_at, note"

// rowValues computes a row from its id, n: the fill is deterministic, so a
// statement-based replica would get the same rows too.
const rowValues = `n,
	CONCAT('customer-', n % 9973),
	CONCAT('user', n, '@example.com'),
	(n * 7919 % 100000) / 100,
	TIMESTAMP('2024-01-01') + INTERVAL (n * 37 % 31536000) SECOND,
	MD5(n)`

// tables is the source table and its copy, on the primary.
type tables struct {
	db       *sql.DB
	src, dst string // qualified, quoted names
}

// quote quotes an identifier: `name`.
func quote(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// qualify names a table of a database: `db`.`table`.
func qualify(db, table string) string { return quote(db) + "." + quote(table) }

// create (re)creates the database if missing, the source table with rows
// rows and an empty copy, so that every run starts alike. The source is
// filled by doubling: each INSERT ... SELECT copies every row so far with
// its id shifted, about 19 statements for 300,000 rows.
func (tb tables) create(ctx context.Context, database string, rows int) error {
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS " + quote(database),
		"DROP TABLE IF EXISTS " + tb.dst + ", " + tb.src,
		"CREATE TABLE " + tb.src + ` (
			id         BIGINT UNSIGNED NOT NULL PRIMARY KEY,
			customer   VARCHAR(32)     NOT NULL,
			email      VARCHAR(64)     NOT NULL,
			amount     DECIMAL(10,2)   NOT NULL,
			created_at DATETIME        NOT NULL,
			note       CHAR(32)        NOT NULL
		) ENGINE=InnoDB`,
		"CREATE TABLE " + tb.dst + " LIKE " + tb.src,
		fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM (SELECT 1 AS n) AS seed", tb.src, columns, rowValues),
	}
	for _, s := range stmts {
		if _, err := tb.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create tables: %s: %w", firstLine(s), err)
		}
	}
	double := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM (SELECT id + ? AS n FROM %s WHERE id + ? <= ?) AS more",
		tb.src, columns, rowValues, tb.src)
	for have := 1; have < rows; have *= 2 {
		if _, err := tb.db.ExecContext(ctx, double, have, have, rows); err != nil {
			return fmt.Errorf("fill %s (%d of %d rows): %w", tb.src, have, rows, err)
		}
	}
	return nil
}

// verify compares the row count and a checksum of every column of the
// source and the copy. checksum is the source's.
func (tb tables) verify(ctx context.Context) (ok bool, checksum string, err error) {
	sum := func(table string) (string, error) {
		var count int64
		var crc string
		err := tb.db.QueryRowContext(ctx, fmt.Sprintf(
			"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('#', %s))), 0) FROM %s", columns, table)).Scan(&count, &crc)
		if err != nil {
			return "", fmt.Errorf("checksum %s: %w", table, err)
		}
		return fmt.Sprintf("%s rows, CRC32 sum %s", thousands(count), crc), nil
	}
	src, err := sum(tb.src)
	if err != nil {
		return false, "", err
	}
	dst, err := sum(tb.dst)
	if err != nil {
		return false, src, err
	}
	return src == dst, src, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
