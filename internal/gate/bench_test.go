package gate

import (
	"context"
	"testing"
)

func BenchmarkThrottled(b *testing.B) {
	var g Gate
	b.ReportAllocs()
	for b.Loop() {
		if g.Throttled() {
			b.Fatal("throttled")
		}
	}
}

func BenchmarkWaitClear(b *testing.B) {
	var g Gate
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = g.Wait(ctx, 0)
	}
}
