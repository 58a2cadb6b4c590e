// Package promthrottler exports what throttlers do as Prometheus metrics.
//
//	prometheus.MustRegister(promthrottler.NewCollector(t))
//
// It lives in a module of its own so that the throttler module needs no
// Prometheus client. The collector reads each throttler's Stats (and its
// Lag and Utilization, where it has them) when it is scraped: it starts no
// goroutine and polls nothing, so it costs nothing between scrapes.
//
// Every series is labelled throttler, the throttler's name: its String
// method (see throttler.WithName), else "throttler <position>", with
// " #<position>" added when several share a name (as throttler.Multi names
// its children). The metrics:
//
//	throttler_throttled                        gauge, 1 while throttled, else 0
//	throttler_utilization                      gauge, the signal over its threshold (where the throttler has Utilization)
//	throttler_lag_seconds                      gauge, the last lag measured (where the throttler has Lag)
//	throttler_throttled_seconds_total{kind}    counter, time throttled, by kind ("lag", "not flowing", "stale", ...)
//	throttler_episodes_total                   counter, throttled periods begun
//	throttler_waits_total                      counter, waits that blocked
//	throttler_wait_seconds_total               counter, time those waits blocked
//	throttler_measurements_total               counter, successful measurements
//	throttler_measurement_errors_total         counter, failed measurements
//
// A throttler without Stats (one of another package) has throttler_throttled
// only, from IsThrottled, and the gauges it has methods for.
package promthrottler

import (
	"fmt"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throttlekit/throttler"
)

// utilizer is implemented by the throttlers whose signal has a threshold.
type utilizer interface{ Utilization() float64 }

var (
	throttledDesc = desc("throttled", "Whether the throttler throttles now (1) or not (0).")
	utilDesc      = desc("utilization", "The throttler's signal as a fraction of its threshold: 1 or more throttles.")
	lagDesc       = desc("lag_seconds", "The last lag the throttler measured, in seconds.")
	byKindDesc    = desc("throttled_seconds_total", "Time the throttler has been throttled since Open, by kind of reason.", "kind")
	episodesDesc  = desc("episodes_total", "Throttled periods begun since Open.")
	waitsDesc     = desc("waits_total", "BlockWait and Wait calls that had to block.")
	waitedDesc    = desc("wait_seconds_total", "Time BlockWait and Wait calls spent blocked, summed.")
	measuredDesc  = desc("measurements_total", "Successful measurements (readings, requests, flag file checks).")
	failedDesc    = desc("measurement_errors_total", "Failed measurements.")
	invalidDesc   = desc("invalid", "Never exported: it carries a configuration error to the scrape.")

	allDescs = []*prometheus.Desc{throttledDesc, utilDesc, lagDesc, byKindDesc, episodesDesc,
		waitsDesc, waitedDesc, measuredDesc, failedDesc}
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("throttler_"+name, help, append([]string{"throttler"}, labels...), nil)
}

// Collector is a prometheus.Collector for a fixed set of throttlers.
type Collector struct {
	ts    []throttler.Throttler
	names []string
}

// NewCollector returns a Collector for ts, which need not be open yet. A
// nil throttler (a programming error) makes every scrape fail with an
// error that names its position, rather than panic or vanish.
func NewCollector(ts ...throttler.Throttler) *Collector {
	c := &Collector{ts: append([]throttler.Throttler(nil), ts...), names: make([]string, len(ts))}
	seen := make(map[string]int, len(ts))
	for i, t := range ts {
		c.names[i] = fmt.Sprintf("throttler %d", i+1)
		if s, ok := t.(fmt.Stringer); ok && !isNil(t) && s.String() != "" {
			c.names[i] = s.String()
		}
		seen[c.names[i]]++
	}
	// Two series with the same labels would fail every scrape.
	for i, name := range c.names {
		if seen[name] > 1 {
			c.names[i] = fmt.Sprintf("%s #%d", name, i+1)
		}
	}
	return c
}

// Describe sends every metric's description, whether or not a throttler
// of the set has it.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every throttler once.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for i, t := range c.ts {
		name := c.names[i]
		if isNil(t) {
			ch <- prometheus.NewInvalidMetric(invalidDesc, fmt.Errorf("promthrottler: throttler %d is nil", i+1))
			continue
		}
		send := func(d *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) {
			m, err := prometheus.NewConstMetric(d, typ, v, append([]string{name}, labels...)...)
			if err != nil { // a name or kind that is not UTF-8
				m = prometheus.NewInvalidMetric(d, fmt.Errorf("promthrottler: %w", err))
			}
			ch <- m
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) { send(d, prometheus.GaugeValue, v, labels...) }
		counter := func(d *prometheus.Desc, v float64, labels ...string) { send(d, prometheus.CounterValue, v, labels...) }

		r, hasStats := t.(throttler.StatsReporter)
		var s throttler.Stats
		if hasStats {
			s = r.Stats()
		} else {
			s.Throttled = t.IsThrottled()
		}
		gauge(throttledDesc, bool01(s.Throttled))
		if u, ok := t.(utilizer); ok {
			gauge(utilDesc, u.Utilization())
		}
		if l, ok := t.(throttler.LagReporter); ok {
			gauge(lagDesc, l.Lag().Seconds())
		}
		if !hasStats {
			continue
		}
		for kind, d := range s.ThrottledByKind {
			counter(byKindDesc, d.Seconds(), kind)
		}
		counter(episodesDesc, float64(s.Episodes))
		counter(waitsDesc, float64(s.Waits))
		counter(waitedDesc, s.WaitedTotal.Seconds())
		counter(measuredDesc, float64(s.Measurements))
		counter(failedDesc, float64(s.Errors))
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// isNil reports whether t is nil or holds a nil pointer, whose methods
// would panic at the scrape.
func isNil(t throttler.Throttler) bool {
	if t == nil {
		return true
	}
	switch v := reflect.ValueOf(t); v.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map:
		return v.IsNil()
	}
	return false
}

var _ prometheus.Collector = (*Collector)(nil)
