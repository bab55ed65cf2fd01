package limits_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
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

// Money budgets and account quotas through Redis: the same answers as the
// in-memory Limiter, exact across replicas under concurrency, seeded from
// the database, freed after a crash, and divided while Redis is down.

// price is 1 micro-unit per prompt token and 3 per output token.
var price = tollgate.Price{InputPer1K: 1000, OutputPer1K: 3000}

// counterSeeder seeds Redis from metering.Counters, standing for the
// database the counters were loaded from.
type counterSeeder struct {
	c     *metering.Counters
	calls *atomic.Int64 // nil: not counted
}

func (s counterSeeder) MonthUsage(_ context.Context, keyID string, _ time.Time) (metering.Totals, error) {
	if s.calls != nil {
		s.calls.Add(1)
	}
	return s.c.Month(keyID), nil
}

func (s counterSeeder) AccountMonthUsage(_ context.Context, accountID string, _ time.Time) (metering.Totals, error) {
	if s.calls != nil {
		s.calls.Add(1)
	}
	return s.c.AccountMonth(accountID), nil
}

// billing is a limiter and the usage commit in front of it: the
// in-memory Limiter reads the commits from Counters, the Redis one from
// its settlements.
type billing struct {
	name     string
	l        admitter
	counters *metering.Counters
	n        atomic.Int64
}

// finish commits what a request used (its key in account acct) and
// settles its lease, as the gateway does.
func (b *billing) finish(t *testing.T, ls limits.Lease, key, acct string, prompt, completion int64) {
	t.Helper()
	cost := price.Cost(prompt, completion)
	b.counters.Add(metering.Event{RequestID: fmt.Sprint(b.n.Add(1)), KeyID: key, AccountID: acct, Endpoint: tollgate.Generate,
		PromptTokens: prompt, CompletionTokens: completion, Status: 200, Cost: cost, Time: t0})
	if err := ls.Settle(ctx, limits.Settlement{Tokens: prompt + completion, Now: t0, Charged: true, Cost: cost}); err != nil {
		t.Errorf("%s: Settle: %v", b.name, err)
	}
}

func memBilling() *billing {
	c := metering.NewCounters(func() time.Time { return t0 })
	return &billing{name: "memory", l: limits.New(c, 0), counters: c}
}

func redisBilling(t *testing.T, rdb redis.UniversalClient, prefix string) *billing {
	c := metering.NewCounters(func() time.Time { return t0 })
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: counterSeeder{c: c}, Ledger: c, RequestTime: true,
		Now: func() time.Time { return t0 }})
	t.Cleanup(r.Close)
	return &billing{name: "redis", l: r, counters: c}
}

// answer is what a user notices of one admission.
type answer struct {
	output  int64
	lowered bool
	code    tollgate.Code
	final   bool
	retry   time.Duration
	message string
}

func (a answer) String() string {
	if a.code == "" {
		return fmt.Sprintf("admitted, output %d lowered %v", a.output, a.lowered)
	}
	return fmt.Sprintf("%s final=%v retry=%v %q", a.code, a.final, a.retry, a.message)
}

func answerOf(ls limits.Lease, err error) answer {
	if err != nil {
		var te *tollgate.Error
		if !errors.As(err, &te) {
			return answer{code: "not a refusal", message: err.Error()}
		}
		return answer{code: te.Code, final: te.Final, retry: te.RetryAfter, message: te.Message}
	}
	return answer{output: ls.Output(), lowered: ls.Lowered()}
}

