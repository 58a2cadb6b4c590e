package doorman_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/doorman"
)

// A copier among many shares "rows-main" with the others, and stops while
// its replicas lag.
func Example() {
	ctx := context.Background()
	logger := slog.Default()
	var replicaDB *sql.DB // the job's replica
	hostname, _ := os.Hostname()

	fleet, err := doorman.New(doorman.Config{
		Addr:         "doorman:15000",
		ClientID:     fmt.Sprintf("%s:%d:backfill", hostname, os.Getpid()),
		ResourceID:   "rows-main",
		Wants:        5000, // rows per second
		UnitsPerCall: 500,  // rows per chunk
	}, logger)
	if err != nil {
		return // names the problem and wraps throttler.ErrInvalidConfig
	}
	replicas, err := throttler.NewReplicasThrottler(map[string]*sql.DB{"replica-1": replicaDB}, 5*time.Second, logger)
	if err != nil {
		return
	}
	t := throttler.NewMulti(replicas, fleet)
	if err := t.Open(ctx); err != nil {
		return
	}
	defer t.Close() // releases the capacity
	for range 10 {
		t.BlockWait(ctx) // stops while a replica lags; else paced to the granted rows/s ÷ 500
		// copy 500 rows
	}
}
