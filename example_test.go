package throttler_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/throttlekit/throttler"
)

// A copier that must never wait, for example in a dry run.
func ExampleNoop() {
	var t throttler.Throttler = throttler.Noop{}
	ctx := context.Background()
	if err := t.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer t.Close()
	for chunk := range 3 {
		t.BlockWait(ctx) // returns at once
		fmt.Println("copied chunk", chunk)
	}
	// Output:
	// copied chunk 0
	// copied chunk 1
	// copied chunk 2
}

// Unit tests of code that takes a Throttler: the Mock starts throttled, and
// the test decides when the replicas "catch up".
func ExampleMock() {
	m := &throttler.Mock{BlockTime: time.Hour}
	ctx := context.Background()

	resumed := make(chan struct{})
	go func() {
		m.BlockWait(ctx) // blocks: the zero value is throttled
		close(resumed)
	}()
	fmt.Println("throttled:", m.IsThrottled())
	m.SetThrottled(false) // wakes the waiter at once
	<-resumed
	fmt.Println("throttled:", m.IsThrottled(), "calls:", m.BlockWaitCalls())
	// Output:
	// throttled: true
	// throttled: false calls: 1
}

// The replication throttler in a chunked copier: one BlockWait per chunk.
func ExampleNewReplicationThrottler() {
	replica, err := sql.Open("mysql", os.Getenv("REPLICA_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer replica.Close()

	t, err := throttler.NewReplicationThrottler(replica, 10*time.Second, slog.Default(),
		throttler.WithInterval(500*time.Millisecond))
	if err != nil {
		log.Fatal(err) // bad configuration
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := t.Open(ctx); err != nil {
		log.Fatal(err) // for example throttler.ErrNotReplica, or a missing grant
	}
	defer t.Close()

	for chunk := range 100 {
		t.BlockWait(ctx)
		_ = chunk // copy the chunk
	}
}

// Callers that must not go on while still throttled use the Waiter interface
// to learn why a wait ended.
func ExampleWaiter() {
	var t throttler.Throttler = &throttler.Mock{BlockTime: time.Millisecond}
	ctx := context.Background()
	w, ok := t.(throttler.Waiter)
	if !ok {
		t.BlockWait(ctx)
		return
	}
	for {
		err := w.Wait(ctx)
		if errors.Is(err, throttler.ErrMaxWait) {
			fmt.Println("still throttled; not copying yet")
			t.(*throttler.Mock).SetThrottled(false) // in real life: the replica catches up
			continue
		}
		fmt.Println("wait ended:", err)
		break
	}
	// Output:
	// still throttled; not copying yet
	// wait ended: <nil>
}
