package throttler_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/throttlekit/throttler"
)

// A copier that asks Freno before each chunk. Here a stand-in server refuses
// (429) until the replicas catch up.
func ExampleNewHTTP() {
	var status atomic.Int32
	status.Store(http.StatusTooManyRequests)
	freno := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"StatusCode":%d,"Value":2.5,"Threshold":1,"Message":""}`, code)
	}))
	defer freno.Close()

	t, err := throttler.NewHTTP(throttler.HTTPConfig{
		URL:    throttler.FrenoURL(freno.URL, "myapp", "mysql", "main"),
		Method: http.MethodGet, // GET bodies explain a refusal; HEAD is lighter
	}, nil, throttler.WithInterval(time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := t.Open(ctx); err != nil {
		log.Fatal(err) // Freno unreachable
	}
	defer t.Close()
	fmt.Println(strings.Replace(t.ThrottleReason(), freno.URL, "http://freno:8111", 1))

	status.Store(http.StatusOK)
	_ = t.UpdateLag(ctx) // the monitor would ask within WithInterval
	t.BlockWait(ctx)     // returns at once
	fmt.Println("throttled:", t.IsThrottled())
	// Output:
	// HTTP check http://freno:8111/check/myapp/mysql/main: 429 Too Many Requests: threshold exceeded (value 2.5, threshold 1)
	// throttled: false
}

// An operator pauses a running copier and resumes it; Resume wakes the
// copier at once. PauseConfig.FlagFile would add gh-ost's throttle flag file.
func ExamplePause() {
	p, err := throttler.NewPause(throttler.PauseConfig{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	p.Pause("deploy in progress") // from a control endpoint, say
	fmt.Println(p.IsThrottled(), p.ThrottleReason())

	copied := make(chan struct{})
	go func() {
		p.BlockWait(ctx) // blocks until Resume
		close(copied)
	}()
	p.Resume()
	<-copied
	fmt.Println(p.IsThrottled(), p.Paused())
	// Output:
	// true paused manually: deploy in progress
	// false false
}

// No copying around the New York stock market's open on weekdays. StateAt
// says what the schedule decides at any instant, without opening it.
func ExampleSchedule_StateAt() {
	s, err := throttler.NewSchedule(throttler.ScheduleConfig{
		TimeZone: "America/New_York",
		Windows: []throttler.Window{{
			Days:  []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday},
			Start: "09:15",
			End:   "09:45",
		}},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	ny := s.Location()
	for _, at := range []time.Time{
		time.Date(2026, 3, 6, 9, 30, 0, 0, ny), // a Friday
		time.Date(2026, 3, 6, 9, 45, 0, 0, ny),
	} {
		throttled, reason, next := s.StateAt(at)
		if !throttled {
			reason = "clear"
		}
		fmt.Printf("%s: %s; next change %s\n", at.Format("Mon 15:04"), reason, next.In(ny).Format("Mon Jan 2 15:04 MST"))
	}
	// Output:
	// Fri 09:30: scheduled window 09:15-09:45 America/New_York (Mon-Fri); next change Fri Mar 6 09:45 EST
	// Fri 09:45: clear; next change Mon Mar 9 09:15 EDT
}