// The Redis limiter gives the in-memory Limiter's answers, step for step,
// for a key budget, an account budget and an account request quota shared
// by two keys: the same output caps lowered near the end of a budget, the
// same refusals naming the key's or the account's budget or quota, the
// same finality, and reservations settled to the real cost.
func TestConformanceBudgetsAndAccounts(t *testing.T) {
	keyLim := tollgate.Limits{MonthlyBudget: 1000}
	acctLim := tollgate.Limits{MonthlyBudget: 1500, MonthlyRequests: 9}
	req := func(key string, prompt, output int64) limits.Request {
		return limits.Request{KeyID: key, Limits: keyLim, AccountID: "acct", Account: acctLim, Price: price,
			Prompt: prompt, Output: output, MinOutput: 1, Now: t0}
	}
	type step struct {
		admit  *limits.Request
		settle int   // index of the admission to settle
		used   int64 // completion tokens it used
	}
	a := func(key string, prompt, output int64) step { r := req(key, prompt, output); return step{admit: &r} }
	s := func(i int, used int64) step { return step{settle: i, used: used} }
	steps := []step{
		a("k1", 10, 100), // #0: 310 of k1's 1000 and of the account's 1500
		a("k1", 10, 100), // #1: 620
		a("k1", 10, 100), // #2: 930
		a("k1", 10, 100), // #3: 70 left: output lowered to 20
		a("k1", 10, 100), // #4: k1's budget held in flight: retry
		a("k2", 10, 100), // #5: account 1310
		a("k2", 10, 100), // #6: 190 left: output lowered to 60
		a("k2", 1, 1),    // #7: the account's budget held in flight
		s(0, 20),         // #0 cost 70: 240 back to both
		a("k2", 10, 100), // #8: the account has 240: 76 tokens
		s(1, 0),          // the rest of k1's and k2's cost 10 each
		s(2, 0),
		s(3, 0),
		s(5, 0),
		s(6, 0),
		s(8, 0),
		a("k1", 10, 100), // #9: k1 spent 100: 310 fits
		a("k2", 1100, 1), // #10: a prompt whose least cost (1103) k2 cannot pay
		s(9, 100),        // k1 310 more: 410 spent; the account 440
		a("k1", 10, 100), // #11
		a("k1", 10, 100), // #12: account request quota: 9 in use
		s(11, 100),       // 720 spent by k1, 750 by the account
		a("k2", 10, 100), // #13: the account's 9 requests are used: final
	}
	var got [2][]answer
	rdb, prefix := redistest.Client(t)
	for i, b := range []*billing{memBilling(), redisBilling(t, rdb, prefix)} {
		var leases []limits.Lease
		var reqs []limits.Request
		for _, st := range steps {
			if st.admit == nil {
				if leases[st.settle] == nil {
					t.Fatalf("%s: the script settles #%d, which was refused: %v", b.name, st.settle, got[i])
				}
				b.finish(t, leases[st.settle], reqs[st.settle].KeyID, "acct", reqs[st.settle].Prompt, st.used)
				continue
			}
			ls, err := b.l.Admit(ctx, *st.admit)
			got[i] = append(got[i], answerOf(ls, err))
			leases, reqs = append(leases, ls), append(reqs, *st.admit)
		}
	}
	for j := range got[0] {
		if got[0][j] != got[1][j] {
			t.Errorf("admission #%d:\n memory %v\n redis  %v", j, got[0][j], got[1][j])
		}
	}
	// a few of the answers, spelled out
	want := map[int]string{
		3:  "admitted, output 20 lowered true",
		4:  "budget_exceeded final=false retry=1s",
		6:  "admitted, output 60 lowered true",
		8:  "admitted, output 76 lowered true",
		12: "quota_exceeded final=false",
		13: "quota_exceeded final=true",
	}
	for j, w := range want {
		if !strings.HasPrefix(got[1][j].String(), w) {
			t.Errorf("redis admission #%d: %v, want %s", j, got[1][j], w)
		}
	}
	if m := got[1][4].message; !strings.Contains(m, "this key's monthly budget (0.001000) is spent (counting requests still in flight)") {
		t.Errorf("#4 message %q, want the key's budget", m)
	}
	if m := got[1][7].message; !strings.Contains(m, "this key's account's monthly budget (0.001500)") {
		t.Errorf("#7 message %q, want the account's budget", m)
	}
	if m := got[1][10].message; !got[1][10].final || !strings.Contains(m, "this request may cost up to 0.001103 (its prompt and its shortest answer) but only 0.000970 of this key's monthly budget (0.001000) is left;") {
		t.Errorf("#10 %v, want k2's budget short, final", got[1][10])
	}
	if m := got[1][13].message; !strings.Contains(m, "this key's account's monthly request quota (9 requests) is used up; it resets at 2026-04-01") {
		t.Errorf("#13 message %q, want the account's request quota, final", m)
	}
}

