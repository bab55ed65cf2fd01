package limits_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate"
	"tollgate/internal/redistest"
	"tollgate/limits"
	"tollgate/metering"
)

// admitter is what the conformance tests drive: the in-memory Limiter or
// the Redis one.
type admitter interface {
	Admit(ctx context.Context, r limits.Request) (limits.Lease, error)
}

// impl is one limiter under test and how a request's usage is committed
// to it: the in-memory Limiter reads a Ledger fed by the usage commit; the
// Redis one adds the settlement to its month totals.
type impl struct {
	name string
	l    admitter
	led  *ledger
	// done commits a request that used tokens and settles its lease.
	done func(t *testing.T, ls limits.Lease, key string, tokens int64, now time.Time)
}

// seeder is a limits.Seeder reading the fake ledger (keys' requests and
// tokens) and, when set, what a database holds for keys' costs and for
// accounts.
type seeder struct {
	l        *ledger
	cost     map[string]tollgate.Money
	accounts map[string]metering.Totals
}

func (s seeder) MonthUsage(_ context.Context, keyID string, _ time.Time) (metering.Totals, error) {
	r, tk := s.l.used(keyID)
	return metering.Totals{Requests: r, PromptTokens: tk, Cost: s.cost[keyID]}, nil
}

func (s seeder) AccountMonthUsage(_ context.Context, accountID string, _ time.Time) (metering.Totals, error) {
	return s.accounts[accountID], nil
}

func memImpl() impl {
	led := newLedger()
	return impl{name: "memory", l: limits.New(led, 0), led: led,
		done: func(t *testing.T, ls limits.Lease, key string, tokens int64, now time.Time) {
			led.commit(key, tokens)
			settle(t, ls, tokens, now)
		}}
}

func redisImpl(t *testing.T, rdb redis.UniversalClient, prefix string) impl {
	led := newLedger()
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: seeder{l: led}, RequestTime: true,
		Now: func() time.Time { return t0 }})
	t.Cleanup(r.Close)
	return impl{name: "redis", l: r, led: led,
		done: func(t *testing.T, ls limits.Lease, key string, tokens int64, now time.Time) {
			t.Helper()
			if err := ls.Settle(ctx, limits.Settlement{Tokens: tokens, Now: now, Charged: true}); err != nil {
				t.Fatalf("Settle: %v", err)
			}
		}}
}

// both runs f against the in-memory Limiter and the Redis one: where
// they agree, this is their shared contract.
func both(t *testing.T, f func(t *testing.T, im impl)) {
	t.Run("memory", func(t *testing.T) { f(t, memImpl()) })
	t.Run("redis", func(t *testing.T) {
		rdb, prefix := redistest.Client(t)
		f(t, redisImpl(t, rdb, prefix))
	})
}

func admitOK(t *testing.T, im impl, r limits.Request) limits.Lease {
	t.Helper()
	ls, err := im.l.Admit(ctx, r)
	if err != nil {
		t.Fatalf("%s: Admit(%+v) refused: %v", im.name, r, err)
	}
	return ls
}

func refused(t *testing.T, im impl, r limits.Request, code tollgate.Code, final bool) *tollgate.Error {
	t.Helper()
	ls, err := im.l.Admit(ctx, r)
	if p := refusalProblem(ls, err, code, final); p != "" {
		t.Fatalf("%s: %s", im.name, p)
	}
	var te *tollgate.Error
	errors.As(err, &te)
	return te
}

func TestConformanceRequestRate(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		lim := tollgate.Limits{RequestsPerSecond: 2, Burst: 3}
		for i := 0; i < 3; i++ {
			im.done(t, admitOK(t, im, rq("k", lim, t0)), "k", 0, t0)
		}
		e := refused(t, im, rq("k", lim, t0), tollgate.CodeRateLimited, false)
		if e.RetryAfter < 499*time.Millisecond || e.RetryAfter > 501*time.Millisecond {
			t.Errorf("Retry-After %v, want 500ms", e.RetryAfter)
		}
		// still refused just before, admitted at Retry-After
		refused(t, im, rq("k", lim, t0.Add(200*time.Millisecond)), tollgate.CodeRateLimited, false)
		admitOK(t, im, rq("k", lim, t0.Add(e.RetryAfter)))
		refused(t, im, rq("k", lim, t0.Add(e.RetryAfter)), tollgate.CodeRateLimited, false)
	})
}

