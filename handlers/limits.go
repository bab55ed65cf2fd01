package handlers

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/metering"
)

// KeyLimiter enforces per-key rate, tokens-per-minute and concurrency
// limits; *auth.Limiter satisfies it.
type KeyLimiter interface {
	Admit(keyID string, lim auth.Limits, now time.Time) *auth.Rejection
	Done(keyID string, tokens int64, now time.Time)
	State(keyID string, lim auth.Limits, now time.Time) auth.LimitState
}

// Defaults for the global in-flight cap in front of Ollama.
const (
	DefaultMaxInFlight = 64
	DefaultQueueWait   = 2 * time.Second
)

// limit applies, in order: the monthly quota (402), the key's concurrency,
// tokens-per-minute and request buckets (429), then the global in-flight
// cap that protects the GPU (a short wait, then 503). Rejections say why and
// when to come back; limit headers go on every response that passes.
func (s *server) limit() gin.HandlerFunc {
	return func(c *gin.Context) {
		ri := info(c)
		lim := effectiveLimits(ri.key, s.inf.Catalog())
		now := s.now()
		if err := s.checkQuota(ri.key.ID, lim, now); err != nil {
			s.metrics.reject(rejectQuota)
			c.Header("x-should-retry", "false")
			s.fail(c, err)
			return
		}
		if rej := s.limiter.Admit(ri.key.ID, lim, now); rej != nil {
			s.metrics.reject(map[string]string{auth.ReasonRate: rejectRate, auth.ReasonTokens: rejectTokens, auth.ReasonConcurrency: rejectConc}[rej.Reason])
			s.setLimitHeaders(c, lim, now)
			s.fail(c, rejection(rej))
			return
		}
		if !s.acquire(c) {
			s.limiter.Done(ri.key.ID, 0, s.now())
			s.metrics.reject(rejectOverload)
			s.fail(c, &apiError{status: http.StatusServiceUnavailable, code: "overloaded",
				message: "the models are busy with other requests; retry shortly", retryAfter: 1})
			return
		}
		s.setLimitHeaders(c, lim, now)
		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			<-s.inflight
			s.limiter.Done(ri.key.ID, int64(ri.usage.TotalTokens), s.now())
		}()
		c.Next()
	}
}

// acquire takes a global in-flight slot, waiting at most queueWait.
func (s *server) acquire(c *gin.Context) bool {
	select {
	case s.inflight <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.queueWait)
	defer t.Stop()
	select {
	case s.inflight <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-c.Request.Context().Done():
		return false
	}
}

func (s *server) checkQuota(keyID string, lim auth.Limits, now time.Time) error {
	if lim.MonthlyTokens == 0 && lim.MonthlyRequests == 0 {
		return nil
	}
	used := s.counters.Month(keyID)
	reset := metering.NextMonthStart(now).Format(time.RFC3339)
	switch {
	case lim.MonthlyTokens > 0 && used.TotalTokens() >= lim.MonthlyTokens:
		return &apiError{status: http.StatusPaymentRequired, code: "quota_exceeded",
			message: "this key's monthly token quota (" + itoa(lim.MonthlyTokens) + " tokens) is used up; it resets at " + reset}
	case lim.MonthlyRequests > 0 && used.Requests >= lim.MonthlyRequests:
		return &apiError{status: http.StatusPaymentRequired, code: "quota_exceeded",
			message: "this key's monthly request quota (" + itoa(lim.MonthlyRequests) + " requests) is used up; it resets at " + reset}
	}
	return nil
}

func rejection(r *auth.Rejection) *apiError {
	secs := retrySeconds(r.RetryAfter)
	when := "retry in " + strconv.Itoa(secs) + " s"
	e := &apiError{status: http.StatusTooManyRequests, retryAfter: secs}
	switch r.Reason {
	case auth.ReasonConcurrency:
		e.code, e.message = "too_many_concurrent", "this key already has its maximum number of requests in flight; "+when+" or when one finishes"
	case auth.ReasonTokens:
		e.code, e.message = "tokens_per_minute_exceeded", "this key used more than its tokens per minute; "+when
	default:
		e.code, e.message = "rate_limited", "this key sent requests faster than its rate limit; "+when
	}
	return e
}

// retrySeconds rounds up so Retry-After is never earlier than the refill.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// setLimitHeaders writes the IETF RateLimit fields and the OpenAI-style
// x-ratelimit-* ones for each limit the key has.
func (s *server) setLimitHeaders(c *gin.Context, lim auth.Limits, now time.Time) {
	if lim.RequestsPerSecond == 0 && lim.TokensPerMinute == 0 {
		return
	}
	st := s.limiter.State(info(c).key.ID, lim, now)
	var policy, state string
	h := c.Writer.Header()
	if lim.RequestsPerSecond > 0 {
		burst := st.RemainingReqs
		if lim.Burst > 0 {
			burst = lim.Burst
		}
		window := int(math.Ceil(float64(burst) / lim.RequestsPerSecond))
		policy = `"requests";q=` + strconv.Itoa(burst) + `;w=` + strconv.Itoa(max(1, window))
		state = `"requests";r=` + strconv.Itoa(st.RemainingReqs) + `;t=` + strconv.Itoa(int(math.Ceil(st.ResetReqs.Seconds())))
		h.Set("x-ratelimit-limit-requests", strconv.Itoa(burst))
		h.Set("x-ratelimit-remaining-requests", strconv.Itoa(st.RemainingReqs))
		h.Set("x-ratelimit-reset-requests", st.ResetReqs.String())
	}
	if lim.TokensPerMinute > 0 {
		if policy != "" {
			policy, state = policy+", ", state+", "
		}
		policy += `"tokens";q=` + itoa(lim.TokensPerMinute) + `;w=60`
		state += `"tokens";r=` + itoa(st.RemainingTokens) + `;t=` + strconv.Itoa(int(math.Ceil(st.ResetTokens.Seconds())))
		h.Set("x-ratelimit-limit-tokens", itoa(lim.TokensPerMinute))
		h.Set("x-ratelimit-remaining-tokens", itoa(st.RemainingTokens))
		h.Set("x-ratelimit-reset-tokens", st.ResetTokens.String())
	}
	h.Set("RateLimit-Policy", policy)
	h.Set("RateLimit", state)
}
