package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"tollgate"
	"tollgate/metering"
)

// Seeder reads committed usage in a month from the database: the requests
// charged to a request quota (Totals.Requests), the tokens and the cost.
// The Redis limiter asks it once per key (or account) and month, the first
// time the month is used in Redis.
type Seeder interface {
	// MonthUsage is the usage of one key in month's UTC month.
	MonthUsage(ctx context.Context, keyID string, month time.Time) (metering.Totals, error)
	// AccountMonthUsage is the usage, in month's UTC month, of the keys
	// the account owns now.
	AccountMonthUsage(ctx context.Context, accountID string, month time.Time) (metering.Totals, error)
}

// RedisOptions configure a Redis limiter. Seeder is required when keys or
// accounts have monthly quotas or budgets.
type RedisOptions struct {
	// Prefix starts every Redis key the limiter writes ("" = "tollgate:").
	Prefix string
	// Seeder gives committed month usage when a month is first used in
	// Redis (nil: the month starts at zero).
	Seeder Seeder
	// Ledger is this replica's own view of committed month usage
	// (*metering.Counters), used while Redis is unreachable (nil: none);
	// accounts' usage and costs count when it is also an AccountLedger and
	// a CostLedger.
	Ledger Ledger
	// Replicas is how many replicas share the limits; while Redis is
	// unreachable each enforces its share, the limits divided by it
	// (<= 1: the whole limits).
	Replicas int
	// SlotTTL is how long a concurrency slot (and its quota reservation)
	// lives unless renewed; a running request renews it every third of it,
	// so a crashed replica's slots free themselves within SlotTTL
	// (0 = 30 s).
	SlotTTL time.Duration
	// Timeout bounds each Redis call; past it Redis counts as unreachable
	// (0 = 500 ms).
	Timeout time.Duration
	// Probe is how often, while Redis is unreachable, one request tries it
	// again (0 = 1 s).
	Probe time.Duration
	// Now is the local clock for renewals and probes (nil = time.Now).
	Now func() time.Time
	// RequestTime makes the scripts use the request's Now instead of
	// Redis's clock. For tests that drive time; production leaves it false
	// so that every replica counts on one clock.
	RequestTime bool
	// OnDegraded, if set, is told true when the limiter falls back to
	// local limits and false when it is back on Redis (a metric).
	OnDegraded func(bool)
	Logger     *slog.Logger // nil: discard
}

// Redis admits requests against limits shared by every replica through one
// Redis: the request rate as a GCRA, the tokens-per-minute bucket, the
// concurrency slots, and the reservations against the monthly quotas and
// money budgets of the key and of its account are all checked and taken in
// one Lua script, on Redis's clock. Month totals (requests, tokens, cost;
// per key and per account) are seeded once from the database and then grow
// as leases settle (each lease exactly once, in the script that gives its
// reservation back). A refusal whose end is known (a rate or
// tokens-per-minute wait, a spent quota or budget) is remembered locally,
// so the replica does not ask Redis again before it ends.
//
// When Redis does not answer, Admit falls back to an in-memory Limiter with
// every limit divided by Replicas (the monthly quotas and budgets, the
// key's and the account's: what was left when Redis was last seen),
// reports Degraded, and tries Redis again every Probe; usage admitted
// locally is added to Redis's totals once it is back.
//
// A Redis is safe for concurrent use. Close stops its slot renewals.
type Redis struct {
	rdb         redis.UniversalClient
	prefix      string
	seeder      Seeder
	ledger      Ledger
	replicas    int
	ttl         time.Duration
	timeout     time.Duration
	probe       time.Duration
	now         func() time.Time
	requestTime bool
	onDegraded  func(bool)
	log         *slog.Logger

	admitS, renewS, settleS, seedS, addS *redis.Script

	seeding   singleflight.Group // month key -> its seeding in progress
	degraded  atomic.Bool
	lastProbe atomic.Int64 // unix nanoseconds of the last try while degraded
	stop      chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	reason    string                     // why degraded
	refused   map[string]refusal         // key id -> a refusal with a known end
	states    map[string]State           // key id -> standing at its last admission
	known     map[string]metering.Totals // key id -> committed usage Redis last reported
	knownAcct map[string]metering.Totals // account id -> the same
	local     *Limiter                   // the fallback of the current degraded spell
	shares    map[string]localBase       // key id -> its base in the current spell
	acctBase  map[string]localBase       // account id -> its base in the current spell
	backlog   []localUsage               // usage admitted locally, not yet in Redis
}

// refusal is a remembered refusal: until (request time) it stands for
// requests with the same limits (the key's and its account's), and, for
// tokens per minute, needing at least need tokens.
type refusal struct {
	until time.Time
	lim   tollgate.Limits
	acct  string
	alim  tollgate.Limits
	code  tollgate.Code
	need  int64
	err   error // a final refusal, returned as is
}