func TestConformanceTokensPerMinute(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		lim := tollgate.Limits{TokensPerMinute: 100}
		a := admitOK(t, im, rqTokens("k", lim, 30, 50, 1, t0))
		if a.Output() != 50 || a.Lowered() {
			t.Fatalf("output %d lowered %v, want 50 false", a.Output(), a.Lowered())
		}
		// 20 left: a prompt of 30 does not fit
		e := refused(t, im, rqTokens("k", lim, 30, 50, 1, t0), tollgate.CodeTokensPerMinute, false)
		if e.RetryAfter != 6600*time.Millisecond { // 11 tokens at 100/min
			t.Errorf("Retry-After %v, want 6.6s", e.RetryAfter)
		}
		// a's request used 40 of its 80: 40 go back, 60 left
		im.done(t, a, "k", 40, t0)
		b := admitOK(t, im, rqTokens("k", lim, 30, 50, 1, t0))
		if b.Output() != 30 || !b.Lowered() {
			t.Fatalf("output %d lowered %v, want 30 true", b.Output(), b.Lowered())
		}
		// a prompt that can never fit is final
		refused(t, im, rqTokens("k", lim, 90, 50, 20, t0), tollgate.CodeTokensPerMinute, true)
	})
}

func TestConformanceConcurrency(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		lim := tollgate.Limits{MaxConcurrent: 2}
		a := admitOK(t, im, rq("k", lim, t0))
		admitOK(t, im, rq("k", lim, t0))
		refused(t, im, rq("k", lim, t0), tollgate.CodeTooManyConcurrent, false)
		im.done(t, a, "k", 0, t0)
		admitOK(t, im, rq("k", lim, t0))
		admitOK(t, im, rq("other", lim, t0)) // another key is not affected
	})
}

func TestConformanceMonthlyRequests(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		lim := tollgate.Limits{MonthlyRequests: 5}
		im.led.set("k", 3, 0) // committed before the limiter started
		a := admitOK(t, im, rq("k", lim, t0))
		b := admitOK(t, im, rq("k", lim, t0))
		// the quota is held by requests in flight: not final
		refused(t, im, rq("k", lim, t0), tollgate.CodeQuotaExceeded, false)
		im.done(t, a, "k", 0, t0)
		im.done(t, b, "k", 0, t0)
		refused(t, im, rq("k", lim, t0), tollgate.CodeQuotaExceeded, true)
		// the next month starts at zero
		next := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
		if im.name == "memory" {
			im.led.set("k", 0, 0) // the Counters roll over
		}
		admitOK(t, im, rq("k", lim, next))
	})
}

func TestConformanceMonthlyTokens(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		lim := tollgate.Limits{MonthlyTokens: 100}
		a := admitOK(t, im, rqTokens("k", lim, 10, 100, 1, t0))
		if a.Output() != 90 || !a.Lowered() {
			t.Fatalf("output %d lowered %v, want 90 true", a.Output(), a.Lowered())
		}
		refused(t, im, rqTokens("k", lim, 10, 100, 1, t0), tollgate.CodeQuotaExceeded, false)
		im.done(t, a, "k", 50, t0)
		b := admitOK(t, im, rqTokens("k", lim, 10, 100, 1, t0))
		if b.Output() != 40 {
			t.Fatalf("output %d, want 40", b.Output())
		}
		im.done(t, b, "k", 50, t0)
		refused(t, im, rqTokens("k", lim, 1, 1, 1, t0), tollgate.CodeQuotaExceeded, true)
	})
}

func TestConformanceUnlimited(t *testing.T) {
	both(t, func(t *testing.T, im impl) {
		for i := 0; i < 50; i++ {
			ls := admitOK(t, im, rqTokens("k", tollgate.Limits{}, 10, 100, 1, t0))
			if ls.Output() != 100 {
				t.Fatalf("output %d, want 100", ls.Output())
			}
		}
	})
}

