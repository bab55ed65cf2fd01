package auth_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func admitN(l *auth.Limiter, key string, lim auth.Limits, n int, now time.Time) (ok int, last *auth.Rejection) {
	for i := 0; i < n; i++ {
		if r := l.Admit(key, lim, now); r != nil {
			last = r
			continue
		}
		ok++
		l.Done(key, 0, now)
	}
	return ok, last
}

func TestLimiterRequestBucket(t *testing.T) {
	l := auth.NewLimiter(0)
	lim := auth.Limits{RequestsPerSecond: 2, Burst: 4}
	ok, rej := admitN(l, "k", lim, 10, t0)
	if ok != 4 || rej == nil || rej.Reason != auth.ReasonRate {
		t.Fatalf("burst of 10 at one instant: %d admitted, rejection %+v; want 4 and a rate rejection", ok, rej)
	}
	if rej.RetryAfter != 500*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 500ms (one token at 2/s)", rej.RetryAfter)
	}
	// Just before the refill: still refused. At it: admitted. Never early.
	if r := l.Admit("k", lim, t0.Add(499*time.Millisecond)); r == nil {
		t.Fatal("admitted before the bucket refilled")
	}
	if r := l.Admit("k", lim, t0.Add(500*time.Millisecond)); r != nil {
		t.Fatalf("refused at the promised time: %+v", r)
	}
	// Another key is independent.
	if ok, _ := admitN(l, "other", lim, 4, t0); ok != 4 {
		t.Fatalf("a quiet key got %d of 4", ok)
	}
}

func TestLimiterTokensPerMinuteDebt(t *testing.T) {
	l := auth.NewLimiter(0)
	lim := auth.Limits{TokensPerMinute: 600} // 10 tokens/s
	if r := l.Admit("k", lim, t0); r != nil {
		t.Fatal(r)
	}
	l.Done("k", 900, t0) // one request overshoots: 300 in debt
	r := l.Admit("k", lim, t0)
	if r == nil || r.Reason != auth.ReasonTokens {
		t.Fatalf("key in debt admitted: %+v", r)
	}
	if r.RetryAfter != 30100*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 30.1s (301 tokens at 10/s)", r.RetryAfter)
	}
	if r := l.Admit("k", lim, t0.Add(30*time.Second)); r == nil {
		t.Fatal("admitted while the debt is not paid back")
	}
	if r := l.Admit("k", lim, t0.Add(30100*time.Millisecond)); r != nil {
		t.Fatalf("refused after paying back: %+v", r)
	}
	st := l.State("k", lim, t0.Add(30100*time.Millisecond))
	if st.RemainingTokens != 1 || st.ResetTokens <= 0 {
		t.Fatalf("state %+v", st)
	}
}

func TestLimiterConcurrency(t *testing.T) {
	l := auth.NewLimiter(0)
	lim := auth.Limits{MaxConcurrent: 2}
	for i := 0; i < 2; i++ {
		if r := l.Admit("k", lim, t0); r != nil {
			t.Fatal(r)
		}
	}
	if r := l.Admit("k", lim, t0); r == nil || r.Reason != auth.ReasonConcurrency {
		t.Fatalf("third concurrent request: %+v", r)
	}
	l.Done("k", 0, t0)
	if r := l.Admit("k", lim, t0); r != nil {
		t.Fatalf("slot not released: %+v", r)
	}
}

func TestLimiterLimitsChangeWithoutRestart(t *testing.T) {
	l := auth.NewLimiter(0)
	slow := auth.Limits{RequestsPerSecond: 1, Burst: 1}
	if ok, _ := admitN(l, "k", slow, 5, t0); ok != 1 {
		t.Fatalf("slow plan admitted %d", ok)
	}
	fast := auth.Limits{RequestsPerSecond: 100, Burst: 50}
	if ok, _ := admitN(l, "k", fast, 50, t0); ok != 50 {
		t.Fatalf("after an upgrade admitted %d of 50", ok)
	}
	if ok, _ := admitN(l, "k", auth.Limits{}, 1000, t0); ok != 1000 {
		t.Fatalf("unlimited key refused")
	}
}

func TestLimiterStateAndUnlimited(t *testing.T) {
	l := auth.NewLimiter(0)
	lim := auth.Limits{RequestsPerSecond: 1, Burst: 10, TokensPerMinute: 1000}
	st := l.State("new", lim, t0)
	if st.RemainingReqs != 10 || st.RemainingTokens != 1000 {
		t.Fatalf("fresh state %+v", st)
	}
	admitN(l, "new", lim, 3, t0)
	st = l.State("new", lim, t0)
	if st.RemainingReqs != 7 || st.ResetReqs != 3*time.Second {
		t.Fatalf("after 3 requests %+v; want 7 left, full in 3s", st)
	}
}

func TestLimiterDropsIdleKeys(t *testing.T) {
	l := auth.NewLimiter(100)
	lim := auth.Limits{RequestsPerSecond: 1, Burst: 1}
	for i := 0; i < 10_000; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		if r := l.Admit(fmt.Sprint("key", i), lim, now); r != nil {
			t.Fatal(r)
		}
		l.Done(fmt.Sprint("key", i), 0, now)
	}
	if n := l.Len(); n > 101 {
		t.Fatalf("limiter holds %d keys; idle ones must be dropped (limit 100)", n)
	}
}

// A concurrent burst never admits more than the bucket holds.
func TestLimiterConcurrentBurst(t *testing.T) {
	l := auth.NewLimiter(0)
	lim := auth.Limits{RequestsPerSecond: 1, Burst: 25, MaxConcurrent: 1000}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if l.Admit("k", lim, t0) == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ok != 25 {
		t.Fatalf("500 concurrent attempts admitted %d, want exactly the burst of 25", ok)
	}
}
