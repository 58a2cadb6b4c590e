package promthrottler_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/promthrottler"
)

func ExampleNewCollector() {
	pause, err := throttler.NewPause(throttler.PauseConfig{}, nil, throttler.WithName("backfill"))
	if err != nil {
		panic(err)
	}
	if err := pause.Open(context.Background()); err != nil {
		panic(err)
	}
	defer pause.Close()

	// prometheus.MustRegister(...) for the default registry, which
	// promhttp.Handler() serves.
	c := promthrottler.NewCollector(pause)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	pause.Pause("maintenance")
	// What a scrape of /metrics shows, in part:
	text, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain,
		"throttler_throttled", "throttler_episodes_total")
	if err != nil {
		panic(err)
	}
	fmt.Print(string(text))
	// Output:
	// # HELP throttler_episodes_total Throttled periods begun since Open.
	// # TYPE throttler_episodes_total counter
	// throttler_episodes_total{throttler="backfill"} 1
	// # HELP throttler_throttled Whether the throttler throttles now (1) or not (0).
	// # TYPE throttler_throttled gauge
	// throttler_throttled{throttler="backfill"} 1
}
