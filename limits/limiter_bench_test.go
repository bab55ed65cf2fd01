package auth_test

import (
	"fmt"
	"testing"
	"time"

	"tollgate/auth"
)

// benchLimits is a paid plan's shape with limits high enough that a
// benchmark exercises every bucket without being refused: a request bucket,
// a tokens-per-minute bucket and a concurrency cap.
var benchLimits = auth.Limits{RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e12, MaxConcurrent: 1 << 20}

// admitDone is what the handler chain does for each admitted request:
// Admit, State (for the rate-limit headers), then Done with the tokens used.
func admitDone(b *testing.B, l *auth.Limiter, key string, withState bool) {
	now := time.Now()
	if r := l.Admit(key, benchLimits, now); r != nil {
		b.Fatalf("refused: %+v", r)
	}
	if withState {
		_ = l.State(key, benchLimits, now)
	}
	l.Done(key, 42, now)
}

// BenchmarkLimiter measures one request's limiter work (Admit+Done, and
// with State as the handlers call it) for one key, for many keys held at
// once, and for more keys than the Limiter keeps (which prunes idle ones),
// serially and from all CPUs at once. Every call reads the clock, as the
// handlers do.
func BenchmarkLimiter(b *testing.B) {
	for _, nkeys := range []int{1, 10_000, 20_000} {
		ids := make([]string, nkeys)
		for i := range ids {
			ids[i] = fmt.Sprintf("key_%06d", i)
		}
		for _, withState := range []bool{false, true} {
			name := fmt.Sprintf("keys=%d/admit+done", nkeys)
			if withState {
				name = fmt.Sprintf("keys=%d/admit+state+done", nkeys)
			}
			b.Run(name, func(b *testing.B) {
				l := auth.NewLimiter(0) // as served: holds 10,000 idle keys
				for _, id := range ids {
					l.Admit(id, benchLimits, time.Now())
					l.Done(id, 0, time.Now())
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					admitDone(b, l, ids[i%nkeys], withState)
					i++
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				l := auth.NewLimiter(0)
				for _, id := range ids {
					l.Admit(id, benchLimits, time.Now())
					l.Done(id, 0, time.Now())
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						admitDone(b, l, ids[i%nkeys], withState)
						i += 7919 // goroutines walk the keys out of step
					}
				})
			})
		}
	}
}
