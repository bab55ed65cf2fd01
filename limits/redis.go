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
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate"
	"tollgate/metering"
)

// Seeder reads a key's committed usage in a month from the database: the
// requests charged to a request quota and the tokens. The Redis limiter
// asks it once per key and month, the first time the month is used in
// Redis.
type Seeder interface {
	MonthUsage(ctx context.Context, keyID string, month time.Time) (requests, tokens int64, err error)
}

// RedisOptions configure a Redis limiter. Seeder is required when keys have
// monthly quotas.
type RedisOptions struct {
	// Prefix starts every Redis key the limiter writes ("" = "tollgate:").
	Prefix string
	// Seeder gives committed month usage when a month is first used in
	// Redis (nil: the month starts at zero).
	Seeder Seeder
	// Ledger is this replica's own view of committed month usage
	// (*metering.Counters), used while Redis is unreachable (nil: none).
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
// concurrency slots and the monthly quota reservations are each checked and
// taken in one Lua script, on Redis's clock. Month totals are seeded once
// from the database and then grow as leases settle (each lease exactly
// once, in the script that gives its reservation back). A refusal whose end
// is known (a rate or tokens-per-minute wait, a spent quota) is remembered
// locally, so the replica does not ask Redis again before it ends.
//
// When Redis does not answer, Admit falls back to an in-memory Limiter with
// every limit divided by Replicas (the monthly quotas: what was left when
// Redis was last seen), reports Degraded, and tries Redis again every
// Probe; usage admitted locally is added to Redis's totals once it is back.
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

	degraded  atomic.Bool
	lastProbe atomic.Int64 // unix nanoseconds of the last try while degraded
	stop      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	reason  string               // why degraded
	refused map[string]refusal   // key id -> a refusal with a known end
	states  map[string]State     // key id -> standing at its last admission
	known   map[string][2]int64  // key id -> committed requests, tokens Redis last reported
	local   *Limiter             // the fallback of the current degraded spell
	shares  map[string]localBase // key id -> its base in the current spell
	backlog []localUsage         // usage admitted locally, not yet in Redis
}

// refusal is a remembered refusal: until (request time) it stands for
// requests with the same limits, and, for tokens per minute, needing at
// least need tokens.
type refusal struct {
	until time.Time
	lim   tollgate.Limits
	code  tollgate.Code
	need  int64
	err   error // a final refusal, returned as is
}

// localBase is where a key stood when the fallback first saw it: committed
// usage as Redis last reported it (or as the ledger had it) and the
// ledger's own count then.
type localBase struct {
	reqs, tokens           int64
	ledgerReqs, ledgerToks int64
}

// localUsage is a settled local lease's usage, owed to Redis's totals.
type localUsage struct {
	keyID, month string
	reqs, tokens int64
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
		refused: make(map[string]refusal), states: make(map[string]State), known: make(map[string][2]int64)}
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

