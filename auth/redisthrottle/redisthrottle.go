// Package redisthrottle is the failed-authentication throttle shared by
// every replica through Redis: the same buckets as auth.Throttle (a client
// address may fail Burst times, then once per 1/Rate, hammering pushing the
// wait up to one full refill), kept as a GCRA in Redis on Redis's clock, so
// a client cannot spread its guesses over the replicas. A wait learned from
// Redis is remembered locally until it ends; while Redis does not answer
// the replica falls back to its own auth.Throttle.
package redisthrottle

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"tollgate/auth"
)

// takeLua takes one token from a bucket, going into debt while the bucket
// holds more than -burst (as auth.Throttle does).
// KEYS: 1 the bucket (its theoretical arrival time, ms). ARGV: 1 now (0:
// TIME), 2 emission interval (ms), 3 burst. Returns the wait (ms, string)
// before the bucket holds a token again.
const takeLua = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local em, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
tat = math.max(tat, now)
if tat - now < 2 * burst * em then tat = tat + em end
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil(tat - now) + 1000)
return string.format('%.17g', math.max(0, tat - now - (burst - 1) * em))
`

// waitLua reports the wait without taking anything. Same KEYS and ARGV.
const waitLua = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local em, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if not tat then return '0' end
return string.format('%.17g', math.max(0, tat - now - (burst - 1) * em))
`

// Options configure a Throttle.
type Options struct {
	Prefix  string        // "" = "tollgate:"
	Timeout time.Duration // each Redis call (0 = 500 ms); past it the local throttle answers
	// RequestTime makes the scripts use the given now instead of Redis's
	// clock (tests).
	RequestTime bool
}

// Throttle is the failed-authentication throttle in Redis. It satisfies
// the same interface as *auth.Throttle and is safe for concurrent use.
type Throttle struct {
	rdb         redis.UniversalClient
	local       *auth.Throttle
	prefix      string
	em          float64 // ms per token
	burst       int
	timeout     time.Duration
	requestTime bool
	take, wait  *redis.Script

	mu      sync.Mutex
	blocked map[string]time.Time // address -> until (caller's clock)
}

// maxBlocked bounds the local memory of waits.
const maxBlocked = 100_000

// New returns a Throttle of buckets refilling at r per second up to burst,
// shared through rdb.
func New(rdb redis.UniversalClient, r rate.Limit, burst int, opts Options) *Throttle {
	t := &Throttle{rdb: rdb, local: auth.NewThrottle(r, burst, 0), prefix: opts.Prefix, em: 1000 / float64(r),
		burst: burst, timeout: opts.Timeout, requestTime: opts.RequestTime,
		take: redis.NewScript(takeLua), wait: redis.NewScript(waitLua), blocked: make(map[string]time.Time)}
	if t.prefix == "" {
		t.prefix = "tollgate:"
	}
	if t.timeout <= 0 {
		t.timeout = 500 * time.Millisecond
	}
	return t
}

func (t *Throttle) run(s *redis.Script, key string, now time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	var at int64
	if t.requestTime {
		at = max(1, now.UnixMilli())
	}
	v, err := s.Run(ctx, t.rdb, []string{t.prefix + "authfail:" + key}, at, t.em, t.burst).Text()
	if err != nil {
		return 0, err
	}
	ms, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(math.Ceil(ms)) * time.Millisecond, nil
}

// remember keeps a wait locally until it ends.
func (t *Throttle) remember(key string, now time.Time, wait time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wait <= 0 {
		delete(t.blocked, key)
		return
	}
	if len(t.blocked) >= maxBlocked {
		clear(t.blocked)
	}
	t.blocked[key] = now.Add(wait)
}

// Wait returns how long key must wait before it may fail again: 0 when it
// may go on. It takes nothing.
func (t *Throttle) Wait(key string, now time.Time) time.Duration {
	t.mu.Lock()
	until, ok := t.blocked[key]
	t.mu.Unlock()
	if ok && now.Before(until) {
		return until.Sub(now)
	}
	w, err := t.run(t.wait, key, now)
	if err != nil {
		return t.local.Wait(key, now)
	}
	t.remember(key, now, w)
	return w
}

// Take counts one failure of key.
func (t *Throttle) Take(key string, now time.Time) {
	w, err := t.run(t.take, key, now)
	if err != nil {
		t.local.Take(key, now)
		return
	}
	t.remember(key, now, w)
}