// Two replicas sharing one Redis, 50 clients spread over two keys of one
// account: neither key's budget nor the account's is ever exceeded, what
// Redis counts is exactly what was billed, and when the clients stop no
// further request fits (the budgets are used, not merely respected).
func TestRedisBudgetsExactAcrossReplicas(t *testing.T) {
	const (
		keyBudget     = tollgate.Money(20_000)
		accountBudget = tollgate.Money(30_000)
		prompt, out   = 10, 100
	)
	rdb, prefix := redistest.Client(t)
	c := metering.NewCounters(func() time.Time { return t0 })
	var rs [2]*limits.Redis
	for i := range rs {
		rs[i] = limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: counterSeeder{c: c}, RequestTime: true,
			Now: func() time.Time { return t0 }})
		t.Cleanup(rs[i].Close)
	}
	keys := []string{"a", "b"}
	lim := tollgate.Limits{MonthlyBudget: keyBudget}
	acct := tollgate.Limits{MonthlyBudget: accountBudget}
	var (
		mu      sync.Mutex
		billed  = map[string]tollgate.Money{}
		lowered int
		n       int
	)
	hammer(50, 2_000, func(g, i int) bool {
		key := keys[g%2]
		ls, err := rs[(g/2)%2].Admit(ctx, limits.Request{KeyID: key, Limits: lim, AccountID: "acct", Account: acct, Price: price,
			Prompt: prompt, Output: out, MinOutput: 1, Now: t0})
		if err != nil {
			if p := refusalEither(ls, err, tollgate.CodeBudgetExceeded); p != "" {
				t.Errorf("refusal: %s", p)
				return false
			}
			return !tollgate.IsFinal(err)
		}
		mu.Lock()
		n++
		rng := rand.New(rand.NewSource(int64(n)))
		if ls.Lowered() {
			lowered++
		}
		mu.Unlock()
		used := int64(rng.Intn(int(ls.Output()) + 1))
		cost := price.Cost(prompt, used)
		mu.Lock()
		billed[key] += cost
		billed["acct"] += cost
		mu.Unlock()
		if err := ls.Settle(ctx, limits.Settlement{Tokens: prompt + used, Now: t0, Charged: true, Cost: cost}); err != nil {
			t.Error(err)
		}
		return true
	})
	for _, k := range keys {
		if billed[k] > keyBudget {
			t.Errorf("key %s billed %s of a %s budget", k, billed[k], keyBudget)
		}
		if got, ok := rs[0].Committed(ctx, k, t0); !ok || got.Cost != billed[k] {
			t.Errorf("Redis counts %s (ok %v) for key %s, billed %s", got.Cost, ok, k, billed[k])
		}
	}
	if billed["acct"] > accountBudget {
		t.Errorf("account billed %s of a %s budget", billed["acct"], accountBudget)
	}
	if got, ok := rs[1].AccountCommitted(ctx, "acct", t0); !ok || got.Cost != billed["acct"] || got.Requests != int64(n) {
		t.Errorf("Redis counts %+v (ok %v) for the account, billed %s in %d requests", got, ok, billed["acct"], n)
	}
	if lowered == 0 {
		t.Errorf("no request near the end of a budget got a lower output cap")
	}
	// Used up: the cheapest request (13) fits no more, on either replica.
	for i, k := range keys {
		_, err := rs[i].Admit(ctx, limits.Request{KeyID: k, Limits: lim, AccountID: "acct", Account: acct, Price: price,
			Prompt: prompt, Output: out, MinOutput: 1, Now: t0})
		if p := refusalProblem(nil, err, tollgate.CodeBudgetExceeded, true); p != "" {
			t.Errorf("after the run, key %s: %s", k, p)
		}
	}
	left := accountBudget - billed["acct"]
	t.Logf("%d requests, %d lowered; billed a %s b %s account %s (%s left)", n, lowered, billed["a"], billed["b"], billed["acct"], left)
}

