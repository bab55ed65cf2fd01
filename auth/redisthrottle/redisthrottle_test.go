package redisthrottle_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"tollgate/auth"
	"tollgate/auth/redisthrottle"
	"tollgate/internal/redistest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// A client failing on one replica is throttled on the others, exactly as
// one auth.Throttle would throttle it.
func TestSharedAcrossReplicasLikeLocal(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	opts := redisthrottle.Options{Prefix: prefix, RequestTime: true}
	a := redisthrottle.New(rdb, rate.Every(3*time.Second), 5, opts)
	b := redisthrottle.New(rdb, rate.Every(3*time.Second), 5, opts)
	local := auth.NewThrottle(rate.Every(3*time.Second), 5, 0)
	now := t0
	for i := 0; i < 12; i++ {
		took, other := a, b
		if i%2 == 1 {
			took, other = b, a
		}
		took.Take("1.2.3.4", now)
		local.Take("1.2.3.4", now)
		want := local.Wait("1.2.3.4", now)
		// (the local throttle's float steps round up to the next ms)
		if got := took.Wait("1.2.3.4", now); got > want || got < want-2*time.Millisecond {
			t.Fatalf("after %d failures: wait %v, one local throttle says %v", i+1, got, want)
		}
		// The other replica may remember an earlier, shorter wait (it asks
		// Redis again when that ends), but it never lets the client in
		// while Redis would not.
		if got := other.Wait("1.2.3.4", now); (want > 0) != (got > 0) || got > want {
			t.Fatalf("after %d failures: the other replica says wait %v, Redis says %v", i+1, got, want)
		}
		now = now.Add(100 * time.Millisecond)
	}
	if w := b.Wait("5.6.7.8", now); w != 0 {
		t.Fatalf("another address waits %v", w)
	}
	// the debt stops near one full refill: at most 7 tokens' worth, 21 s
	if w := a.Wait("1.2.3.4", now); w <= 0 || w > 21*time.Second {
		t.Fatalf("wait %v, want at most 21s", w)
	}
}

func TestFallsBackToLocal(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	th := redisthrottle.New(rdb, rate.Every(time.Second), 2, redisthrottle.Options{Timeout: 100 * time.Millisecond})
	th.Take("x", t0)
	if w := th.Wait("x", t0); w != 0 {
		t.Fatalf("after 1 of 2: wait %v", w)
	}
	th.Take("x", t0)
	if w := th.Wait("x", t0); w <= 0 {
		t.Fatalf("after 2 of 2 with Redis down: no wait")
	}
}
