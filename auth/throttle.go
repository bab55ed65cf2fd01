package auth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Throttle is a set of token buckets keyed by a string (a client address, a
// key id), each refilling at Rate up to Burst. Idle buckets, ones that have
// refilled completely, are dropped when the set grows past MaxEntries, so
// memory stays bounded however many keys it sees. All methods take the
// current time explicitly, which keeps tests free of sleeps.
//
// A Throttle is safe for concurrent use.
type Throttle struct {
	rate  rate.Limit
	burst int
	max   int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// NewThrottle returns a Throttle of buckets refilling at r per second up to
// burst tokens. maxEntries <= 0 means 100,000.
func NewThrottle(r rate.Limit, burst, maxEntries int) *Throttle {
	if maxEntries <= 0 {
		maxEntries = 100_000
	}
	return &Throttle{rate: r, burst: burst, max: maxEntries, m: make(map[string]*rate.Limiter)}
}

// Wait returns how long key must wait before its bucket holds one token:
// 0 when it may proceed now. It takes nothing from the bucket.
func (t *Throttle) Wait(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.m[key]
	if !ok {
		return 0
	}
	tokens := l.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return ceilDuration((1 - tokens) / float64(t.rate))
}

// Take removes one token from key's bucket at now, going into debt if it is
// empty (so that hammering keeps the wait growing up to one full refill).
func (t *Throttle) Take(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.m[key]
	if !ok {
		if len(t.m) >= t.max {
			t.prune(now)
		}
		l = rate.NewLimiter(t.rate, t.burst)
		t.m[key] = l
	}
	if !l.AllowN(now, 1) && l.TokensAt(now) > -float64(t.burst) {
		l.ReserveN(now, 1)
	}
}

// Len returns the number of buckets held.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// prune drops full (idle) buckets; if none is idle it drops arbitrary ones
// down to three quarters of the limit. Callers hold t.mu.
func (t *Throttle) prune(now time.Time) {
	for k, l := range t.m {
		if l.TokensAt(now) >= float64(t.burst) {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < t.max*3/4 {
			break
		}
		delete(t.m, k)
	}
}

// ceilDuration converts seconds to a Duration, rounding up to the next
// millisecond so a caller told to wait is never early.
func ceilDuration(sec float64) time.Duration {
	if sec <= 0 {
		return 0
	}
	ms := math.Ceil(sec * 1000)
	return time.Duration(ms) * time.Millisecond
}