// replicas returns n Redis limiters (replicas) sharing one Redis.
func replicas(t *testing.T, n int, opts limits.RedisOptions) []*limits.Redis {
	rdb, prefix := redistest.Client(t)
	opts.Prefix = prefix
	out := make([]*limits.Redis, n)
	for i := range out {
		out[i] = limits.NewRedis(rdb, opts)
		t.Cleanup(out[i].Close)
	}
	return out
}

// Three replicas hammering a quota of 100 admit exactly 100, on Redis's
// own clock. The month is already under way (40 committed in the
// database): all three start at once and seed it, once.
func TestRedisMonthlyRequestsAcrossReplicas(t *testing.T) {
	led := newLedger()
	led.set("k", 40, 0)
	rs := replicas(t, 3, limits.RedisOptions{Seeder: seeder{l: led}})
	lim := tollgate.Limits{MonthlyRequests: 100}
	var admitted, final atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rs[g%3]
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				ls, err := r.Admit(ctx, rq("k", lim, time.Now()))
				if err != nil {
					var te *tollgate.Error
					if !errors.As(err, &te) || te.Code != tollgate.CodeQuotaExceeded {
						t.Errorf("refusal %v, want quota_exceeded", err)
						return
					}
					if te.Final {
						final.Add(1)
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				admitted.Add(1)
				if err := ls.Settle(ctx, limits.Settlement{Now: time.Now(), Charged: true}); err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if admitted.Load() != 60 {
		t.Fatalf("admitted %d with 40 already committed, want exactly 60", admitted.Load())
	}
	if final.Load() != 12 {
		t.Errorf("%d workers saw a final refusal, want 12", final.Load())
	}
}

// Requests not charged (failed on the gateway's side) give their share
// of the quota back.
func TestRedisUnchargedRequestsGiveQuotaBack(t *testing.T) {
	rs := replicas(t, 1, limits.RedisOptions{RequestTime: true})
	lim := tollgate.Limits{MonthlyRequests: 1}
	for i := 0; i < 5; i++ {
		ls, err := rs[0].Admit(ctx, rq("k", lim, t0))
		if err != nil {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		_ = ls.Settle(ctx, limits.Settlement{Now: t0})
	}
}

// max_concurrent 5 across three replicas: never more than 5 in flight; a
// replica that dies holding slots frees them once they expire.
func TestRedisConcurrencyAcrossReplicas(t *testing.T) {
	rs := replicas(t, 3, limits.RedisOptions{})
	lim := tollgate.Limits{MaxConcurrent: 5}
	var inFlight, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 15; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				ls, err := rs[g%3].Admit(ctx, rq("k", lim, time.Now()))
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				admitted.Add(1)
				time.Sleep(2 * time.Millisecond)
				inFlight.Add(-1)
				_ = ls.Settle(ctx, limits.Settlement{Now: time.Now()})
			}
		}(g)
	}
	wg.Wait()
	if peak.Load() > 5 {
		t.Fatalf("%d requests in flight at once, want at most 5", peak.Load())
	}
	if peak.Load() < 5 || admitted.Load() < 20 {
		t.Fatalf("peak %d, admitted %d: the test did not load the limit", peak.Load(), admitted.Load())
	}
}