// An account's request and token quotas are shared by all its keys across
// replicas, on top of each key's own: 50 clients over three keys (one with
// a request quota of its own) and two replicas, with the month already
// under way in the database, admit exactly what is left, and each refusal
// names the quota that ran out.
func TestRedisAccountQuotaExactAcrossReplicas(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	c := metering.NewCounters(func() time.Time { return t0 })
	// 30 requests of the account's keys are committed already
	for i := 0; i < 30; i++ {
		c.Add(metering.Event{RequestID: fmt.Sprint("old", i), KeyID: "a", AccountID: "acct", Endpoint: tollgate.Generate,
			PromptTokens: 10, CompletionTokens: 10, Status: 200, Time: t0})
	}
	var calls atomic.Int64
	var rs [2]*limits.Redis
	for i := range rs {
		rs[i] = limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: counterSeeder{c: c, calls: &calls}})
		t.Cleanup(rs[i].Close)
	}
	acct := tollgate.Limits{MonthlyRequests: 100, MonthlyTokens: 1_000_000}
	lims := map[string]tollgate.Limits{"a": {}, "b": {MaxConcurrent: 3}, "c": {MonthlyRequests: 10}}
	keys := []string{"a", "b", "c"}
	var (
		mu       sync.Mutex
		admitted = map[string]int{}
		msgs     = map[string]string{}
	)
	hammer(50, 10_000, func(g, i int) bool {
		key := keys[g%3]
		ls, err := rs[g%2].Admit(ctx, limits.Request{KeyID: key, Limits: lims[key], AccountID: "acct", Account: acct,
			Prompt: 5, Output: 5, MinOutput: 1, Now: time.Now()})
		if err != nil {
			var te *tollgate.Error
			if !errors.As(err, &te) || (te.Code != tollgate.CodeQuotaExceeded && te.Code != tollgate.CodeTooManyConcurrent) {
				t.Errorf("refusal %v", err)
				return false
			}
			if te.Final {
				mu.Lock()
				msgs[key] = te.Message
				mu.Unlock()
			}
			return !te.Final
		}
		mu.Lock()
		admitted[key]++
		mu.Unlock()
		if err := ls.Settle(ctx, limits.Settlement{Tokens: 8, Now: time.Now(), Charged: true}); err != nil {
			t.Error(err)
		}
		return true
	})
	total := admitted["a"] + admitted["b"] + admitted["c"]
	if total != 70 || admitted["c"] != 10 {
		t.Fatalf("admitted %v (%d) with 30 of the account's 100 committed, want 70 in all and 10 for c", admitted, total)
	}
	if !strings.Contains(msgs["c"], "this key's monthly request quota (10 requests) is used up") {
		t.Errorf("c's final refusal %q, want its own quota", msgs["c"])
	}
	if !strings.Contains(msgs["a"], "this key's account's monthly request quota (100 requests) is used up") {
		t.Errorf("a's final refusal %q, want the account's quota", msgs["a"])
	}
	got, ok := rs[0].AccountCommitted(ctx, "acct", time.Now())
	if !ok || got.Requests != 100 || got.TotalTokens() != 30*20+70*8 {
		t.Errorf("Redis counts %+v for the account, want 100 requests and %d tokens", got, 30*20+70*8)
	}
	// Seeded about once per replica: the account's month and the one key
	// with a monthly quota. Requests that find a month unseeded together
	// share one read; one that looked just before a read finished may
	// start a second (the seed script keeps the first), so up to twice.
	if calls.Load() > 8 {
		t.Errorf("the database was asked %d times, want at most 8 (the account's month and key c's, at most twice by each replica)", calls.Load())
	}
}

