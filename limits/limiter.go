// Package limits admits requests against a key's limits: its monthly
// quotas (requests and tokens), how many requests it may have in flight,
// its tokens per minute and its request rate. Admission is atomic per
// request and reserves what the request may use, so what is in flight plus
// what is committed never exceeds a limit, however many requests arrive at
// once; a Lease returned by Admit gives the reservation back, settled to
// what the request really used.
//
// Limiter is the in-memory implementation, for one instance. The gateway
// uses it through a small interface taking a context and returning errors,
// so a shared implementation (Redis) can replace it.
package limits

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"tollgate"
)

// Ledger reports what a key has used in the current month, from committed
// usage records; *metering.Counters satisfies it. Requests counts only the
// requests charged to a request quota.
type Ledger interface {
	Used(keyID string) (requests, tokens int64)
}

// CostLedger reports what a key and an account have spent in the current
// month, from committed usage records; *metering.Counters satisfies it.
// Without one, money budgets count only the reservations in flight.
type CostLedger interface {
	Spent(keyID string) tollgate.Money
	AccountSpent(accountID string) tollgate.Money
}

// AccountLedger reports what an account's keys have used in the current
// month, from committed usage records; *metering.Counters satisfies it.
type AccountLedger interface {
	AccountUsed(accountID string) (requests, tokens int64)
}

// Request is what a request asks to be admitted with.
type Request struct {
	KeyID  string
	Limits tollgate.Limits // the key's effective limits (its own over its plan's)
	// AccountID is the account owning the key ("" for none), and Account
	// its effective limits: only the monthly ones (requests, tokens, budget) apply,
	// shared by all the account's keys, on top of the key's own.
	AccountID string
	Account   tollgate.Limits
	// Price is what the model charges: with a MonthlyBudget (the key's or
	// the account's) the request reserves its worst-case cost, Price.Cost
	// of its prompt bound and granted output cap, and near the end of a
	// budget its output cap is lowered to what the budget can pay for.
	Price tollgate.Price
	// Prompt bounds the tokens the input can take. It is reserved whole:
	// a request whose prompt does not fit is refused.
	Prompt int64
	// Output is the most output tokens the request may generate;
	// MinOutput is the least that is worth running (1 for a generation,
	// 0 for embeddings; Output itself when the output cannot be cut). Near
	// the end of a token quota or tokens-per-minute allowance, Admit
	// lowers the output cap to what remains, but never below MinOutput.
	Output, MinOutput int64
	Now               time.Time
}

// Settlement is what an admitted request really used.
type Settlement struct {
	Tokens int64     // tokens billed (prompt plus completion); 0 when nothing was billed
	Now    time.Time // when the request ended
	// Charged reports that the request's usage record was committed and
	// counts against a request quota (status below 500). The in-memory
	// Limiter reads committed usage from its Ledger instead; the Redis one
	// adds Tokens, Charged and Cost to the month's totals when it settles.
	Charged bool
	// Cost is what the request was billed (0 when nothing was), counted
	// against the monthly budgets by the Redis limiter.
	Cost tollgate.Money
}

// Lease is an admitted request's reservation. Settle must be called exactly
// once, after the request's usage record is committed (or known not to be),
// and it is safe to call from any goroutine.
type Lease interface {
	// Output is the output cap admission granted: Request.Output, or less
	// near the end of a token allowance.
	Output() int64
	// Lowered reports whether Output is below what was asked for.
	Lowered() bool
	// Settle gives the reservation back and charges what was used.
	Settle(ctx context.Context, s Settlement) error
}

// State is a key's standing, for response headers.
type State struct {
	Limits          tollgate.Limits
	BurstReqs       int           // the request bucket's size: Burst, or at least 1
	RemainingReqs   int           // whole requests left in the bucket now
	ResetReqs       time.Duration // until the request bucket is full
	RemainingTokens int64         // tokens left this minute (0 when in debt)
	ResetTokens     time.Duration // until the token bucket is full
}

// Limiter is the in-memory admission of per-key limits. Monthly quotas are
// counted from a Ledger of committed usage plus the reservations of
// requests in flight; a request reserves one request and its token bound,
// so neither quota can be exceeded by requests in flight. The
// tokens-per-minute bucket is charged the token bound at admission and
// refunded to the real count at settlement, so it never goes below what
// requests really used. Keys whose buckets are full and who have nothing in
// flight are dropped once more than maxKeys are held, so memory stays
// bounded. When a key's limits change, its buckets are rebuilt on its next
// request. All methods take the time explicitly.
//
// A Limiter is safe for concurrent use.
type Limiter struct {
	ledger Ledger
	max    int

	// nextPrune is the size at which the next prune runs. When every key
	// is active a prune frees nothing; waiting for a quarter more keys
	// keeps a table full of active keys from being scanned on every new one.
	nextPrune int

	mu       sync.Mutex
	keys     map[string]*keyState
	accounts map[string]*accountState // only accounts with requests in flight
}

