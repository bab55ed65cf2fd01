package limits_test

import (
	"fmt"
	"testing"
	"time"

	"tollgate"
	"tollgate/limits"
)

// benchLimits is a paid plan's shape with limits high enough that a
// benchmark exercises every bucket without being refused: a request bucket,
// a tokens-per-minute bucket and a concurrency cap.
var benchLimits = tollgate.Limits{RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e12, MaxConcurrent: 1 << 20}

// benchQuota adds monthly quotas, read from the Ledger on every Admit.
var benchQuota = tollgate.Limits{RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e12, MaxConcurrent: 1 << 20,
	MonthlyRequests: 1e15, MonthlyTokens: 1e15}

// fixedLedger reports the same month usage for every key, as a
// read-mostly counter would, without a lock of its own.
type fixedLedger struct{}

func (fixedLedger) Used(string) (int64, int64) { return 1000, 1_000_000 }

// admitSettle is what the gateway does for each admitted request: Admit,
// State (for the rate-limit headers), then Settle with the tokens used.
func admitSettle(b *testing.B, l *limits.Limiter, key string, lim tollgate.Limits, withState bool) bool {
	now := time.Now()
	ls, err := l.Admit(ctx, limits.Request{KeyID: key, Limits: lim, Prompt: 100, Output: 256, MinOutput: 1, Now: now})
	if err != nil {
		b.Errorf("refused: %v", err) // b.Fatal may not be called off the benchmark goroutine
		return false
	}
	if withState {
		_ = l.State(key, lim, now)
	}
	_ = ls.Settle(ctx, limits.Settlement{Tokens: 142, Now: now})
	return true
}

// BenchmarkLimiter measures one request's limiter work (Admit+Settle, and
// with State as the gateway calls it) for one key, for many keys held at
// once, and for more keys than the Limiter keeps (which prunes idle ones),
// serially and from all CPUs at once. Every call reads the clock, as the
// gateway does. The quota variant also reads month usage from a Ledger.
func BenchmarkLimiter(b *testing.B) {
	for _, nkeys := range []int{1, 10_000, 20_000} {
		ids := make([]string, nkeys)
		for i := range ids {
			ids[i] = fmt.Sprintf("key_%06d", i)
		}
		for _, withState := range []bool{false, true} {
			name := fmt.Sprintf("keys=%d/admit+settle", nkeys)
			if withState {
				name = fmt.Sprintf("keys=%d/admit+state+settle", nkeys)
			}
			b.Run(name, func(b *testing.B) {
				l := limits.New(nil, 0) // as served: holds 10,000 idle keys
				for _, id := range ids {
					admitSettle(b, l, id, benchLimits, false)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if !admitSettle(b, l, ids[i%nkeys], benchLimits, withState) {
						return
					}
					i++
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				l := limits.New(nil, 0)
				for _, id := range ids {
					admitSettle(b, l, id, benchLimits, false)
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if !admitSettle(b, l, ids[i%nkeys], benchLimits, withState) {
							return
						}
						i += 7919 // goroutines walk the keys out of step
					}
				})
			})
		}
	}
	b.Run("keys=1/admit+state+settle/quota", func(b *testing.B) {
		l := limits.New(fixedLedger{}, 0)
		b.ReportAllocs()
		for b.Loop() {
			if !admitSettle(b, l, "key", benchQuota, true) {
				return
			}
		}
	})
}