func TestRedisCrashedReplicaSlotsExpire(t *testing.T) {
	clock := t0
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	rs := replicas(t, 2, limits.RedisOptions{RequestTime: true, SlotTTL: 3 * time.Second, Now: now,
		Seeder: seeder{l: newLedger()}})
	lim := tollgate.Limits{MaxConcurrent: 5, MonthlyRequests: 100}
	crashed, alive := rs[0], rs[1]
	for i := 0; i < 5; i++ {
		if _, err := crashed.Admit(ctx, rq("k", lim, t0)); err != nil {
			t.Fatal(err)
		}
	}
	crashed.Close() // it stops renewing and never settles
	if _, err := alive.Admit(ctx, rq("k", lim, t0.Add(2*time.Second))); tollgate.ErrorCode(err) != tollgate.CodeTooManyConcurrent {
		t.Fatalf("while the slots live: %v, want too_many_concurrent", err)
	}
	var held []limits.Lease
	for i := 0; i < 5; i++ {
		ls, err := alive.Admit(ctx, rq("k", lim, t0.Add(3*time.Second+time.Millisecond)))
		if err != nil {
			t.Fatalf("after the slots expired, admission %d: %v", i, err)
		}
		held = append(held, ls)
	}
	if _, err := alive.Admit(ctx, rq("k", lim, t0.Add(4*time.Second))); tollgate.ErrorCode(err) != tollgate.CodeTooManyConcurrent {
		t.Fatalf("6th: %v, want too_many_concurrent", err)
	}
	for _, ls := range held {
		_ = ls.Settle(ctx, limits.Settlement{Now: t0.Add(4 * time.Second), Charged: true})
	}
	// The crashed replica's 5 reservations counted as used (it may have
	// committed them), plus the 5 settled: 90 left.
	n := 0
	for ; n < 200; n++ {
		ls, err := alive.Admit(ctx, rq("k", tollgate.Limits{MonthlyRequests: 100}, t0.Add(5*time.Second)))
		if err != nil {
			break
		}
		_ = ls.Settle(ctx, limits.Settlement{Now: t0.Add(5 * time.Second), Charged: true})
	}
	if n != 90 {
		t.Fatalf("%d admitted after the crash, want 90", n)
	}
}

