package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

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

// dbSeeder reads a key's or an account's committed month usage from the
// database, for the Redis limiter's first use of a month. db is the
// gateway's usage reports: with the journal, they load what is journaled
// before they read; flush does the same before an account's totals are
// read from accounts (nil: nothing to flush).
type dbSeeder struct {
	db       gateway.UsageStore
	accounts interface {
		AccountMonthTotals(ctx context.Context, accountID string, month time.Time) (metering.Totals, error)
	}
	flush func(context.Context) error
}

func (s dbSeeder) MonthUsage(ctx context.Context, keyID string, month time.Time) (metering.Totals, error) {
	rows, err := s.db.Summary(ctx, metering.Query{KeyID: keyID, From: metering.MonthStart(month),
		To: metering.NextMonthStart(month), GroupBy: metering.GroupNone})
	if err != nil || len(rows) == 0 {
		return metering.Totals{}, err
	}
	r := rows[0]
	return metering.Totals{Requests: r.ChargedRequests, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, Cost: r.Cost}, nil
}

func (s dbSeeder) AccountMonthUsage(ctx context.Context, accountID string, month time.Time) (metering.Totals, error) {
	if s.flush != nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.flush(fctx)
		cancel()
		if err != nil {
			return metering.Totals{}, fmt.Errorf("load the usage journal before reading an account's month: %w", err)
		}
	}
	return s.accounts.AccountMonthTotals(ctx, accountID, month)
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
func startRedis(ctx context.Context, rf redisFlags, seeder dbSeeder, counters *metering.Counters,
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
	lim := limits.NewRedis(rdb, limits.RedisOptions{Seeder: seeder, Ledger: counters, Replicas: rf.replicas, SlotTTL: rf.slotTTL,
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

// quotaLedger answers /usage's "quota left" and the budget alerts from
// Redis's totals, which count every replica's usage, falling back to this
// replica's counters. Only the request count, the total of tokens and the
// cost are meaningful: the tokens are all reported as prompt tokens.
type quotaLedger struct {
	counters *metering.Counters
	limiter  *limits.Redis
	now      func() time.Time
}

func (q quotaLedger) Month(keyID string) metering.Totals {
	t := q.counters.Month(keyID)
	r, ok := q.limiter.Committed(context.Background(), keyID, q.now())
	return larger(t, r, ok)
}

// AccountMonth is the account's usage as Redis counts it for every
// replica, or this replica's count when that is larger or Redis has none.
func (q quotaLedger) AccountMonth(accountID string) metering.Totals {
	t := q.counters.AccountMonth(accountID)
	r, ok := q.limiter.AccountCommitted(context.Background(), accountID, q.now())
	return larger(t, r, ok)
}

// larger is t with each total raised to Redis's r, when ok.
func larger(t, r metering.Totals, ok bool) metering.Totals {
	if !ok {
		return t
	}
	t.Requests = max(t.Requests, r.Requests)
	if r.TotalTokens() > t.TotalTokens() {
		t.PromptTokens, t.CompletionTokens = r.TotalTokens(), 0
	}
	t.Cost = max(t.Cost, r.Cost)
	return t
}
