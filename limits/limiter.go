package auth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Reasons a Limiter refuses a request.
const (
	ReasonRate        = "rate"        // the request bucket is empty
	ReasonTokens      = "tokens"      // tokens-per-minute debt not yet paid back
	ReasonConcurrency = "concurrency" // max_concurrent requests already in flight
)

// Rejection says why a request was refused and when to come back.
type Rejection struct {
	Reason     string
	RetryAfter time.Duration // never earlier than the bucket actually refills
}

// LimitState is a key's standing for response headers.
type LimitState struct {
	Limits          Limits
	RemainingReqs   int           // whole requests left in the bucket now
	ResetReqs       time.Duration // until the request bucket is full
	RemainingTokens int64         // tokens left this minute (0 when in debt)
	ResetTokens     time.Duration // until the token bucket is full
}

// Limiter enforces per-key limits: a request token bucket (x/time/rate),
// a tokens-per-minute bucket charged after each response with the real
// token counts (a key in debt is refused until it has paid it back, so one
// request may overshoot), and a cap on concurrent requests. Zero fields of
// Limits are unlimited. Keys whose buckets are full and who have nothing in
// flight are dropped once more than MaxKeys are held, so memory stays
// bounded. When a key's limits change, its buckets are rebuilt on its next
// request. All methods take the time explicitly.
//
// A Limiter is safe for concurrent use.
type Limiter struct {
	max int

	// nextPrune is the size at which the next prune runs. When every key
	// is active a prune frees nothing; waiting for a quarter more keys
	// keeps a table full of active keys from being scanned on every new one.
	nextPrune int

	mu   sync.Mutex
	keys map[string]*keyLimits
}

type keyLimits struct {
	limits   Limits
	req      *rate.Limiter // nil: no request rate
	tokens   float64       // tokens-per-minute bucket level; may be negative (debt)
	last     time.Time     // when tokens was last brought up to date
	inFlight int
}

// NewLimiter returns a Limiter holding at most maxKeys idle keys (<= 0
// means 10,000).
func NewLimiter(maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = 10_000
	}
	return &Limiter{max: maxKeys, keys: make(map[string]*keyLimits)}
}

// Admit takes one request from key's buckets and a concurrency slot, or
// returns a Rejection and takes nothing. On success the caller must call
// Done exactly once when the request ends.
func (l *Limiter) Admit(keyID string, lim Limits, now time.Time) *Rejection {
	if lim == (Limits{}) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.get(keyID, lim, now)
	if lim.MaxConcurrent > 0 && k.inFlight >= lim.MaxConcurrent {
		return &Rejection{Reason: ReasonConcurrency, RetryAfter: time.Second}
	}
	if lim.TokensPerMinute > 0 {
		k.refill(now)
		if k.tokens <= 0 {
			need := 1 - k.tokens // back above zero
			return &Rejection{Reason: ReasonTokens, RetryAfter: ceilDuration(need * 60 / float64(lim.TokensPerMinute))}
		}
	}
	if k.req != nil {
		r := k.req.ReserveN(now, 1)
		if !r.OK() {
			return &Rejection{Reason: ReasonRate, RetryAfter: time.Second}
		}
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return &Rejection{Reason: ReasonRate, RetryAfter: ceilDuration(d.Seconds())}
		}
	}
	k.inFlight++
	return nil
}

// Done ends a request admitted by Admit, charging tokens (prompt plus
// completion, as Ollama counted them) to the key's tokens-per-minute bucket.
func (l *Limiter) Done(keyID string, tokens int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.keys[keyID]
	if !ok {
		return
	}
	if k.inFlight > 0 {
		k.inFlight--
	}
	if k.limits.TokensPerMinute > 0 && tokens > 0 {
		k.refill(now)
		k.tokens -= float64(tokens)
	}
}

// State reports key's standing at now, for response headers.
func (l *Limiter) State(keyID string, lim Limits, now time.Time) LimitState {
	st := LimitState{Limits: lim}
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
func (l *Limiter) get(keyID string, lim Limits, now time.Time) *keyLimits {
	k, ok := l.keys[keyID]
	if ok && k.limits == lim {
		return k
	}
	if !ok && len(l.keys) >= max(l.max, l.nextPrune) {
		l.prune(now)
		l.nextPrune = len(l.keys) + l.max/4
	}
	nk := &keyLimits{limits: lim, tokens: float64(lim.TokensPerMinute), last: now}
	if lim.RequestsPerSecond > 0 {
		nk.req = rate.NewLimiter(rate.Limit(lim.RequestsPerSecond), burstOf(lim))
	}
	if ok { // limits changed: keep what is in flight and any token debt
		nk.inFlight = k.inFlight
		if k.tokens < 0 && lim.TokensPerMinute > 0 {
			nk.tokens = k.tokens
		}
	}
	l.keys[keyID] = nk
	return nk
}

// prune drops idle keys: nothing in flight, buckets full. Callers hold l.mu.
func (l *Limiter) prune(now time.Time) {
	for id, k := range l.keys {
		if k.inFlight > 0 {
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
func (k *keyLimits) refill(now time.Time) {
	if now.After(k.last) {
		perMin := float64(k.limits.TokensPerMinute)
		k.tokens = math.Min(perMin, k.tokens+now.Sub(k.last).Minutes()*perMin)
		k.last = now
	}
}

// burstOf is the request bucket size: Burst, or at least 1.
func burstOf(lim Limits) int {
	if lim.Burst > 0 {
		return lim.Burst
	}
	return max(1, int(math.Ceil(lim.RequestsPerSecond)))
}