// Admit admits req as Limiter.Admit does (the same checks, order, errors
// and reservations), against the limits every replica shares. An error
// that is not a refusal means the month could not be seeded from the
// database.
func (r *Redis) Admit(ctx context.Context, req Request) (Lease, error) {
	lim := req.Limits
	if lim == (tollgate.Limits{}) {
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

func (r *Redis) admitRedis(ctx context.Context, req Request) (Lease, error) {
	lim := req.Limits
	gcra, tpm, slots, res, mprefix := r.keys(req.KeyID)
	month := ""
	if lim.MonthlyRequests > 0 || lim.MonthlyTokens > 0 {
		month = monthName(req.Now)
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
		v, err := r.admitS.Run(cctx, r.rdb, []string{gcra, tpm, slots, res, mprefix + month},
			r.scriptNow(req.Now), id, lim.RequestsPerSecond, burstOf(lim), lim.TokensPerMinute, lim.MaxConcurrent,
			lim.MonthlyRequests, lim.MonthlyTokens, req.Prompt, req.Output, req.MinOutput, r.ttl.Milliseconds(),
			month, mprefix, monthExpiry(req.Now)).Slice()
		cancel()
		if err != nil {
			return nil, err
		}
		code := toInt(v[0])
		if code == -1 && attempt < 2 {
			if err := r.seed(ctx, req.KeyID, req.Now, mprefix+month); err != nil {
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
			monthTime: req.Now, output: output, lowered: output < req.Output, done: make(chan struct{})}
		go l.renew()
		return l, nil
	}
}

// seed sets the month's committed totals from the database, once.
func (r *Redis) seed(ctx context.Context, keyID string, now time.Time, monthKey string) error {
	var reqs, tokens int64
	if r.seeder != nil {
		var err error
		if reqs, tokens, err = r.seeder.MonthUsage(ctx, keyID, metering.MonthStart(now)); err != nil {
			r.log.Error("limits: could not read a key's month usage from the database to seed its quota in Redis",
				"key_id", keyID, "error", err.Error())
			return seedError{err}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.seedS.Run(cctx, r.rdb, []string{monthKey}, reqs, tokens, monthExpiry(now)).Err()
}

// refusal turns the script's refusal into the error Limiter.Admit gives,
// and remembers it when its end is known.
func (r *Redis) refusal(req Request, v []any) error {
	lim := req.Limits
	switch toInt(v[0]) {
	case 1:
		err := quotaRequests(keyWho, lim.MonthlyRequests, req.Now, toInt(v[1]) == 1)
		if toInt(v[1]) == 0 {
			r.remember(req.KeyID, refusal{until: metering.NextMonthStart(req.Now), lim: lim, err: err})
		}
		return err
	case 2:
		err := quotaTokensUsed(keyWho, lim.MonthlyTokens, req.Now, toInt(v[1]) == 1)
		if toInt(v[1]) == 0 {
			r.remember(req.KeyID, refusal{until: metering.NextMonthStart(req.Now), lim: lim, err: err})
		}
		return err
	case 3:
		return quotaTokensShort(keyWho, req.Prompt+req.MinOutput, toInt(v[2]), req.Now, toInt(v[1]) == 1)
	case 4:
		return tooManyConcurrent()
	case 5:
		wait := ceilDuration(toFloat(v[1]) / 1000)
		r.remember(req.KeyID, refusal{until: req.Now.Add(wait), lim: lim, code: tollgate.CodeTokensPerMinute, need: req.Prompt + req.MinOutput})
		return tokensPerMinute(wait)
	case 6:
		wait := ceilDuration(toFloat(v[1]) / 1000)
		r.remember(req.KeyID, refusal{until: req.Now.Add(wait), lim: lim, code: tollgate.CodeRateLimited})
		return rateLimited(wait)
	}
	return fmt.Errorf("limits: unexpected answer from the admission script: %v", v)
}

func (r *Redis) remember(keyID string, f refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.refused) >= maxRemembered {
		clear(r.refused)
	}
	r.refused[keyID] = f
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
// learned earlier that has not ended yet.
func (r *Redis) remembered(req Request) error {
	r.mu.Lock()
	f, ok := r.refused[req.KeyID]
	if ok && (!req.Now.Before(f.until) || f.lim != req.Limits) {
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
// committed totals Redis reported, for the fallback's shares.
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
	}
	r.states[req.KeyID] = st
	if lim.MonthlyRequests > 0 || lim.MonthlyTokens > 0 {
		r.known[req.KeyID] = [2]int64{toInt(v[5]), toInt(v[6])}
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
	r.reason, r.shares = "", nil
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
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		err := r.addS.Run(cctx, r.rdb, []string{mprefix + u.month}, u.reqs, u.tokens).Err()
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
// limit never drops below 1 (0 would mean unlimited). Monthly quotas are
// handled by admitLocal.
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

// admitLocal admits req on this replica alone, with its share of the
// limits. A monthly quota's share is 1/Replicas of what was left when the
// spell began, counted against this replica's own usage since.
func (r *Redis) admitLocal(req Request) (Lease, error) {
	lim := req.Limits
	r.mu.Lock()
	local := r.local
	base, ok := r.shares[req.KeyID]
	if !ok && r.shares != nil {
		var lr, lt int64
		if r.ledger != nil {
			lr, lt = r.ledger.Used(req.KeyID)
		}
		base = localBase{reqs: lr, tokens: lt, ledgerReqs: lr, ledgerToks: lt}
		if k, ok := r.known[req.KeyID]; ok {
			base.reqs, base.tokens = max(k[0], lr), max(k[1], lt)
		}
		r.shares[req.KeyID] = base
	}
	r.mu.Unlock()
	if local == nil { // recovered in between
		local = New(spellLedger{r}, 0)
	}
	sh := r.share(lim)
	n := int64(r.replicas)
	if lim.MonthlyRequests > 0 {
		if base.reqs >= lim.MonthlyRequests {
			return nil, quotaRequests(keyWho, lim.MonthlyRequests, req.Now, false)
		}
		if sh.MonthlyRequests = (lim.MonthlyRequests - base.reqs) / n; sh.MonthlyRequests <= 0 {
			return nil, errShareUsed
		}
	}
	if lim.MonthlyTokens > 0 {
		if base.tokens >= lim.MonthlyTokens {
			return nil, quotaTokensUsed(keyWho, lim.MonthlyTokens, req.Now, false)
		}
		if sh.MonthlyTokens = (lim.MonthlyTokens - base.tokens) / n; sh.MonthlyTokens <= 0 {
			return nil, errShareUsed
		}
	}
	req.Limits = sh
	l, err := local.Admit(context.Background(), req)
	if err != nil {
		if tollgate.ErrorCode(err) == tollgate.CodeQuotaExceeded {
			// The local message would name the share as if it were the quota.
			return nil, errShareUsed
		}
		return nil, err
	}
	return &localLease{Lease: l, r: r, keyID: req.KeyID, month: monthName(req.Now)}, nil
}

// errShareUsed: this replica's share of a monthly quota is spent while
// Redis is unreachable; the key's quota may not be.
var errShareUsed = quota(true, "this replica's share of this key's monthly quota is used up while Redis, which counts the quota for every replica, is unreachable; retry shortly")

// spellLedger is the fallback's ledger: a key's own committed usage since
// the degraded spell began.
type spellLedger struct{ r *Redis }

func (s spellLedger) Used(keyID string) (int64, int64) {
	if s.r.ledger == nil {
		return 0, 0
	}
	reqs, tokens := s.r.ledger.Used(keyID)
	s.r.mu.Lock()
	b := s.r.shares[keyID]
	s.r.mu.Unlock()
	return max(0, reqs-b.ledgerReqs), max(0, tokens-b.ledgerToks)
}

// localLease is a lease of the fallback: it settles locally and owes its
// usage to Redis's totals.
type localLease struct {
	Lease
	r            *Redis
	keyID, month string
	once         sync.Once
}

func (l *localLease) Settle(ctx context.Context, s Settlement) error {
	err := l.Lease.Settle(ctx, s)
	l.once.Do(func() {
		var reqs int64
		if s.Charged {
			reqs = 1
		}
		if reqs == 0 && s.Tokens == 0 {
			return
		}
		l.r.mu.Lock()
		l.r.backlog = append(l.r.backlog, localUsage{keyID: l.keyID, month: l.month, reqs: reqs, tokens: s.Tokens})
		l.r.mu.Unlock()
		if !l.r.degraded.Load() {
			l.r.flush(ctx)
		}
	})
	return err
}

// redisLease is a reservation in Redis, renewed until settled.
type redisLease struct {
	r         *Redis
	keyID, id string
	tpm       int64
	mprefix   string
	monthTime time.Time
	output    int64
	lowered   bool
	done      chan struct{}
	once      sync.Once
}

func (l *redisLease) Output() int64 { return l.output }
func (l *redisLease) Lowered() bool { return l.lowered }

// renew keeps the lease's slot alive until it is settled or the limiter
// closes.
func (l *redisLease) renew() {
	t := time.NewTicker(l.r.ttl / 3)
	defer t.Stop()
	_, _, slots, res, _ := l.r.keys(l.keyID)
	for {
		select {
		case <-l.done:
			return
		case <-l.r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.r.timeout)
			err := l.r.renewS.Run(ctx, l.r.rdb, []string{slots, res}, l.r.scriptNow(l.r.now()), l.id, l.r.ttl.Milliseconds()).Err()
			cancel()
			if err != nil {
				l.r.log.Warn("limits: could not renew a concurrency slot in Redis", "key_id", l.keyID, "error", err.Error())
			}
		}
	}
}

// Settle gives the reservation and the slot back and adds what was used to
// the month's totals, in one script: exactly once per lease. A second call
// is a no-op.
func (l *redisLease) Settle(ctx context.Context, s Settlement) error {
	var err error
	l.once.Do(func() {
		close(l.done)
		l.r.forgetWait(l.keyID)
		_, tpm, slots, res, _ := l.r.keys(l.keyID)
		charged := 0
		if s.Charged {
			charged = 1
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.r.timeout)
		defer cancel()
		err = l.r.settleS.Run(cctx, l.r.rdb, []string{tpm, slots, res}, l.r.scriptNow(s.Now), l.id, s.Tokens, charged,
			l.tpm, l.mprefix, monthExpiry(l.monthTime)).Err()
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
// it for every replica (requests charged to a request quota, and tokens),
// or ok false when Redis has not counted that month yet or does not
// answer.
func (r *Redis) Committed(ctx context.Context, keyID string, now time.Time) (requests, tokens int64, ok bool) {
	if r.degraded.Load() {
		return 0, 0, false
	}
	_, _, _, _, mprefix := r.keys(keyID)
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	v, err := r.rdb.HMGet(cctx, mprefix+monthName(now), "seeded", "r", "t").Result()
	if err != nil || v[0] == nil {
		return 0, 0, false
	}
	return toInt(v[1]), toInt(v[2]), true
}
