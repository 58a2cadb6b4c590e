package throttler_test

import (
	"context"
	"database/sql"
	"errors"
	"log"
	"log/slog"
	"os"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/throttlekit/throttler"
)

// A copier that backs off while the primary is busy (gh-ost's --max-load)
// and gives up when it is overwhelmed (--critical-load).
func ExampleNewLoad() {
	primary, err := sql.Open("mysql", os.Getenv("PRIMARY_DSN")) // any user: SHOW GLOBAL STATUS needs no privilege
	if err != nil {
		log.Fatal(err)
	}
	defer primary.Close()

	load, err := throttler.NewLoad(primary, throttler.LoadConfig{
		Threshold: 25,  // pause while Threads_running >= 25
		Critical:  100, // and abort at 100
	}, slog.Default(), throttler.WithInterval(500*time.Millisecond))
	if err != nil {
		log.Fatal(err) // bad configuration
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := load.Open(ctx); err != nil {
		log.Fatal(err) // for example a status variable the server does not have
	}
	defer load.Close()

	for chunk := range 100 {
		if load.IsCritical() {
			log.Printf("aborting the copy: %s", load.CriticalReason())
			return
		}
		load.BlockWait(ctx)
		_ = chunk // copy the chunk
	}
}

// A copier that an operator pauses by setting a row (gh-ost's
// --throttle-query): the query returns 0 to go on and 1 to pause.
func ExampleNewQuery() {
	primary, err := sql.Open("mysql", os.Getenv("PRIMARY_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer primary.Close()

	q, err := throttler.NewQuery(primary, throttler.QueryConfig{
		SQL:       "SELECT paused FROM ops.copier_control WHERE job = ?",
		Args:      []any{"orders-backfill"},
		Threshold: 1,
	}, slog.Default())
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := q.Open(ctx); err != nil {
		log.Fatal(err) // for example a query error, or a query that returns no row
	}
	defer q.Close()

	for chunk := range 100 {
		// Wait, unlike BlockWait, says why it returned: a copier that must
		// not go on while paused waits again after ErrMaxWait.
		for err := q.Wait(ctx); err != nil; err = q.Wait(ctx) {
			if !errors.Is(err, throttler.ErrMaxWait) {
				return // ctx ended, or the throttler was closed
			}
			log.Printf("chunk %d still waiting: %v", chunk, err) // the error names the reason
		}
		_ = chunk // copy the chunk
	}
}
