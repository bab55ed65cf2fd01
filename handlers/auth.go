package handlers

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
)

// Verifier checks a presented key; *auth.Verifier satisfies it.
type Verifier interface {
	Verify(ctx context.Context, secret string) (auth.Key, error)
	// VerifyCached admits only secrets a fresh cache entry vouches for.
	VerifyCached(secret string) (auth.Key, error)
}

// FailureThrottle limits failed authentication attempts per client address;
// *auth.Throttle satisfies it.
type FailureThrottle interface {
	Wait(addr string, now time.Time) time.Duration
	Take(addr string, now time.Time)
}

const challenge = `Bearer realm="tollgate", charset="UTF-8"`

// queryKeyNames are query parameters that, by convention, carry API keys.
var queryKeyNames = []string{"api_key", "apikey", "api-key", "key", "token", "access_token", "x-api-key"}

// authenticate admits requests carrying a valid key in X-API-Key or
// Authorization: Bearer. Failed attempts are throttled per client address
// (never charged to a key); a key in the URL is refused outright.
func (s *server) authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		if keyInQuery(c.Request) {
			s.unauthorized(c, tollgate.CodeKeyInQuery, "API keys are not accepted in the URL, where they end up in logs and histories; send the key in the X-API-Key header (or Authorization: Bearer <key>) and revoke this one if it was shared")
			return
		}
		secret, perr := presentedKey(c.Request)
		if perr != nil {
			s.metrics.reject(rejectAuth)
			s.abort(c, perr.Code, perr.Message)
			return
		}
		ok := secret != ""
		addr := c.ClientIP()
		now := s.now()
		var (
			key auth.Key
			err error
		)
		if wait := s.failures.Wait(addr, now); wait > 0 {
			// The address is throttled, perhaps for someone else's failures
			// (NAT, a shared proxy): a key verified recently still passes,
			// from the cache alone; nothing else reaches the database.
			if ok {
				key, err = s.verifier.VerifyCached(secret)
			}
			if !ok || err != nil {
				secs := int(math.Ceil(wait.Seconds()))
				c.Header("Retry-After", strconv.Itoa(secs))
				s.metrics.reject(rejectAuth)
				s.abort(c, tollgate.CodeTooManyAuthFailures, "too many failed authentication attempts from your address; retry in "+strconv.Itoa(secs)+" s")
				return
			}
		} else {
			if !ok {
				s.unauthorized(c, tollgate.CodeMissingKey, "an API key is required: send it in the X-API-Key header or as Authorization: Bearer <key>")
				return
			}
			key, err = s.verifier.Verify(c.Request.Context(), secret)
		}
		if err != nil {
			s.authFailed(c, addr, now, err)
			return
		}
		ri := info(c)
		ri.keyID = key.ID
		ri.key = key
		ri.superseded = auth.DisplayPrefix(secret) != key.Prefix
		c.Next()
	}
}

func (s *server) authFailed(c *gin.Context, addr string, now time.Time, err error) {
	code, msg := tollgate.CodeInvalidKey, "the API key is not valid"
	switch {
	case errors.Is(err, auth.ErrMalformed):
		msg = "the API key is malformed (a Tollgate key starts with tg_ and is 41 characters long; check for a typo or truncation)"
	case errors.Is(err, auth.ErrExpired):
		code, msg = tollgate.CodeKeyExpired, "the API key has expired (or was rotated and its grace period is over)"
	case errors.Is(err, auth.ErrRevoked):
		code, msg = tollgate.CodeKeyRevoked, "the API key has been revoked"
	case errors.Is(err, auth.ErrUnknown):
	default:
		s.fail(c, err) // the store failed: not the client's fault, not a failed attempt
		return
	}
	s.failures.Take(addr, now)
	s.unauthorized(c, code, msg)
}

func (s *server) unauthorized(c *gin.Context, code tollgate.Code, msg string) {
	s.metrics.reject(rejectAuth)
	c.Header("WWW-Authenticate", challenge)
	s.abort(c, code, msg)
}

// presentedKey returns the key from X-API-Key or Authorization: Bearer, ""
// when there is none. Two different keys (in both places, or one header
// twice) are a 400: serving whichever came first would be a guess at what
// the client meant, and could bill the wrong key. The same key twice is fine.
func presentedKey(r *http.Request) (string, *tollgate.Error) {
	var secret, from, conflict string
	add := func(k, where string) {
		switch k = strings.TrimSpace(k); {
		case k == "" || k == secret:
		case secret == "":
			secret, from = k, where
		case conflict == "":
			conflict = where
		}
	}
	for _, v := range r.Header.Values("X-API-Key") {
		add(v, "X-API-Key")
	}
	for _, v := range r.Header.Values("Authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			add(v[7:], "Authorization: Bearer")
		}
	}
	if conflict != "" {
		both := from + " and " + conflict
		if from == conflict {
			both = "two " + from + " headers"
		}
		return "", badRequest("two different API keys were sent (%s); send one key, in one place", both)
	}
	return secret, nil
}

func keyInQuery(r *http.Request) bool {
	if r.URL.RawQuery == "" {
		return false
	}
	q := r.URL.Query()
	for _, name := range queryKeyNames {
		if q.Has(name) {
			return true
		}
	}
	for _, vals := range q {
		for _, v := range vals {
			if strings.HasPrefix(v, auth.SecretPrefix) {
				return true
			}
		}
	}
	return false
}

// require admits keys holding scope; others get 403.
func (s *server) require(scope auth.Scope) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !info(c).key.HasScope(scope) {
			s.abort(c, tollgate.CodeInsufficientScope, "this key does not have the "+string(scope)+" scope")
			return
		}
		c.Next()
	}
}
