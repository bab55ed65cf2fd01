package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"tollgate"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"tollgate/auth"
	"tollgate/auth/redisnotify"
	"tollgate/auth/redisthrottle"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/limits"
	"tollgate/metering"
)

// redisFlags are the flags of replicas sharing state through Redis.
type redisFlags struct {
	url      string
	replicas int
	slotTTL  time.Duration
}

func (r *redisFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&r.url, "redis", getenv("TOLLGATE_REDIS"), "redis://host:port/db shared by every replica for limits, quotas and key changes (env TOLLGATE_REDIS; default none: this instance alone)")
	fs.DurationVar(&r.slotTTL, "slot-ttl", 30*time.Second, "with --redis: a concurrency slot lives this long after its last renewal (a running request renews it every third of it), so a crashed replica's slots free themselves within it")
	fs.IntVar(&r.replicas, "replicas", envInt(getenv, "TOLLGATE_REPLICAS", 1), "how many replicas share the limits; while Redis is unreachable each enforces 1/N of every limit (env TOLLGATE_REPLICAS)")
}

func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(getenv(name))); err == nil {
		return n
	}
	return def
}

// openRedis parses url and returns a client whose calls give up fast: an
// unreachable Redis must turn into local limits, not slow requests.
func openRedis(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, &usageError{"--redis: " + redactURL(err.Error(), url)}
	}
	opts.DialTimeout = 500 * time.Millisecond
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = 1
	return redis.NewClient(opts), nil
}

// redactURL keeps a password in --redis out of an error message.
func redactURL(msg, url string) string {
	if url == "" {
		return msg
	}
	return strings.ReplaceAll(msg, url, "(the --redis URL)")
}

// dbSeeder reads a key's committed month usage from the database, for the
// Redis limiter's first use of a month. db is the gateway's usage reports:
// with the journal, they load what is journaled before they read.
type dbSeeder struct{ db gateway.UsageStore }

func (s dbSeeder) MonthUsage(ctx context.Context, keyID string, month time.Time) (int64, int64, error) {
	rows, err := s.db.Summary(ctx, metering.Query{KeyID: keyID, From: metering.MonthStart(month),
		To: metering.NextMonthStart(month), GroupBy: metering.GroupNone})
	if err != nil || len(rows) == 0 {
		return 0, 0, err
	}
	return rows[0].ChargedRequests, rows[0].TotalTokens(), nil
}

// shared is what replicas share through Redis, for /readyz.
type shared struct {
	limiter *limits.Redis
	bus     *redisnotify.Bus
}

func (s shared) Degraded() (bool, string) {
	var why []string
	if d, r := s.limiter.Degraded(); d {
		why = append(why, r)
	}
	if s.bus.Lost() {
		why = append(why, "key changes made on other replicas are not heard (their keys are cached for at most "+
			redisnotify.DefaultShortTTL.String()+" until Redis is back)")
	}
	return len(why) > 0, strings.Join(why, "; ")
}

// replicaState is the Redis side of serve: the shared limiter and the
// key-change bus, and how to stop them.
type replicaState struct {
	limiter  *limits.Redis
	bus      *redisnotify.Bus
	failures handlers.FailureThrottle
	stop     func()
}

// startRedis connects the replica to Redis. An unreachable Redis at start
// is not fatal: limits start degraded and recover when it answers.
func startRedis(ctx context.Context, rf redisFlags, db gateway.UsageStore, counters *metering.Counters,
	verifier *auth.Verifier, metrics *handlers.Metrics, log *slog.Logger) (*replicaState, error) {
	if rf.replicas < 1 {
		return nil, &usageError{"--replicas: want 1 or more"}
	}
	if rf.slotTTL < 300*time.Millisecond {
		return nil, &usageError{"--slot-ttl: want 300ms or more"}
	}
	rdb, err := openRedis(rf.url)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := rdb.Ping(pctx).Err(); err != nil {
		log.Warn("Redis is not reachable yet; limits start local (divided by --replicas) until it is", "error", err.Error())
	}
	cancel()
	lim := limits.NewRedis(rdb, limits.RedisOptions{Seeder: dbSeeder{db}, Ledger: counters, Replicas: rf.replicas, SlotTTL: rf.slotTTL,
		OnDegraded: metrics.LimitsDegraded, Logger: log})
	bus := redisnotify.New(rdb, verifier, redisnotify.Options{Logger: log})
	bctx, stopBus := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); _ = bus.Run(bctx) }()
	// the same buckets as handlers.DefaultAuthFailures, shared
	failures := redisthrottle.New(rdb, rate.Every(3*time.Second), 20, redisthrottle.Options{})
	return &replicaState{limiter: lim, bus: bus, failures: failures, stop: func() {
		stopBus()
		<-done
		lim.Close()
		if err := rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			log.Warn("closing the Redis client", "error", err.Error())
		}
	}}, nil
}