// A running request's slot is renewed, so it outlives SlotTTL.
func TestRedisSlotRenewed(t *testing.T) {
	rs := replicas(t, 2, limits.RedisOptions{SlotTTL: 300 * time.Millisecond})
	lim := tollgate.Limits{MaxConcurrent: 1}
	ls, err := rs[0].Admit(ctx, rq("k", lim, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := rs[1].Admit(ctx, rq("k", lim, time.Now())); tollgate.ErrorCode(err) != tollgate.CodeTooManyConcurrent {
		t.Fatalf("a renewed slot was taken: %v", err)
	}
	_ = ls.Settle(ctx, limits.Settlement{Now: time.Now()})
	ls, err = rs[1].Admit(ctx, rq("k", lim, time.Now()))
	if err != nil {
		t.Fatalf("after settle: %v", err)
	}
	_ = ls.Settle(ctx, limits.Settlement{Now: time.Now()})
}

// arrivals drives requests at a steady offered rate for a run, on a
// virtual clock, spreading them over replicas by weight, and returns how
// many each admitted.
func arrivals(t *testing.T, ls []admitter, weights []int, lim tollgate.Limits, perSecond int, run time.Duration) int {
	t.Helper()
	total, slots := 0, 0
	for _, w := range weights {
		slots += w
	}
	n := int(run.Seconds() * float64(perSecond))
	for i := 0; i < n; i++ {
		now := t0.Add(time.Duration(i) * time.Second / time.Duration(perSecond))
		pick, s := 0, i%slots
		for s >= weights[pick] {
			s -= weights[pick]
			pick++
		}
		lease, err := ls[pick].Admit(ctx, rq("k", lim, now))
		if err != nil {
			if tollgate.ErrorCode(err) != tollgate.CodeRateLimited {
				t.Fatalf("refusal %v, want rate_limited", err)
			}
			continue
		}
		total++
		_ = lease.Settle(ctx, limits.Settlement{Now: now})
	}
	return total
}

// 100 req/s, burst 100, for 10 s through three replicas, evenly and
// 80/10/10: admitted within 2 % of one node's count.
func TestRedisRateAcrossReplicas(t *testing.T) {
	lim := tollgate.Limits{RequestsPerSecond: 100, Burst: 100}
	single := arrivals(t, []admitter{limits.New(nil, 0)}, []int{1}, lim, 300, 10*time.Second)
	if single < 1090 || single > 1110 {
		t.Fatalf("one node admitted %d, want about 1100", single)
	}
	for _, w := range [][]int{{1, 1, 1}, {8, 1, 1}} {
		rs := replicas(t, 3, limits.RedisOptions{RequestTime: true})
		got := arrivals(t, []admitter{rs[0], rs[1], rs[2]}, w, lim, 300, 10*time.Second)
		if d := float64(got-single) / float64(single); d < -0.02 || d > 0.02 {
			t.Errorf("weights %v: three replicas admitted %d, one node %d (%.1f %%), want within 2 %%", w, got, single, d*100)
		}
		t.Logf("weights %v: three replicas admitted %d, one node %d", w, got, single)
	}
}

// The same on Redis's own clock, in real time: about burst plus rate times
// the time taken.
func TestRedisRateRealClock(t *testing.T) {
	rs := replicas(t, 3, limits.RedisOptions{})
	lim := tollgate.Limits{RequestsPerSecond: 100, Burst: 100}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for time.Since(start) < time.Second {
				if ls, err := rs[g%3].Admit(ctx, rq("k", lim, time.Now())); err == nil {
					admitted.Add(1)
					_ = ls.Settle(ctx, limits.Settlement{Now: time.Now()})
				} else {
					time.Sleep(time.Millisecond)
				}
			}
		}(g)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	lo, hi := 100+int64(100*(el-0.05)*0.98), 100+int64(100*el*1.02)+1
	if n := admitted.Load(); n < lo || n > hi {
		t.Fatalf("admitted %d in %.2f s, want %d to %d", n, el, lo, hi)
	}
}

// A refusal with a known end is remembered: the replica does not ask Redis
// again before it.
func TestRedisRemembersRefusal(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, RequestTime: true})
	t.Cleanup(r.Close)
	lim := tollgate.Limits{RequestsPerSecond: 1, Burst: 1}
	if _, err := r.Admit(ctx, rq("k", lim, t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Admit(ctx, rq("k", lim, t0)); tollgate.ErrorCode(err) != tollgate.CodeRateLimited {
		t.Fatalf("second: %v", err)
	}
	// Redis forgets the key's rate: asking it would admit. The replica
	// still refuses until the second is up, without asking.
	if err := rdb.Del(ctx, prefix+"{k}:gcra").Err(); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{100 * time.Millisecond, 999 * time.Millisecond} {
		_, err := r.Admit(ctx, rq("k", lim, t0.Add(at)))
		var te *tollgate.Error
		if !errors.As(err, &te) || te.Code != tollgate.CodeRateLimited || te.RetryAfter != time.Second-at {
			t.Fatalf("at +%v: %v, want rate_limited retry in %v", at, err, time.Second-at)
		}
	}
	if _, err := r.Admit(ctx, rq("k", lim, t0.Add(time.Second))); err != nil {
		t.Fatalf("at the end of the wait: %v", err)
	}
}

// Redis unreachable: limits fall back to local ones divided by the replica
// count, Degraded says so, and when Redis is back the limits are shared
// again (a restarted, empty Redis seeds its months from the database).
func TestRedisDownFallsBackDivided(t *testing.T) {
	srv := redistest.Start(t)
	opts, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	led := newLedger()
	var mu sync.Mutex
	clock := t0
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	var events []bool
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: redistest.Prefix(), Seeder: seeder{l: led}, Ledger: led, Replicas: 3,
		RequestTime: true, Now: now, Timeout: 200 * time.Millisecond, Probe: time.Second,
		OnDegraded: func(d bool) { mu.Lock(); events = append(events, d); mu.Unlock() }})
	t.Cleanup(r.Close)
	quota := tollgate.Limits{MonthlyRequests: 31}
	ls, err := r.Admit(ctx, rq("quota", quota, t0))
	if err != nil {
		t.Fatal(err)
	}
	led.commit("quota", 0)
	_ = ls.Settle(ctx, limits.Settlement{Now: t0, Charged: true})

	srv.Stop()
	rate := tollgate.Limits{RequestsPerSecond: 30, Burst: 30}
	n := 0
	for ; n < 100; n++ {
		ls, err := r.Admit(ctx, rq("rate", rate, t0))
		if err != nil {
			if tollgate.ErrorCode(err) != tollgate.CodeRateLimited {
				t.Fatalf("rate: %v", err)
			}
			break
		}
		_ = ls.Settle(ctx, limits.Settlement{Now: t0})
	}
	if n != 10 {
		t.Errorf("rate 30/s burst 30 on one of 3 replicas admitted %d at once, want 10", n)
	}
	if d, why := r.Degraded(); !d || why == "" {
		t.Fatalf("Degraded() = %v %q, want true and a reason", d, why)
	}
	conc := tollgate.Limits{MaxConcurrent: 6}
	for i := 0; i < 2; i++ {
		if _, err := r.Admit(ctx, rq("conc", conc, t0)); err != nil {
			t.Fatalf("concurrency %d: %v", i, err)
		}
	}
	if _, err := r.Admit(ctx, rq("conc", conc, t0)); tollgate.ErrorCode(err) != tollgate.CodeTooManyConcurrent {
		t.Fatalf("3rd in flight of max 6 on one of 3: %v, want too_many_concurrent", err)
	}
	// 31 - 1 used = 30 left: a third of it here
	n = 0
	for ; n < 100; n++ {
		ls, err := r.Admit(ctx, rq("quota", quota, t0))
		if err != nil {
			if tollgate.ErrorCode(err) != tollgate.CodeQuotaExceeded {
				t.Fatalf("quota: %v", err)
			}
			break
		}
		led.commit("quota", 0)
		_ = ls.Settle(ctx, limits.Settlement{Now: t0, Charged: true})
	}
	if n != 10 {
		t.Errorf("quota 31 (1 used) on one of 3 replicas admitted %d, want 10", n)
	}

	srv.Restart() // empty
	mu.Lock()
	clock = clock.Add(2 * time.Second)
	mu.Unlock()
	n = 0
	for ; n < 100; n++ {
		ls, err := r.Admit(ctx, rq("quota", quota, t0))
		if err != nil {
			if tollgate.ErrorCode(err) != tollgate.CodeQuotaExceeded {
				t.Fatalf("quota after recovery: %v", err)
			}
			break
		}
		_ = ls.Settle(ctx, limits.Settlement{Now: t0, Charged: true})
	}
	if n != 20 {
		t.Errorf("after Redis came back, quota 31 with 11 committed admitted %d, want 20", n)
	}
	if d, _ := r.Degraded(); d {
		t.Fatal("still degraded after Redis came back")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !events[0] || events[1] {
		t.Fatalf("OnDegraded calls %v, want [true false]", events)
	}
}