// A month already under way is seeded from the database: the key's spent
// money and the account's usage count from the first request on.
func TestRedisSeedsBudgetsFromTheDatabase(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	c := metering.NewCounters(func() time.Time { return t0 })
	c.Add(metering.Event{RequestID: "1", KeyID: "k", AccountID: "acct", Endpoint: tollgate.Generate,
		PromptTokens: 300, CompletionTokens: 200, Status: 200, Cost: 900, Time: t0})
	c.Add(metering.Event{RequestID: "2", KeyID: "other", AccountID: "acct", Endpoint: tollgate.Generate,
		PromptTokens: 100, Status: 200, Cost: 450, Time: t0})
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: counterSeeder{c: c}, RequestTime: true})
	t.Cleanup(r.Close)
	rq := func(key string) limits.Request {
		return limits.Request{KeyID: key, Limits: tollgate.Limits{MonthlyBudget: 1000}, AccountID: "acct",
			Account: tollgate.Limits{MonthlyBudget: 1500, MonthlyRequests: 4}, Price: price, Prompt: 10, Output: 100, MinOutput: 1, Now: t0}
	}
	// k: 100 of its budget left: 10 + 3*30
	ls, err := r.Admit(ctx, rq("k"))
	if err != nil || ls.Output() != 30 || !ls.Lowered() {
		t.Fatalf("first admission: %v, %v; want output 30, lowered", answerOf(ls, err), err)
	}
	_ = ls.Settle(ctx, limits.Settlement{Tokens: 40, Now: t0, Charged: true, Cost: 100})
	// k's budget is spent: final
	_, err = r.Admit(ctx, rq("k"))
	if p := refusalProblem(nil, err, tollgate.CodeBudgetExceeded, true); p != "" || !strings.Contains(tollgate.ErrorMessage(err), "this key's monthly budget (0.001000) is spent;") {
		t.Fatalf("second admission: %s (%v)", p, err)
	}
	// the account: 1450 spent, 50 left: 10 + 3*13 = 49
	ls, err = r.Admit(ctx, rq("third"))
	if err != nil || ls.Output() != 13 {
		t.Fatalf("another key of the account: %v; want output 13", answerOf(ls, err))
	}
	_ = ls.Settle(ctx, limits.Settlement{Tokens: 23, Now: t0, Charged: true, Cost: 49})
	// 4 requests: the account's quota is used
	_, err = r.Admit(ctx, rq("fourth"))
	if p := refusalProblem(nil, err, tollgate.CodeQuotaExceeded, true); p != "" || !strings.Contains(tollgate.ErrorMessage(err), "this key's account's monthly request quota (4 requests)") {
		t.Fatalf("the account's 5th request: %s (%v)", p, err)
	}
}

// A replica that crashed holding reservations of one key of an account
// frees them, counted as used, once they expire: the next request of any
// key of the account does it, and of the key itself however long it stayed
// idle.
func TestRedisCrashedReplicaAccountReservationsExpire(t *testing.T) {
	clock := t0
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	c := metering.NewCounters(now)
	rs := replicas(t, 2, limits.RedisOptions{RequestTime: true, SlotTTL: 3 * time.Second, Now: now, Seeder: counterSeeder{c: c}})
	crashed, alive := rs[0], rs[1]
	acct := tollgate.Limits{MonthlyRequests: 10, MonthlyBudget: 10_000}
	rq := func(key string, at time.Duration) limits.Request {
		return limits.Request{KeyID: key, Limits: tollgate.Limits{MonthlyRequests: 100}, AccountID: "acct", Account: acct,
			Price: price, Prompt: 10, Output: 100, MinOutput: 1, Now: t0.Add(at)}
	}
	for i := 0; i < 3; i++ {
		if _, err := crashed.Admit(ctx, rq("dead", 0)); err != nil {
			t.Fatal(err)
		}
	}
	crashed.Close()
	// while they live, they hold 3 of the account's 10
	var held []limits.Lease
	for i := 0; ; i++ {
		ls, err := alive.Admit(ctx, rq("live", 2*time.Second))
		if err != nil {
			if p := refusalProblem(nil, err, tollgate.CodeQuotaExceeded, false); p != "" {
				t.Fatalf("while the crashed reservations live: %s", p)
			}
			if i != 7 {
				t.Fatalf("%d admitted while 3 were held, want 7", i)
			}
			break
		}
		held = append(held, ls)
	}
	for _, ls := range held {
		_ = ls.Settle(ctx, limits.Settlement{Tokens: 20, Now: t0.Add(2 * time.Second), Charged: true, Cost: 40})
	}
	// expired: counted as used (3 + 7 = 10), so the refusal is final now
	_, err := alive.Admit(ctx, rq("live", 4*time.Second))
	if p := refusalProblem(nil, err, tollgate.CodeQuotaExceeded, true); p != "" {
		t.Fatalf("after the crashed reservations expired: %s", p)
	}
	got, _ := alive.AccountCommitted(ctx, "acct", t0)
	if got.Requests != 10 || got.Cost != 7*40+3*price.Cost(10, 100) {
		t.Fatalf("account committed %+v, want 10 requests costing %s", got, 7*40+3*price.Cost(10, 100))
	}
}