// accountState is what requests in flight have reserved against an
// account's monthly quotas.
type accountState struct {
	resReqs, resTokens int64
	resCost            tollgate.Money
}

type keyState struct {
	limits   tollgate.Limits
	req      *rate.Limiter // nil: no request rate
	tokens   float64       // tokens-per-minute bucket level; may be negative (debt)
	last     time.Time     // when tokens was last brought up to date
	inFlight int
	// reserved by requests in flight, against the monthly quotas
	resReqs, resTokens int64
	resCost            tollgate.Money // against the monthly budget
}

// New returns a Limiter that reads committed month usage from ledger (nil:
// monthly quotas count only the reservations of requests in flight) and
// holds at most maxKeys idle keys (<= 0 means 10,000).
func New(ledger Ledger, maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = 10_000
	}
	return &Limiter{ledger: ledger, max: maxKeys, keys: make(map[string]*keyState), accounts: make(map[string]*accountState)}
}

// unlimited is the lease of a key with no limits: nothing to give back.
type unlimited struct{ output int64 }

func (u unlimited) Output() int64                            { return u.output }
func (u unlimited) Lowered() bool                            { return false }
func (u unlimited) Settle(context.Context, Settlement) error { return nil }

// Admit checks, in order, the monthly request and token quotas (402), the
// key's concurrency (429), its tokens per minute (429) and its request rate
// (429), and on success reserves one request, the prompt bound plus the
// granted output cap, and a concurrency slot. A refusal is a
// *tollgate.Error (codes quota_exceeded, too_many_concurrent,
// tokens_per_minute_exceeded, rate_limited) with RetryAfter set, and takes
// nothing. RetryAfter is set unless the refusal is Final (retrying cannot
// help before the month ends). ctx is not used by the in-memory Limiter.
func (l *Limiter) Admit(_ context.Context, r Request) (Lease, error) {
	lim := r.Limits
	acct := accountLimited(r)
	if lim == (tollgate.Limits{}) && !acct {
		return unlimited{output: r.Output}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.get(r.KeyID, lim, r.Now)
	output, err := l.check(k, r)
	if err != nil {
		return nil, err
	}
	if k.req != nil {
		res := k.req.ReserveN(r.Now, 1)
		if !res.OK() {
			return nil, rateLimited(time.Second)
		}
		if d := res.DelayFrom(r.Now); d > 0 {
			res.CancelAt(r.Now)
			return nil, rateLimited(d)
		}
	}
	reserve := r.Prompt + output
	cost := r.Price.Cost(r.Prompt, output)
	k.inFlight++
	k.resReqs++
	k.resTokens += reserve
	k.resCost += cost
	if lim.TokensPerMinute > 0 {
		k.tokens -= float64(reserve)
	}
	ls := &lease{l: l, keyID: r.KeyID, reserved: reserve, cost: cost, output: output, lowered: output < r.Output}
	if acct {
		a := l.accounts[r.AccountID]
		if a == nil {
			a = &accountState{}
			l.accounts[r.AccountID] = a
		}
		a.resReqs++
		a.resTokens += reserve
		a.resCost += cost
		ls.accountID = r.AccountID
	}
	return ls, nil
}

// accountLimited reports whether r's account has a monthly limit to
// apply (only the monthly ones apply to an account).
func accountLimited(r Request) bool {
	return r.AccountID != "" && (r.Account.MonthlyRequests > 0 || r.Account.MonthlyTokens > 0 || r.Account.MonthlyBudget > 0)
}

// checkAccount applies the account's monthly quotas to r and returns the
// output cap they leave (at most output). Callers hold l.mu.
func (l *Limiter) checkAccount(r Request, output int64) (int64, error) {
	lim := r.Account
	if !accountLimited(r) {
		return output, nil
	}
	var usedReqs, usedTokens int64
	if al, ok := l.ledger.(AccountLedger); ok {
		usedReqs, usedTokens = al.AccountUsed(r.AccountID)
	}
	var a accountState
	if p := l.accounts[r.AccountID]; p != nil {
		a = *p
	}
	if lim.MonthlyRequests > 0 && usedReqs+a.resReqs >= lim.MonthlyRequests {
		return 0, quotaRequests(accountWho, lim.MonthlyRequests, r.Now, usedReqs < lim.MonthlyRequests)
	}
	if lim.MonthlyTokens > 0 {
		left := lim.MonthlyTokens - usedTokens - a.resTokens
		inFlight := a.resTokens > 0 && r.Prompt+r.MinOutput <= lim.MonthlyTokens-usedTokens
		if left <= 0 {
			return 0, quotaTokensUsed(accountWho, lim.MonthlyTokens, r.Now, inFlight)
		}
		if r.Prompt+r.MinOutput > left {
			return 0, quotaTokensShort(accountWho, r.Prompt+r.MinOutput, left, r.Now, inFlight)
		}
		output = min(output, left-r.Prompt)
	}
	if lim.MonthlyBudget > 0 {
		var spent tollgate.Money
		if cl, ok := l.ledger.(CostLedger); ok {
			spent = cl.AccountSpent(r.AccountID)
		}
		return fitBudget(accountWho, lim.MonthlyBudget, spent, a.resCost, r, output)
	}
	return output, nil
}

// fitBudget checks that budget, of which spent is committed and reserved is
// held by requests in flight, can pay for r at its least output, and
// returns the largest output cap up to output that it can pay for.
func fitBudget(who string, budget, spent, reserved tollgate.Money, r Request, output int64) (int64, error) {
	left := budget - spent - reserved
	need := r.Price.Cost(r.Prompt, r.MinOutput)
	inFlight := reserved > 0 && need <= budget-spent && spent < budget
	if left <= 0 || need > left {
		return 0, budgetShort(who, budget, max(0, left), need, r.Now, inFlight)
	}
	if r.Price.Cost(r.Prompt, output) <= left {
		return output, nil
	}
	lo, hi := r.MinOutput, output // Cost(lo) fits, Cost(hi) does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if r.Price.Cost(r.Prompt, mid) <= left {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// check applies the quota, concurrency and tokens-per-minute limits to r and
// returns the output cap they leave. Callers hold l.mu.
func (l *Limiter) check(k *keyState, r Request) (int64, error) {
	lim, output := r.Limits, r.Output
	if lim.MonthlyRequests > 0 || lim.MonthlyTokens > 0 {
		var usedReqs, usedTokens int64
		if l.ledger != nil {
			usedReqs, usedTokens = l.ledger.Used(r.KeyID)
		}
		// A refusal is final only when committed usage alone is over the
		// line: a reservation in flight may still give its share back.
		if lim.MonthlyRequests > 0 && usedReqs+k.resReqs >= lim.MonthlyRequests {
			return 0, quotaRequests(keyWho, lim.MonthlyRequests, r.Now, usedReqs < lim.MonthlyRequests)
		}
		if lim.MonthlyTokens > 0 {
			left := lim.MonthlyTokens - usedTokens - k.resTokens
			inFlight := k.resTokens > 0 && r.Prompt+r.MinOutput <= lim.MonthlyTokens-usedTokens
			if left <= 0 {
				return 0, quotaTokensUsed(keyWho, lim.MonthlyTokens, r.Now, inFlight)
			}
			if r.Prompt+r.MinOutput > left {
				return 0, quotaTokensShort(keyWho, r.Prompt+r.MinOutput, left, r.Now, inFlight)
			}
			output = min(output, left-r.Prompt)
		}
	}
	if lim.MonthlyBudget > 0 {
		var spent tollgate.Money
		if cl, ok := l.ledger.(CostLedger); ok {
			spent = cl.Spent(r.KeyID)
		}
		var err error
		if output, err = fitBudget(keyWho, lim.MonthlyBudget, spent, k.resCost, r, output); err != nil {
			return 0, err
		}
	}
	output, err := l.checkAccount(r, output)
	if err != nil {
		return 0, err
	}
	if lim.MaxConcurrent > 0 && k.inFlight >= lim.MaxConcurrent {
		return 0, tooManyConcurrent()
	}
	if lim.TokensPerMinute > 0 {
		need := r.Prompt + r.MinOutput
		if need > lim.TokensPerMinute {
			return 0, tokensNeverFit(need, lim.TokensPerMinute)
		}
		k.refill(r.Now)
		// The level is a sum of float steps: allow for their rounding, or
		// a retry at exactly Retry-After could be refused.
		if k.tokens < float64(need)-1e-9 {
			wait := (float64(need) - k.tokens) * 60 / float64(lim.TokensPerMinute)
			return 0, tokensPerMinute(ceilDuration(wait))
		}
		output = min(output, int64(math.Floor(k.tokens+1e-9))-r.Prompt)
	}
	return max(output, r.MinOutput), nil
}

// lease is a reservation on one key.
type lease struct {
	l         *Limiter
	keyID     string
	accountID string // "" when no account quota was reserved
	reserved  int64
	cost      tollgate.Money // reserved against the monthly budgets
	output    int64
	lowered   bool
	once      sync.Once
}

func (ls *lease) Output() int64 { return ls.output }
func (ls *lease) Lowered() bool { return ls.lowered }

// Settle gives back the reservation and charges s.Tokens to the key's
// tokens-per-minute bucket. Usage it committed counts against the monthly
// quotas through the Ledger, which must already include it. A second call
// is a no-op.
func (ls *lease) Settle(_ context.Context, s Settlement) error {
	ls.once.Do(func() { ls.l.settle(ls, s) })
	return nil
}

func (l *Limiter) settle(ls *lease, s Settlement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.accounts[ls.accountID]; ls.accountID != "" && a != nil {
		a.resReqs = max(0, a.resReqs-1)
		a.resTokens = max(0, a.resTokens-ls.reserved)
		a.resCost = max(0, a.resCost-ls.cost)
		if a.resReqs == 0 {
			delete(l.accounts, ls.accountID)
		}
	}
	k, ok := l.keys[ls.keyID]
	if !ok {
		return
	}
	k.inFlight = max(0, k.inFlight-1)
	k.resReqs = max(0, k.resReqs-1)
	k.resTokens = max(0, k.resTokens-ls.reserved)
	k.resCost = max(0, k.resCost-ls.cost)
	if k.limits.TokensPerMinute > 0 {
		k.refill(s.Now)
		k.tokens = min(float64(k.limits.TokensPerMinute), k.tokens+float64(ls.reserved-s.Tokens))
	}
}

// State reports key's standing at now, for response headers.
func (l *Limiter) State(keyID string, lim tollgate.Limits, now time.Time) State {
	st := State{Limits: lim, BurstReqs: burstOf(lim)}
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.keys[keyID]
	if !ok || k.limits != lim {
		st.RemainingReqs, st.RemainingTokens = burstOf(lim), lim.TokensPerMinute
		return st
	}
	if k.req != nil {
		t := k.req.TokensAt(now)
		st.RemainingReqs = int(math.Max(0, math.Floor(t)))
		st.ResetReqs = ceilDuration((float64(burstOf(lim)) - t) / lim.RequestsPerSecond)
	}
	if lim.TokensPerMinute > 0 {
		k.refill(now)
		st.RemainingTokens = int64(math.Max(0, math.Floor(k.tokens)))
		st.ResetTokens = ceilDuration((float64(lim.TokensPerMinute) - k.tokens) * 60 / float64(lim.TokensPerMinute))
	}
	return st
}

// Len returns the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// get returns key's state, (re)building it when new or its limits changed.
// Callers hold l.mu.
func (l *Limiter) get(keyID string, lim tollgate.Limits, now time.Time) *keyState {
	k, ok := l.keys[keyID]
	if ok && k.limits == lim {
		return k
	}
	if !ok && len(l.keys) >= max(l.max, l.nextPrune) {
		l.prune(now)
		l.nextPrune = len(l.keys) + l.max/4
	}
	nk := &keyState{limits: lim, tokens: float64(lim.TokensPerMinute), last: now}
	if lim.RequestsPerSecond > 0 {
		nk.req = rate.NewLimiter(rate.Limit(lim.RequestsPerSecond), burstOf(lim))
	}
	if ok { // limits changed: keep what is in flight and reserved, and what was spent
		nk.inFlight, nk.resReqs, nk.resTokens, nk.resCost = k.inFlight, k.resReqs, k.resTokens, k.resCost
		if lim.TokensPerMinute > 0 {
			// Requests in flight settle into the new bucket, so it starts
			// as far below full as the old one was (or, if there was no
			// old bucket, short of what they reserved).
			spent := float64(k.resTokens)
			if k.limits.TokensPerMinute > 0 {
				k.refill(now)
				spent = float64(k.limits.TokensPerMinute) - k.tokens
			}
			nk.tokens = float64(lim.TokensPerMinute) - spent
		}
	}
	l.keys[keyID] = nk
	return nk
}

// prune drops idle keys: nothing in flight, buckets full. Callers hold l.mu.
func (l *Limiter) prune(now time.Time) {
	for id, k := range l.keys {
		if k.inFlight > 0 || k.resReqs > 0 {
			continue
		}
		if k.req != nil && k.req.TokensAt(now) < float64(burstOf(k.limits)) {
			continue
		}
		if k.limits.TokensPerMinute > 0 {
			k.refill(now)
			if k.tokens < float64(k.limits.TokensPerMinute) {
				continue
			}
		}
		delete(l.keys, id)
	}
}

// refill brings the tokens-per-minute bucket up to now.
func (k *keyState) refill(now time.Time) {
	if now.After(k.last) {
		perMin := float64(k.limits.TokensPerMinute)
		k.tokens = math.Min(perMin, k.tokens+now.Sub(k.last).Minutes()*perMin)
		k.last = now
	}
}

// burstOf is the request bucket size: Burst, or at least 1.
func burstOf(lim tollgate.Limits) int {
	if lim.Burst > 0 {
		return lim.Burst
	}
	return max(1, int(math.Ceil(lim.RequestsPerSecond)))
}