// localBase is where a key (or an account) stood when the fallback first
// saw it: committed usage as Redis last reported it (or as the ledger had
// it) and the ledger's own count then.
type localBase struct {
	used, ledger metering.Totals // Totals.PromptTokens holds all tokens
}

// localUsage is a settled local lease's usage, owed to Redis's totals.
type localUsage struct {
	keyID, accountID, month string
	reqs, tokens            int64
	cost                    tollgate.Money
}

// maxRemembered bounds the per-key maps; past it they are cleared.
const maxRemembered = 100_000

// NewRedis returns a limiter on rdb.
func NewRedis(rdb redis.UniversalClient, opts RedisOptions) *Redis {
	r := &Redis{rdb: rdb, prefix: opts.Prefix, seeder: opts.Seeder, ledger: opts.Ledger, replicas: max(1, opts.Replicas),
		ttl: opts.SlotTTL, timeout: opts.Timeout, probe: opts.Probe, now: opts.Now, requestTime: opts.RequestTime,
		onDegraded: opts.OnDegraded, log: opts.Logger, stop: make(chan struct{}),
		admitS: redis.NewScript(admitLua), renewS: redis.NewScript(renewLua), settleS: redis.NewScript(settleLua),
		seedS: redis.NewScript(seedLua), addS: redis.NewScript(addLua),
		refused: make(map[string]refusal), states: make(map[string]State), known: make(map[string]metering.Totals),
		knownAcct: make(map[string]metering.Totals)}
	if r.prefix == "" {
		r.prefix = "tollgate:"
	}
	if r.ttl <= 0 {
		r.ttl = 30 * time.Second
	}
	if r.timeout <= 0 {
		r.timeout = 500 * time.Millisecond
	}
	if r.probe <= 0 {
		r.probe = time.Second
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.onDegraded == nil {
		r.onDegraded = func(bool) {}
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return r
}

// Close stops renewing the slots of leases still running; they expire
// within SlotTTL unless settled. Settle still works after Close.
func (r *Redis) Close() { r.closeOnce.Do(func() { close(r.stop) }) }

// Degraded reports whether limits are enforced locally because Redis is
// unreachable, and why.
func (r *Redis) Degraded() (bool, string) {
	if !r.degraded.Load() {
		return false, ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return true, r.reason
}

// keys are the Redis keys of one API key; they share its hash tag.
func (r *Redis) keys(keyID string) (gcra, tpm, slots, res, monthPrefix string) {
	p := r.prefix + "{" + keyID + "}:"
	return p + "gcra", p + "tpm", p + "slots", p + "res", p + "m:"
}

// acctKeys are the Redis keys of one account: its registry of
// reservations and its month hashes' prefix, under its own hash tag.
func (r *Redis) acctKeys(accountID string) (slots, res, monthPrefix string) {
	p := r.prefix + "{a:" + accountID + "}:"
	return p + "slots", p + "res", p + "m:"
}

func monthName(t time.Time) string { return metering.MonthStart(t).Format("2006-01") }

// monthExpiry is how long, from t, a month's totals are kept: until 40
// days after the month ends.
func monthExpiry(t time.Time) int64 {
	return metering.NextMonthStart(t).AddDate(0, 0, 40).Sub(t).Milliseconds()
}

func (r *Redis) scriptNow(t time.Time) int64 {
	if r.requestTime {
		return max(1, t.UnixMilli())
	}
	return 0
}

// exactLimit bounds the amounts the admission script computes with (Lua's
// numbers are doubles): a request's worst-case price in micro-units times
// 1000 stays below it, and larger budgets count as this large.
const exactLimit = 1 << 53

// priced reports whether req reserves a cost: its key or its account has a
// money budget.
func priced(req Request) bool {
	return req.Limits.MonthlyBudget > 0 || (accountLimited(req) && req.Account.MonthlyBudget > 0)
}

// fitExact lowers req.Output so that the admission script's cost
// arithmetic stays exact, or refuses a request whose price alone is beyond
// it. Only requests with a budget are concerned.
func fitExact(req Request) (Request, error) {
	if !priced(req) {
		return req, nil
	}
	in, out := int64(req.Price.InputPer1K), int64(req.Price.OutputPer1K)
	room := int64(exactLimit - 2000)
	if in > 0 && req.Prompt > 0 {
		if req.Prompt > room/in {
			return req, tooCostly(req.Price.Cost(req.Prompt, req.MinOutput))
		}
		room -= req.Prompt * in
	}
	if out > 0 && req.Output > room/out {
		if req.MinOutput > room/out {
			return req, tooCostly(req.Price.Cost(req.Prompt, req.MinOutput))
		}
		req.Output = room / out
	}
	return req, nil
}

func clampMoney(m tollgate.Money) int64 { return min(int64(m), exactLimit) }

// Admit admits req as Limiter.Admit does (the same checks, order, errors
// and reservations), against the limits every replica shares: the key's,
// and its account's monthly quotas and budget, shared by all the account's
// keys. An error that is not a refusal means a month could not be seeded
// from the database.
func (r *Redis) Admit(ctx context.Context, req Request) (Lease, error) {
	lim := req.Limits
	if lim == (tollgate.Limits{}) && !accountLimited(req) {
		return unlimited{output: req.Output}, nil
	}
	if lim.TokensPerMinute > 0 && req.Prompt+req.MinOutput > lim.TokensPerMinute {
		return nil, tokensNeverFit(req.Prompt+req.MinOutput, lim.TokensPerMinute)
	}
	if err := r.remembered(req); err != nil {
		return nil, err
	}
	if r.degraded.Load() {
		if !r.probeDue() {
			return r.admitLocal(req)
		}
		// Hand Redis the usage admitted locally before admitting on it
		// again, so a month this admission seeds from the database is
		// not also given that usage.
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		err := r.rdb.Ping(cctx).Err()
		cancel()
		if err != nil {
			r.degrade(err)
			return r.admitLocal(req)
		}
		r.recover(ctx)
	}
	lease, err := r.admitRedis(ctx, req)
	var te *tollgate.Error
	var se seedError
	switch {
	case err == nil, errors.As(err, &te), errors.As(err, &se):
		return lease, err
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	r.degrade(err)
	return r.admitLocal(req)
}

// seedError: the database could not give a month's committed usage. The
// client gets a 503 metering_unavailable (the cause is logged, not shown).
type seedError struct{ err error }

func (e seedError) Error() string {
	return "this key's usage this month could not be read from the database to check its quota; retry shortly"
}
func (e seedError) Unwrap() error { return e.err }

// ErrorCode is tollgate.CodeMeteringUnavailable.
func (e seedError) ErrorCode() tollgate.Code { return tollgate.CodeMeteringUnavailable }

// RetryAfter is a second.
func (e seedError) RetryAfter() time.Duration { return time.Second }

// monthly reports whether lim has a monthly limit (a quota or a budget).
func monthly(lim tollgate.Limits) bool {
	return lim.MonthlyRequests > 0 || lim.MonthlyTokens > 0 || lim.MonthlyBudget > 0
}

func (r *Redis) admitRedis(ctx context.Context, req Request) (Lease, error) {
	asked := req.Output
	req, err := fitExact(req)
	if err != nil {
		return nil, err
	}
	lim := req.Limits
	gcra, tpm, slots, res, mprefix := r.keys(req.KeyID)
	mname := monthName(req.Now)
	month := ""
	if monthly(lim) {
		month = mname
	}
	keys := []string{gcra, tpm, slots, res, mprefix + month}
	var acct acctLimits
	aprefix := ""
	if accountLimited(req) {
		aslots, ares, ap := r.acctKeys(req.AccountID)
		aprefix = ap
		keys = append(keys, aslots, ares, ap+mname)
		acct = acctLimits{req.Account.MonthlyRequests, req.Account.MonthlyTokens, clampMoney(req.Account.MonthlyBudget)}
	}
	var pin, pout int64
	if priced(req) {
		pin, pout = req.Prompt*int64(req.Price.InputPer1K), int64(req.Price.OutputPer1K)
	}
	id, err := leaseID()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		// Not cancelled with the caller: a script that ran but whose
		// answer was dropped would hold its reservation until the slot
		// expires, and then count as used.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		v, err := r.admitS.Run(cctx, r.rdb, keys,
			r.scriptNow(req.Now), id, lim.RequestsPerSecond, burstOf(lim), lim.TokensPerMinute, lim.MaxConcurrent,
			lim.MonthlyRequests, lim.MonthlyTokens, req.Prompt, req.Output, req.MinOutput, r.ttl.Milliseconds(),
			month, mprefix, monthExpiry(req.Now), clampMoney(lim.MonthlyBudget),
			acct.reqs, acct.tokens, acct.budget, aprefix, pin, pout).Slice()
		cancel()
		if err != nil {
			return nil, err
		}
		code := toInt(v[0])
		if code < 0 && attempt < 3 {
			if code == -1 {
				err = r.seed(ctx, req.KeyID, req.Now, mprefix+month)
			} else {
				err = r.seedAccount(ctx, req.AccountID, req.Now, aprefix+mname)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if code != 0 {
			return nil, r.refusal(req, v)
		}
		output := toInt(v[1])
		r.learn(req, v)
		l := &redisLease{r: r, keyID: req.KeyID, id: id, tpm: lim.TokensPerMinute, mprefix: mprefix,
			monthTime: req.Now, output: output, lowered: output < asked, done: make(chan struct{})}
		if aprefix != "" {
			l.accountID, l.aprefix = req.AccountID, aprefix
		}
		go l.renew()
		return l, nil
	}
}

// acctLimits are an account's monthly limits as the admission script takes
// them.
type acctLimits struct{ reqs, tokens, budget int64 }

// seedTimeout bounds one read of a month's usage from the database.
const seedTimeout = 10 * time.Second

// seed sets the month's committed totals from the database, once. The
// requests of this replica that find the month unseeded at once share one
// read.
func (r *Redis) seed(ctx context.Context, keyID string, now time.Time, monthKey string) error {
	return r.seedOnce(ctx, monthKey, now, func(ctx context.Context) (metering.Totals, error) {
		t, err := r.seeder.MonthUsage(ctx, keyID, metering.MonthStart(now))
		if err != nil {
			r.log.Error("limits: could not read a key's month usage from the database to seed its quota in Redis",
				"key_id", keyID, "error", err.Error())
		}
		return t, err
	})
}

// seedAccount sets the account's month totals from the database, once.
func (r *Redis) seedAccount(ctx context.Context, accountID string, now time.Time, monthKey string) error {
	return r.seedOnce(ctx, monthKey, now, func(ctx context.Context) (metering.Totals, error) {
		t, err := r.seeder.AccountMonthUsage(ctx, accountID, metering.MonthStart(now))
		if err != nil {
			r.log.Error("limits: could not read an account's month usage from the database to seed its quotas in Redis",
				"account_id", accountID, "error", err.Error())
		}
		return t, err
	})
}

func (r *Redis) seedOnce(ctx context.Context, monthKey string, now time.Time, read func(context.Context) (metering.Totals, error)) error {
	_, err, _ := r.seeding.Do(monthKey, func() (any, error) {
		// Not cancelled with the first caller: others wait for it too.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), seedTimeout)
		defer cancel()
		var t metering.Totals
		if r.seeder != nil {
			var err error
			if t, err = read(sctx); err != nil {
				return nil, seedError{err}
			}
		}
		cctx, cancel := context.WithTimeout(sctx, r.timeout)
		defer cancel()
		return nil, r.seedS.Run(cctx, r.rdb, []string{monthKey}, t.Requests, t.TotalTokens(), monthExpiry(now), int64(t.Cost)).Err()
	})
	return err
}

// refusal turns the script's refusal into the error Limiter.Admit gives,
// and remembers it when its end is known.
func (r *Redis) refusal(req Request, v []any) error {
	lim, who := req.Limits, keyWho
	if len(v) > 3 && toInt(v[3]) == 1 {
		lim, who = req.Account, accountWho
	}
	inFlight := len(v) > 1 && toInt(v[1]) == 1
	final := func(err error) error {
		r.remember(req, refusal{until: metering.NextMonthStart(req.Now), err: err})
		return err
	}
	switch toInt(v[0]) {
	case 1:
		err := quotaRequests(who, lim.MonthlyRequests, req.Now, inFlight)
		if !inFlight {
			return final(err)
		}
		return err
	case 2:
		err := quotaTokensUsed(who, lim.MonthlyTokens, req.Now, inFlight)
		if !inFlight {
			return final(err)
		}
		return err
	case 3:
		return quotaTokensShort(who, req.Prompt+req.MinOutput, toInt(v[2]), req.Now, inFlight)
	case 4:
		return tooManyConcurrent()
	case 5:
		wait := ceilDuration(toFloat(v[1]) / 1000)
		r.remember(req, refusal{until: req.Now.Add(wait), code: tollgate.CodeTokensPerMinute, need: req.Prompt + req.MinOutput})
		return tokensPerMinute(wait)
	case 6:
		wait := ceilDuration(toFloat(v[1]) / 1000)
		r.remember(req, refusal{until: req.Now.Add(wait), code: tollgate.CodeRateLimited})
		return rateLimited(wait)
	case 7:
		left := tollgate.Money(toInt(v[2]))
		err := budgetShort(who, lim.MonthlyBudget, left, req.Price.Cost(req.Prompt, req.MinOutput), req.Now, inFlight)
		if !inFlight && left <= 0 {
			return final(err) // spent: no request fits before the reset
		}
		return err
	}
	return fmt.Errorf("limits: unexpected answer from the admission script: %v", v)
}

// remember keeps f for req's key, with the limits it was given for.
func (r *Redis) remember(req Request, f refusal) {
	f.lim, f.acct, f.alim = req.Limits, req.AccountID, req.Account
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.refused) >= maxRemembered {
		clear(r.refused)
	}
	r.refused[req.KeyID] = f
}

// forgetWait drops a remembered tokens-per-minute wait of key: a lease
// of it settling here may have given tokens back. (Another replica's
// refunds are not seen: its refusal stands until it ends.)
func (r *Redis) forgetWait(keyID string) {
	r.mu.Lock()
	if f, ok := r.refused[keyID]; ok && f.code == tollgate.CodeTokensPerMinute {
		delete(r.refused, keyID)
	}
	r.mu.Unlock()
}

// remembered returns the refusal a request meets without asking Redis: one
// learned earlier, for the same limits, that has not ended yet.
func (r *Redis) remembered(req Request) error {
	r.mu.Lock()
	f, ok := r.refused[req.KeyID]
	if ok && (!req.Now.Before(f.until) || f.lim != req.Limits || f.acct != req.AccountID || f.alim != req.Account) {
		delete(r.refused, req.KeyID)
		ok = false
	}
	r.mu.Unlock()
	switch {
	case !ok:
		return nil
	case f.err != nil:
		return f.err
	case f.code == tollgate.CodeRateLimited:
		return rateLimited(f.until.Sub(req.Now))
	case f.code == tollgate.CodeTokensPerMinute && req.Prompt+req.MinOutput >= f.need:
		return tokensPerMinute(f.until.Sub(req.Now))
	}
	return nil
}

// learn keeps the key's standing after an admission, for State, and the
// committed totals Redis reported (the key's and its account's), for the
// fallback's shares.
func (r *Redis) learn(req Request, v []any) {
	lim := req.Limits
	st := State{Limits: lim, BurstReqs: burstOf(lim)}
	if lim.RequestsPerSecond > 0 {
		st.RemainingReqs = int(toInt(v[2]))
		st.ResetReqs = ceilDuration(toFloat(v[3]) / 1000)
	}
	if lim.TokensPerMinute > 0 {
		level := toFloat(v[4])
		st.RemainingTokens = int64(math.Max(0, math.Floor(level)))
		st.ResetTokens = ceilDuration((float64(lim.TokensPerMinute) - level) * 60 / float64(lim.TokensPerMinute))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) >= maxRemembered {
		clear(r.states)
		clear(r.known)
		clear(r.knownAcct)
	}
	r.states[req.KeyID] = st
	if monthly(lim) {
		r.known[req.KeyID] = metering.Totals{Requests: toInt(v[5]), PromptTokens: toInt(v[6]), Cost: tollgate.Money(toInt(v[7]))}
	}
	if accountLimited(req) {
		r.knownAcct[req.AccountID] = metering.Totals{Requests: toInt(v[8]), PromptTokens: toInt(v[9]), Cost: tollgate.Money(toInt(v[10]))}
	}
}

// State reports key's standing as of its last admission on this replica
// (a full bucket for a key it has not admitted), for response headers:
// asking Redis for every response would double its load.
func (r *Redis) State(keyID string, lim tollgate.Limits, now time.Time) State {
	r.mu.Lock()
	local := r.local
	st, ok := r.states[keyID]
	r.mu.Unlock()
	if r.degraded.Load() && local != nil {
		s := local.State(keyID, r.share(lim), now)
		s.Limits, s.BurstReqs = lim, burstOf(lim)
		return s
	}
	if !ok || st.Limits != lim {
		return State{Limits: lim, BurstReqs: burstOf(lim), RemainingReqs: burstOf(lim), RemainingTokens: lim.TokensPerMinute}
	}
	return st
}

// probeDue reports whether this request should try Redis again: one
// request per Probe while degraded.
func (r *Redis) probeDue() bool {
	now := r.now().UnixNano()
	last := r.lastProbe.Load()
	return now-last >= r.probe.Nanoseconds() && r.lastProbe.CompareAndSwap(last, now)
}

func (r *Redis) degrade(err error) {
	r.lastProbe.Store(r.now().UnixNano())
	if r.degraded.Load() {
		return
	}
	r.mu.Lock()
	if r.degraded.Load() {
		r.mu.Unlock()
		return
	}
	r.reason = "Redis is not reachable (" + err.Error() + "); each replica enforces 1/" + strconv.Itoa(r.replicas) + " of every limit on its own"
	r.local = New(spellLedger{r}, 0)
	r.shares = make(map[string]localBase)
	r.acctBase = make(map[string]localBase)
	r.degraded.Store(true)
	r.mu.Unlock()
	r.log.Error("limits: Redis is not reachable; enforcing local limits divided by the replica count until it is back",
		"replicas", r.replicas, "error", err.Error())
	r.onDegraded(true)
}

// recover goes back to Redis and hands it the usage admitted locally.
func (r *Redis) recover(ctx context.Context) {
	r.mu.Lock()
	if !r.degraded.Load() {
		r.mu.Unlock()
		return
	}
	r.degraded.Store(false)
	r.reason, r.shares, r.acctBase = "", nil, nil
	r.mu.Unlock()
	r.log.Info("limits: Redis is reachable again; limits are shared again")
	r.onDegraded(false)
	r.flush(ctx)
}

// flush adds the usage of settled local leases to Redis's month totals.
func (r *Redis) flush(ctx context.Context) {
	r.mu.Lock()
	pending := r.backlog
	r.backlog = nil
	r.mu.Unlock()
	for i, u := range pending {
		_, _, _, _, mprefix := r.keys(u.keyID)
		keys := []string{mprefix + u.month}
		if u.accountID != "" {
			_, _, ap := r.acctKeys(u.accountID)
			keys = append(keys, ap+u.month)
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		err := r.addS.Run(cctx, r.rdb, keys, u.reqs, u.tokens, int64(u.cost)).Err()
		cancel()
		if err != nil {
			r.mu.Lock()
			r.backlog = append(r.backlog, pending[i:]...)
			r.mu.Unlock()
			r.log.Warn("limits: could not hand usage admitted locally to Redis; will retry", "error", err.Error())
			return
		}
	}
}

// share is lim divided by the replica count, for the local fallback. A
// limit never drops below 1 (0 would mean unlimited). Monthly quotas and
// budgets are handled by admitLocal.
func (r *Redis) share(lim tollgate.Limits) tollgate.Limits {
	n := r.replicas
	if n <= 1 {
		return lim
	}
	s := lim
	s.RequestsPerSecond = lim.RequestsPerSecond / float64(n)
	if lim.Burst > 0 {
		s.Burst = max(1, lim.Burst/n)
	} else if lim.RequestsPerSecond > 0 {
		s.Burst = max(1, int(math.Ceil(lim.RequestsPerSecond))/n)
	}
	if lim.TokensPerMinute > 0 {
		s.TokensPerMinute = max(1, lim.TokensPerMinute/int64(n))
	}
	if lim.MaxConcurrent > 0 {
		s.MaxConcurrent = max(1, lim.MaxConcurrent/n)
	}
	return s
}

// ledgerMonth is the replica's own count of a key's (or, with account, an
// account's) committed usage this month; all tokens in PromptTokens.
func (r *Redis) ledgerMonth(id string, account bool) metering.Totals {
	var t metering.Totals
	if r.ledger == nil {
		return t
	}
	if account {
		if al, ok := r.ledger.(AccountLedger); ok {
			t.Requests, t.PromptTokens = al.AccountUsed(id)
		}
		if cl, ok := r.ledger.(CostLedger); ok {
			t.Cost = cl.AccountSpent(id)
		}
		return t
	}
	t.Requests, t.PromptTokens = r.ledger.Used(id)
	if cl, ok := r.ledger.(CostLedger); ok {
		t.Cost = cl.Spent(id)
	}
	return t
}

// baseOf is where id stands in the current spell, taken the first time
// the spell sees it: the larger of what Redis last reported and what the
// ledger counts. Callers hold r.mu.
func (r *Redis) baseOf(bases map[string]localBase, known map[string]metering.Totals, id string, account bool) localBase {
	b, ok := bases[id]
	if ok || bases == nil {
		return b
	}
	l := r.ledgerMonth(id, account)
	b = localBase{used: l, ledger: l}
	if k, ok := known[id]; ok {
		b.used = metering.Totals{Requests: max(k.Requests, l.Requests), PromptTokens: max(k.PromptTokens, l.PromptTokens),
			Cost: max(k.Cost, l.Cost)}
	}
	bases[id] = b
	return b
}

// shareMonthly sets sh's monthly quotas and budget to this replica's share
// of what lim had left at base, or refuses: finally when base alone spent
// it, with a retry when only the share is spent.
func (r *Redis) shareMonthly(sh *tollgate.Limits, lim tollgate.Limits, base metering.Totals, who string, req Request) error {
	n := int64(r.replicas)
	if lim.MonthlyRequests > 0 {
		if base.Requests >= lim.MonthlyRequests {
			return quotaRequests(who, lim.MonthlyRequests, req.Now, false)
		}
		if sh.MonthlyRequests = (lim.MonthlyRequests - base.Requests) / n; sh.MonthlyRequests <= 0 {
			return shareUsed(tollgate.CodeQuotaExceeded, who)
		}
	}
	if lim.MonthlyTokens > 0 {
		if base.PromptTokens >= lim.MonthlyTokens {
			return quotaTokensUsed(who, lim.MonthlyTokens, req.Now, false)
		}
		if sh.MonthlyTokens = (lim.MonthlyTokens - base.PromptTokens) / n; sh.MonthlyTokens <= 0 {
			return shareUsed(tollgate.CodeQuotaExceeded, who)
		}
	}
	if lim.MonthlyBudget > 0 {
		if base.Cost >= lim.MonthlyBudget {
			return budgetShort(who, lim.MonthlyBudget, 0, req.Price.Cost(req.Prompt, req.MinOutput), req.Now, false)
		}
		if sh.MonthlyBudget = (lim.MonthlyBudget - base.Cost) / tollgate.Money(n); sh.MonthlyBudget <= 0 {
			return shareUsed(tollgate.CodeBudgetExceeded, who)
		}
	}
	return nil
}

// admitLocal admits req on this replica alone, with its share of the
// limits. A monthly quota's or budget's share (the key's and its
// account's) is 1/Replicas of what was left when the spell began, counted
// against this replica's own usage since.
func (r *Redis) admitLocal(req Request) (Lease, error) {
	lim := req.Limits
	acct := accountLimited(req)
	r.mu.Lock()
	local := r.local
	base := r.baseOf(r.shares, r.known, req.KeyID, false)
	var abase localBase
	if acct {
		abase = r.baseOf(r.acctBase, r.knownAcct, req.AccountID, true)
	}
	r.mu.Unlock()
	if local == nil { // recovered in between
		local = New(spellLedger{r}, 0)
	}
	sh := r.share(lim)
	if err := r.shareMonthly(&sh, lim, base.used, keyWho, req); err != nil {
		return nil, err
	}
	req.Limits = sh
	if acct {
		ash := req.Account
		if err := r.shareMonthly(&ash, req.Account, abase.used, accountWho, req); err != nil {
			return nil, err
		}
		req.Account = ash
	} else {
		req.AccountID, req.Account = "", tollgate.Limits{}
	}
	l, err := local.Admit(context.Background(), req)
	if err != nil {
		// The local message would name the share as if it were the whole.
		switch tollgate.ErrorCode(err) {
		case tollgate.CodeQuotaExceeded, tollgate.CodeBudgetExceeded:
			who := keyWho
			if strings.Contains(tollgate.ErrorMessage(err), accountWho) {
				who = accountWho
			}
			return nil, shareUsed(tollgate.ErrorCode(err), who)
		}
		return nil, err
	}
	return &localLease{Lease: l, r: r, keyID: req.KeyID, accountID: req.AccountID, month: monthName(req.Now)}, nil
}

// shareUsed: this replica's share of a monthly quota or budget (code
// quota_exceeded or budget_exceeded) of who is spent while Redis is
// unreachable; the whole may not be.
func shareUsed(code tollgate.Code, who string) error {
	what := "monthly quota is used up"
	if code == tollgate.CodeBudgetExceeded {
		what = "monthly budget is spent"
	}
	return &tollgate.Error{Code: code, RetryAfter: time.Second,
		Message: "this replica's share of " + who + " " + what + " while Redis, which counts it for every replica, is unreachable; retry shortly"}
}

// spellLedger is the fallback's ledger: a key's (or an account's) own
// committed usage since the degraded spell began.
type spellLedger struct{ r *Redis }

func (s spellLedger) since(id string, account bool) metering.Totals {
	now := s.r.ledgerMonth(id, account)
	s.r.mu.Lock()
	var b localBase
	if account {
		b = s.r.acctBase[id]
	} else {
		b = s.r.shares[id]
	}
	s.r.mu.Unlock()
	return metering.Totals{Requests: max(0, now.Requests-b.ledger.Requests), PromptTokens: max(0, now.PromptTokens-b.ledger.PromptTokens),
		Cost: max(0, now.Cost-b.ledger.Cost)}
}

func (s spellLedger) Used(keyID string) (int64, int64) {
	t := s.since(keyID, false)
	return t.Requests, t.PromptTokens
}

func (s spellLedger) AccountUsed(accountID string) (int64, int64) {
	t := s.since(accountID, true)
	return t.Requests, t.PromptTokens
}

func (s spellLedger) Spent(keyID string) tollgate.Money { return s.since(keyID, false).Cost }

func (s spellLedger) AccountSpent(accountID string) tollgate.Money {
	return s.since(accountID, true).Cost
}

// localLease is a lease of the fallback: it settles locally and owes its
// usage to Redis's totals.
type localLease struct {
	Lease
	r                       *Redis
	keyID, accountID, month string
	once                    sync.Once
}

func (l *localLease) Settle(ctx context.Context, s Settlement) error {
	err := l.Lease.Settle(ctx, s)
	l.once.Do(func() {
		var reqs int64
		if s.Charged {
			reqs = 1
		}
		if reqs == 0 && s.Tokens == 0 && s.Cost == 0 {
			return
		}
		l.r.mu.Lock()
		l.r.backlog = append(l.r.backlog, localUsage{keyID: l.keyID, accountID: l.accountID, month: l.month,
			reqs: reqs, tokens: s.Tokens, cost: s.Cost})
		l.r.mu.Unlock()
		if !l.r.degraded.Load() {
			l.r.flush(ctx)
		}
	})
	return err
}

// redisLease is a reservation in Redis, renewed until settled.
type redisLease struct {
	r                  *Redis
	keyID, id          string
	accountID, aprefix string // "" without an account reservation
	tpm                int64
	mprefix            string
	monthTime          time.Time
	output             int64
	lowered            bool
	done               chan struct{}
	once               sync.Once
}

func (l *redisLease) Output() int64 { return l.output }
func (l *redisLease) Lowered() bool { return l.lowered }

// registries are the Redis keys of the lease's reservations: the key's
// slots and res, then the account's when it has one.
func (l *redisLease) registries() []string {
	_, _, slots, res, _ := l.r.keys(l.keyID)
	keys := []string{slots, res}
	if l.accountID != "" {
		aslots, ares, _ := l.r.acctKeys(l.accountID)
		keys = append(keys, aslots, ares)
	}
	return keys
}

// renew keeps the lease's slot alive until it is settled or the limiter
// closes.
func (l *redisLease) renew() {
	t := time.NewTicker(l.r.ttl / 3)
	defer t.Stop()
	keys := l.registries()
	for {
		select {
		case <-l.done:
			return
		case <-l.r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.r.timeout)
			err := l.r.renewS.Run(ctx, l.r.rdb, keys, l.r.scriptNow(l.r.now()), l.id, l.r.ttl.Milliseconds()).Err()
			cancel()
			if err != nil {
				l.r.log.Warn("limits: could not renew a concurrency slot in Redis", "key_id", l.keyID, "error", err.Error())
			}
		}
	}
}

// Settle gives the reservations and the slot back and adds what was used
// to the month's totals (the key's and its account's), in one script:
// exactly once per lease. A second call is a no-op.
func (l *redisLease) Settle(ctx context.Context, s Settlement) error {
	var err error
	l.once.Do(func() {
		close(l.done)
		l.r.forgetWait(l.keyID)
		_, tpm, _, _, _ := l.r.keys(l.keyID)
		keys := append([]string{tpm}, l.registries()...)
		charged := 0
		if s.Charged {
			charged = 1
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.r.timeout)
		defer cancel()
		err = l.r.settleS.Run(cctx, l.r.rdb, keys, l.r.scriptNow(s.Now), l.id, s.Tokens, charged,
			l.tpm, l.mprefix, monthExpiry(l.monthTime), int64(s.Cost), l.aprefix).Err()
		if err != nil {
			// The reservation expires within SlotTTL and is then counted
			// as used: the quota errs on the safe side.
			l.r.log.Warn("limits: could not settle a reservation in Redis; it expires and counts as used",
				"key_id", l.keyID, "error", err.Error())
		}
	})
	return err
}

func leaseID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return 0
}

// Committed returns keyID's committed usage in now's month as Redis counts
// it for every replica: requests charged to a request quota, all tokens
// (as PromptTokens) and the cost (0 when Redis does not count it yet), or
// ok false when Redis has not counted that month yet or does not answer.
func (r *Redis) Committed(ctx context.Context, keyID string, now time.Time) (metering.Totals, bool) {
	_, _, _, _, mprefix := r.keys(keyID)
	return r.committed(ctx, mprefix+monthName(now))
}

// AccountCommitted is Committed for an account: the usage of its keys in
// now's month (counted since the month was first used in Redis, from the
// database and then from every replica's settlements).
func (r *Redis) AccountCommitted(ctx context.Context, accountID string, now time.Time) (metering.Totals, bool) {
	_, _, ap := r.acctKeys(accountID)
	return r.committed(ctx, ap+monthName(now))
}

func (r *Redis) committed(ctx context.Context, monthKey string) (metering.Totals, bool) {
	if r.degraded.Load() {
		return metering.Totals{}, false
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	v, err := r.rdb.HMGet(cctx, monthKey, "seeded", "r", "t", "c", "cs").Result()
	if err != nil || v[0] == nil {
		return metering.Totals{}, false
	}
	t := metering.Totals{Requests: toInt(v[1]), PromptTokens: toInt(v[2])}
	if v[4] != nil {
		t.Cost = tollgate.Money(toInt(v[3]))
	}
	return t, true
}