// A crashed replica's reservations on a key left idle longer than twice the
// slot TTL still count as used, not held forever: the key's quota ends in
// a final refusal, not an endless "retry in 1 s".
func TestRedisCrashedReservationsOfAnIdleKey(t *testing.T) {
	rs := replicas(t, 2, limits.RedisOptions{SlotTTL: 200 * time.Millisecond, Seeder: seeder{l: newLedger()}})
	lim := tollgate.Limits{MonthlyRequests: 5}
	if _, err := rs[0].Admit(ctx, rq("k", lim, time.Now())); err != nil {
		t.Fatal(err)
	}
	rs[0].Close()
	time.Sleep(700 * time.Millisecond) // Redis's own expiry, in real time
	n := 0
	var err error
	for ; n < 10; n++ {
		var ls limits.Lease
		if ls, err = rs[1].Admit(ctx, rq("k", lim, time.Now())); err != nil {
			break
		}
		_ = ls.Settle(ctx, limits.Settlement{Now: time.Now(), Charged: true})
	}
	if p := refusalProblem(nil, err, tollgate.CodeQuotaExceeded, true); n != 4 || p != "" {
		t.Fatalf("admitted %d then %v (%s); want 4 (1 of 5 used by the crashed replica), then a final refusal", n, err, p)
	}
}

// While Redis is down each of 2 replicas enforces half of what was left of
// the key's budget and of the account's quotas; when Redis is back (empty)
// it reseeds from the database and the whole is exact again.
func TestRedisDownDividesBudgetsAndAccountQuotas(t *testing.T) {
	srv := redistest.Start(t)
	opts, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	var mu sync.Mutex
	clock := t0
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	c := metering.NewCounters(now)
	b := &billing{name: "redis", counters: c}
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: redistest.Prefix(), Seeder: counterSeeder{c: c}, Ledger: c, Replicas: 2,
		RequestTime: true, Now: now, Timeout: 200 * time.Millisecond, Probe: time.Second})
	t.Cleanup(r.Close)
	b.l = r
	acct := tollgate.Limits{MonthlyRequests: 41}
	rq := func(key string, budget tollgate.Money) limits.Request {
		return limits.Request{KeyID: key, Limits: tollgate.Limits{MonthlyBudget: budget}, AccountID: "acct", Account: acct,
			Price: price, Prompt: 10, Output: 10, MinOutput: 10, Now: t0} // 40 each
	}
	// one request (40) seen by Redis: the key's budget of 1000 has 960
	// left, the account 40 requests
	ls, err := r.Admit(ctx, rq("k", 1000))
	if err != nil {
		t.Fatal(err)
	}
	b.finish(t, ls, "k", "acct", 10, 10)

	srv.Stop()
	run := func(key string, budget tollgate.Money) (int, error) {
		n := 0
		for ; n < 100; n++ {
			ls, err := r.Admit(ctx, rq(key, budget))
			if err != nil {
				return n, err
			}
			b.finish(t, ls, key, "acct", 10, 10)
		}
		return n, nil
	}
	// the key's budget: half of 960 is 480, 12 requests of 40
	n, err := run("k", 1000)
	if n != 12 || tollgate.ErrorCode(err) != tollgate.CodeBudgetExceeded || tollgate.RetryAfter(err) != time.Second ||
		!strings.Contains(tollgate.ErrorMessage(err), "this replica's share of this key's monthly budget is spent") {
		t.Fatalf("key budget while Redis is down: %d admitted, then %v; want 12, then this replica's share spent", n, err)
	}
	if d, _ := r.Degraded(); !d {
		t.Fatal("not degraded")
	}
	// the account: 40 requests were left, half is 20; k used 12 of them
	n, err = run("k2", 0)
	if n != 8 || tollgate.ErrorCode(err) != tollgate.CodeQuotaExceeded ||
		!strings.Contains(tollgate.ErrorMessage(err), "this replica's share of this key's account's monthly quota is used up") {
		t.Fatalf("account quota while Redis is down: %d admitted, then %v; want 8, then this replica's share used", n, err)
	}

	srv.Restart() // empty: reseeds from the database (the counters)
	mu.Lock()
	clock = clock.Add(2 * time.Second)
	mu.Unlock()
	// the account: 1 + 12 + 8 = 21 committed, 20 left
	n, err = run("k3", 0)
	if n != 20 || tollgate.ErrorCode(err) != tollgate.CodeQuotaExceeded || !tollgate.IsFinal(err) {
		t.Fatalf("after Redis came back: %d admitted, then %v; want 20, then a final refusal", n, err)
	}
	if d, _ := r.Degraded(); d {
		t.Fatal("still degraded after Redis came back")
	}
	got, ok := r.AccountCommitted(ctx, "acct", t0)
	if !ok || got.Requests != 41 || got.Cost != 41*40 {
		t.Fatalf("Redis counts %+v for the account after reseeding, want 41 requests costing %d", got, 41*40)
	}
}