// failingSeeder cannot read the database.
type failingSeeder struct{}

func (failingSeeder) MonthUsage(context.Context, string, time.Time) (metering.Totals, error) {
	return metering.Totals{}, errors.New("database is locked")
}

func (failingSeeder) AccountMonthUsage(context.Context, string, time.Time) (metering.Totals, error) {
	return metering.Totals{}, errors.New("database is locked")
}

// A month that cannot be seeded refuses with a 503 that says why, without
// the database's words, and takes nothing; Redis is not blamed.
func TestRedisSeedFailure(t *testing.T) {
	rs := replicas(t, 1, limits.RedisOptions{Seeder: failingSeeder{}, RequestTime: true})
	_, err := rs[0].Admit(ctx, rq("k", tollgate.Limits{MonthlyRequests: 5, MaxConcurrent: 1}, t0))
	if tollgate.ErrorCode(err) != tollgate.CodeMeteringUnavailable || tollgate.RetryAfter(err) != time.Second ||
		strings.Contains(tollgate.ErrorMessage(err), "locked") {
		t.Fatalf("Admit: %v (code %s), want metering_unavailable with Retry-After 1s", err, tollgate.ErrorCode(err))
	}
	if d, _ := rs[0].Degraded(); d {
		t.Fatal("a database failure made the limiter degraded")
	}
	// nothing was taken: without the quota the one slot is free
	if _, err := rs[0].Admit(ctx, rq("k", tollgate.Limits{MaxConcurrent: 1}, t0)); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
}

// BenchmarkRedisAdmitSettle is one admission and its settlement on a key
// with every limit set: two script calls.
func BenchmarkRedisAdmitSettle(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix})
	b.Cleanup(r.Close)
	lim := tollgate.Limits{RequestsPerSecond: 1e6, Burst: 1e6, TokensPerMinute: 1e12, MaxConcurrent: 1000,
		MonthlyRequests: 1e12, MonthlyTokens: 1e15}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ls, err := r.Admit(ctx, rqTokens("k", lim, 10, 100, 1, time.Now()))
			if err != nil {
				b.Fatal(err)
			}
			_ = ls.Settle(ctx, limits.Settlement{Tokens: 50, Now: time.Now(), Charged: true})
		}
	})
}
