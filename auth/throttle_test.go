package auth_test

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"tollgate/auth"
)

func TestThrottleBlocksAfterBurstAndRefills(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := auth.NewThrottle(rate.Every(10*time.Second), 3, 0) // 3 failures, then one per 10 s
	if w := th.Wait("1.2.3.4", t0); w != 0 {
		t.Fatalf("fresh address waits %v", w)
	}
	for i := 0; i < 3; i++ {
		th.Take("1.2.3.4", t0)
	}
	if w := th.Wait("1.2.3.4", t0); w != 10*time.Second {
		t.Fatalf("after the burst Wait = %v, want 10s", w)
	}
	if w := th.Wait("5.6.7.8", t0); w != 0 {
		t.Fatalf("another address is blocked too: %v", w)
	}
	if w := th.Wait("1.2.3.4", t0.Add(4*time.Second)); w != 6*time.Second {
		t.Fatalf("4 s later Wait = %v, want 6s", w)
	}
	if w := th.Wait("1.2.3.4", t0.Add(10*time.Second)); w != 0 {
		t.Fatalf("after a refill Wait = %v, want 0", w)
	}
	// Hammering while blocked digs a deeper hole, bounded by one burst.
	for i := 0; i < 100; i++ {
		th.Take("1.2.3.4", t0)
	}
	if w := th.Wait("1.2.3.4", t0); w <= 10*time.Second || w > 40*time.Second {
		t.Fatalf("after hammering Wait = %v, want between 10s and 40s", w)
	}
}

func TestThrottleMemoryStaysBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := auth.NewThrottle(rate.Every(time.Second), 2, 100)
	for i := 0; i < 10_000; i++ {
		th.Take(fmt.Sprint("addr", i), t0.Add(time.Duration(i)*time.Second))
	}
	if n := th.Len(); n > 100 {
		t.Fatalf("throttle holds %d buckets, limit 100", n)
	}
}