// BenchmarkRedisAdmitSettleBudget is BenchmarkRedisAdmitSettle for a key
// in an account with budgets on both: the admission reserves against two
// months in one script.
func BenchmarkRedisAdmitSettleBudget(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix})
	b.Cleanup(r.Close)
	lim := tollgate.Limits{RequestsPerSecond: 1e6, Burst: 1e6, TokensPerMinute: 1e12, MaxConcurrent: 1000,
		MonthlyRequests: 1e12, MonthlyTokens: 1e15, MonthlyBudget: 1e15}
	acct := tollgate.Limits{MonthlyRequests: 1e12, MonthlyTokens: 1e15, MonthlyBudget: 1e15}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ls, err := r.Admit(ctx, limits.Request{KeyID: "k", Limits: lim, AccountID: "acct", Account: acct, Price: price,
				Prompt: 10, Output: 100, MinOutput: 1, Now: time.Now()})
			if err != nil {
				b.Fatal(err)
			}
			_ = ls.Settle(ctx, limits.Settlement{Tokens: 50, Now: time.Now(), Charged: true, Cost: 130})
		}
	})
}

// A month Redis counted before it kept costs (seeded, without the cost)
// gets its cost from the database on the first request with a budget, and
// keeps its request and token totals.
func TestRedisSeedsTheCostOfAMonthSeededWithoutIt(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	c := metering.NewCounters(func() time.Time { return t0 })
	c.Add(metering.Event{RequestID: "1", KeyID: "k", Endpoint: tollgate.Generate, PromptTokens: 5, Status: 200, Cost: 950, Time: t0})
	if err := rdb.HSet(ctx, prefix+"{k}:m:2026-03", "seeded", 1, "r", 7, "t", 70).Err(); err != nil {
		t.Fatal(err)
	}
	r := limits.NewRedis(rdb, limits.RedisOptions{Prefix: prefix, Seeder: counterSeeder{c: c}, RequestTime: true})
	t.Cleanup(r.Close)
	lim := tollgate.Limits{MonthlyBudget: 1000, MonthlyRequests: 8}
	ls, err := r.Admit(ctx, limits.Request{KeyID: "k", Limits: lim, Price: price, Prompt: 10, Output: 100, MinOutput: 1, Now: t0})
	if err != nil || ls.Output() != 13 { // 50 left: 10 + 3*13
		t.Fatalf("Admit: %v; want output 13 (950 of 1000 spent)", answerOf(ls, err))
	}
	_ = ls.Settle(ctx, limits.Settlement{Tokens: 23, Now: t0, Charged: true, Cost: 49})
	got, ok := r.Committed(ctx, "k", t0)
	if want := (metering.Totals{Requests: 8, PromptTokens: 93, Cost: 999}); !ok || got != want {
		t.Fatalf("Committed = %+v, %v; want %+v", got, ok, want)
	}
}

// A request whose least cost is beyond what the script computes exactly is
// refused, finally, without touching Redis's totals.
func TestRedisRefusesARequestTooCostlyToReserve(t *testing.T) {
	rs := replicas(t, 1, limits.RedisOptions{RequestTime: true})
	_, err := rs[0].Admit(ctx, limits.Request{KeyID: "k", Limits: tollgate.Limits{MonthlyBudget: 1 << 62},
		Price: tollgate.Price{InputPer1K: 1 << 50}, Prompt: 100_000, Output: 10, MinOutput: 1, Now: t0})
	if p := refusalProblem(nil, err, tollgate.CodeBudgetExceeded, true); p != "" || !strings.Contains(tollgate.ErrorMessage(err), "more than a monthly budget can reserve") {
		t.Fatalf("%s (%v)", p, err)
	}
}
