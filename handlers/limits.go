package handlers

import (
	"math"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
)

// rejectReasons names, for the rejections metric, the refusals a gateway
// call can end with before it reaches Ollama.
var rejectReasons = map[tollgate.Code]string{
	tollgate.CodeQuotaExceeded:     rejectQuota,
	tollgate.CodeBudgetExceeded:    rejectBudget,
	tollgate.CodeRateLimited:       rejectRate,
	tollgate.CodeTokensPerMinute:   rejectTokens,
	tollgate.CodeTooManyConcurrent: rejectConc,
	tollgate.CodeOverloaded:        rejectOverload,
}

// noteCall copies what a gateway call reported into the request's info
// (access log, metrics) and puts the key's limit headers on the response.
// A call that failed before it ran (Status 0) counts as a rejection; one
// that failed at Ollama as an upstream error.
func (s *server) noteCall(c *gin.Context, r gateway.Result, err error) {
	ri := info(c)
	ri.model, ri.usage, ri.firstToken = r.Model, toUsage(r.Usage), r.FirstToken
	if err != nil {
		code := tollgate.ErrorCode(err)
		switch {
		case r.Status == 0:
			if reason, ok := rejectReasons[code]; ok {
				s.metrics.reject(reason)
			}
		case code.Status() >= 502 || code == tollgate.CodeOverloaded:
			ri.upstreamErr = string(code)
		}
	}
	s.setLimitHeaders(c, ri.key)
}

// setLimitHeaders writes the IETF RateLimit fields and the OpenAI-style
// x-ratelimit-* ones for each limit the key has.
func (s *server) setLimitHeaders(c *gin.Context, key auth.Key) {
	st := s.gw.LimitState(key)
	lim := st.Limits
	if lim.RequestsPerSecond == 0 && lim.TokensPerMinute == 0 {
		return
	}
	var policy, state string
	h := c.Writer.Header()
	if lim.RequestsPerSecond > 0 {
		burst := st.BurstReqs
		window := wholeSeconds(float64(burst) / lim.RequestsPerSecond)
		policy = `"requests";q=` + strconv.Itoa(burst) + `;w=` + strconv.FormatInt(max(1, window), 10)
		state = `"requests";r=` + strconv.Itoa(st.RemainingReqs) + `;t=` + strconv.FormatInt(wholeSeconds(st.ResetReqs.Seconds()), 10)
		h.Set("x-ratelimit-limit-requests", strconv.Itoa(burst))
		h.Set("x-ratelimit-remaining-requests", strconv.Itoa(st.RemainingReqs))
		h.Set("x-ratelimit-reset-requests", st.ResetReqs.String())
	}
	if lim.TokensPerMinute > 0 {
		if policy != "" {
			policy, state = policy+", ", state+", "
		}
		policy += `"tokens";q=` + itoa(lim.TokensPerMinute) + `;w=60`
		state += `"tokens";r=` + itoa(st.RemainingTokens) + `;t=` + strconv.FormatInt(wholeSeconds(st.ResetTokens.Seconds()), 10)
		h.Set("x-ratelimit-limit-tokens", itoa(lim.TokensPerMinute))
		h.Set("x-ratelimit-remaining-tokens", itoa(st.RemainingTokens))
		h.Set("x-ratelimit-reset-tokens", st.ResetTokens.String())
	}
	h.Set("RateLimit-Policy", policy)
	h.Set("RateLimit", state)
}

// wholeSeconds rounds sec up to whole seconds, saturating at what a
// Duration can hold (about 292 years) instead of overflowing.
func wholeSeconds(sec float64) int64 {
	const most = int64(math.MaxInt64 / int64(time.Second))
	if !(sec < float64(most)) {
		return most
	}
	return int64(math.Ceil(sec))
}
