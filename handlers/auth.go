package handlers

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"net/http"
	"net/netip"
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
	// VerifyKnown is Verify for secrets known to be good (cached, or
	// verified recently); others get ErrUnknown or ErrMalformed without a
	// lookup.
	VerifyKnown(ctx context.Context, secret string) (auth.Key, error)
}

// FailureThrottle limits failed authentication attempts per client address;
// *auth.Throttle satisfies it.
type FailureThrottle interface {
	Wait(addr string, now time.Time) time.Duration
	Take(addr string, now time.Time)
}

// challenges go in WWW-Authenticate on every 401: the key as a bearer
// token, or as the password of HTTP Basic auth.
var challenges = [...]string{`Bearer realm="tollgate", charset="UTF-8"`, `Basic realm="tollgate", charset="UTF-8"`}

// queryKeyNames are query parameters that, by convention, carry API keys.
var queryKeyNames = []string{"api_key", "apikey", "api-key", "key", "token", "access_token", "x-api-key"}

// authenticate admits requests carrying a valid key in X-API-Key,
// Authorization: Bearer or as the Basic auth password. Failed attempts are
// throttled per client address (never charged to a key); a key in the URL
// is refused outright.
func (s *server) authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		if keyInQuery(c.Request) {
			s.unauthorized(c, tollgate.CodeKeyInQuery, "API keys are not accepted in the URL, where they end up in logs and histories; send the key in the X-API-Key header (or Authorization: Bearer <key>) and revoke this one if it was shared")
			return
		}
		secret, perr := presentedKey(c.Request)
		if perr != nil {
			if perr.Code.Status() == http.StatusUnauthorized {
				s.unauthorized(c, perr.Code, perr.Message)
				return
			}
			s.metrics.reject(rejectAuth)
			s.abort(c, perr.Code, perr.Message)
			return
		}
		if secret == "" && s.sessions != nil {
			if token, err := c.Cookie(sessionCookie); err == nil && token != "" {
				s.sessionAuth(c, token)
				return
			}
		}
		key, ok := s.verifySecret(c, secret)
		if !ok {
			return
		}
		ri := info(c)
		ri.keyID = key.ID
		ri.key = key
		c.Next()
	}
}

// verifySecret checks a presented secret ("" when none was sent) under the
// per-address throttle on failed attempts, as every API request and every
// dashboard sign-in does. On failure it has written the answer and returns
// false.
func (s *server) verifySecret(c *gin.Context, secret string) (auth.Key, bool) {
	ok := secret != ""
	addr := throttleKey(c.ClientIP())
	now := s.now()
	var (
		key auth.Key
		err error
	)
	if wait := s.failures.Wait(addr, now); wait > 0 {
		// The address is throttled, perhaps for someone else's failures
		// (a NAT, a platform's shared egress): a key known to be good
		// (used here within a day) is still verified and served; any
		// other secret is refused without reaching the database, so the
		// throttle costs the guesser and not the neighbours.
		if ok {
			key, err = s.verifier.VerifyKnown(c.Request.Context(), secret)
		}
		if !ok || errors.Is(err, auth.ErrUnknown) || errors.Is(err, auth.ErrMalformed) {
			secs := int(math.Ceil(wait.Seconds()))
			c.Header("Retry-After", strconv.Itoa(secs))
			s.metrics.reject(rejectAuth)
			s.abort(c, tollgate.CodeTooManyAuthFailures, "too many failed authentication attempts from your address; retry in "+strconv.Itoa(secs)+" s")
			return auth.Key{}, false
		}
	} else {
		if !ok {
			s.unauthorized(c, tollgate.CodeMissingKey, "an API key is required: send it in the X-API-Key header, as Authorization: Bearer <key>, or as the password of HTTP Basic auth (any user name)")
			return auth.Key{}, false
		}
		key, err = s.verifier.Verify(c.Request.Context(), secret)
	}
	if err != nil {
		s.authFailed(c, addr, now, err)
		return auth.Key{}, false
	}
	return key, true
}

// throttleKey is the address failed authentications are counted under: an
// IPv4 address, or the /64 of an IPv6 one (a host is given a whole /64 and
// could send each guess from a new address in it).
func throttleKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a = a.Unmap().WithZone(""); a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
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
	for i, ch := range challenges {
		if i > 0 && fromDashboard(c) {
			break // a Basic challenge would make the browser pop up its own sign-in box
		}
		c.Writer.Header().Add("WWW-Authenticate", ch)
	}
	s.abort(c, code, msg)
}

// presentedKey returns the key from X-API-Key, Authorization: Bearer, or the
// password of Authorization: Basic (the user name is ignored: several no-code
// tools offer Basic auth as their only credential form); "" when there is
// none. Two different keys (in two places, or one header twice) are a 400:
// serving whichever came first would be a guess at what the client meant,
// and could bill the wrong key. The same key twice is fine. An Authorization
// header that holds no key in a form we read is a 401 saying how to send it,
// unless a key came in X-API-Key. Messages never quote what was sent.
func presentedKey(r *http.Request) (string, *tollgate.Error) {
	var secret, from, conflict, unusable string
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
		scheme, rest, spaced := strings.Cut(strings.TrimSpace(v), " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			add(rest, "Authorization: Bearer")
		case strings.EqualFold(scheme, "Basic"):
			password, ok := basicPassword(rest)
			switch {
			case !ok:
				unusable = "the Authorization: Basic credentials are not base64 of user:password; send the key as the password (any user name)"
			case password == "":
				unusable = "HTTP Basic auth carries the key as the password (the user name is ignored), and the password is empty"
			}
			add(password, "Authorization: Basic")
		case scheme == "":
		case !spaced:
			unusable = "the Authorization header has no scheme: send the key as Authorization: Bearer <key> (or in the X-API-Key header)"
		default:
			unusable = "the Authorization scheme is not one Tollgate reads: send the key as Authorization: Bearer <key>, as the password of HTTP Basic auth, or in the X-API-Key header"
		}
	}
	switch {
	case conflict != "":
		both := from + " and " + conflict
		if from == conflict {
			both = "two " + from + " headers"
		}
		return "", badRequest("two different API keys were sent (%s); send one key, in one place", both)
	case secret == "" && unusable != "":
		return "", &tollgate.Error{Code: tollgate.CodeInvalidKey, Message: unusable}
	}
	return secret, nil
}

// basicPassword decodes the credentials of Authorization: Basic and returns
// the password.
func basicPassword(creds string) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(creds))
	if err != nil {
		return "", false
	}
	_, password, ok := strings.Cut(string(raw), ":")
	return password, ok
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