// quotaLedger answers /usage's "quota left" from Redis's totals, which
// count every replica's usage, falling back to this replica's counters.
// Only the request count and the total of tokens are meaningful: the
// tokens are all reported as prompt tokens.
type quotaLedger struct {
	counters *metering.Counters
	limiter  *limits.Redis
	now      func() time.Time
}

func (q quotaLedger) Month(keyID string) metering.Totals {
	t := q.counters.Month(keyID)
	if reqs, tokens, ok := q.limiter.Committed(context.Background(), keyID, q.now()); ok {
		t.Requests = max(t.Requests, reqs)
		if tokens > t.TotalTokens() {
			t.PromptTokens, t.CompletionTokens = tokens, 0
		}
	}
	return t
}

// AccountMonth is this replica's count of an account's usage (Redis keeps
// no account totals).
func (q quotaLedger) AccountMonth(accountID string) metering.Totals {
	return q.counters.AccountMonth(accountID)
}

// accountsFirst admits a request against its money budgets (the key's
// and its account's) and its account's monthly quotas with an in-memory
// limiter, then against the rest of its key's limits with the shared
// (Redis) one. Budgets and account quotas are thus checked per replica,
// against the usage this replica has counted (the month's total at its
// start plus its own requests): with N replicas they may be exceeded up to
// N times before every replica refuses. Keys' other limits stay exact
// across replicas.
type accountsFirst struct {
	accounts *limits.Limiter
	gateway.Admitter
}

// Admit takes the budget and account reservation, then the key's; either
// refusal gives back what was taken.
func (a accountsFirst) Admit(ctx context.Context, r limits.Request) (limits.Lease, error) {
	if r.AccountID == "" && r.Limits.MonthlyBudget == 0 {
		return a.Admitter.Admit(ctx, r)
	}
	al, err := a.accounts.Admit(ctx, limits.Request{KeyID: r.KeyID, Limits: tollgate.Limits{MonthlyBudget: r.Limits.MonthlyBudget},
		AccountID: r.AccountID, Account: r.Account, Price: r.Price,
		Prompt: r.Prompt, Output: r.Output, MinOutput: r.MinOutput, Now: r.Now})
	if err != nil {
		return nil, err
	}
	kr := r
	kr.AccountID, kr.Account, kr.Output = "", tollgate.Limits{}, al.Output()
	kr.Limits.MonthlyBudget = 0
	kl, err := a.Admitter.Admit(ctx, kr)
	if err != nil {
		_ = al.Settle(context.WithoutCancel(ctx), limits.Settlement{Now: r.Now})
		return nil, err
	}
	return bothLeases{key: kl, account: al}, nil
}

// State is the shared limiter's, for the limits it was given (without
// the budget, which it does not see).
func (a accountsFirst) State(keyID string, lim tollgate.Limits, now time.Time) limits.State {
	lim.MonthlyBudget = 0
	st := a.Admitter.State(keyID, lim, now)
	return st
}

// bothLeases is a key's lease and its account's, settled together.
type bothLeases struct{ key, account limits.Lease }

func (b bothLeases) Output() int64 { return b.key.Output() }
func (b bothLeases) Lowered() bool { return b.key.Lowered() || b.account.Lowered() }

// Settle settles the key's lease, then the account's.
func (b bothLeases) Settle(ctx context.Context, s limits.Settlement) error {
	err := b.key.Settle(ctx, s)
	_ = b.account.Settle(ctx, s)
	return err
}
