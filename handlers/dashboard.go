package handlers

import (
	"embed"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
	"tollgate/metering"
)

// dashboardFiles are the dashboard's page, script and style sheet: plain
// files, no build step, nothing fetched from elsewhere.
//
//go:embed dashboard/index.html dashboard/app.js dashboard/app.css
var dashboardFiles embed.FS

// dashboardPolicy allows the dashboard its own script and style sheet (no
// inline script or style at all), requests to its own origin, and nothing
// else: no frames, no forms posted elsewhere, no plugins, no base change.
const dashboardPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// sessionCookie holds a dashboard session's token.
const sessionCookie = "tollgate_session"

// csrfHeader carries the session's CSRF token on every dashboard request
// that changes something.
const csrfHeader = "X-CSRF-Token"

// dashboardAsset serves one embedded dashboard file.
func (s *server) dashboardAsset(name, contentType string) gin.HandlerFunc {
	data, _ := dashboardFiles.ReadFile("dashboard/" + name) // present: go:embed fails the build otherwise
	return func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", dashboardPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		c.Data(http.StatusOK, contentType, data)
	}
}

type signInRequest struct {
	Key string `json:"key"` // the API key's secret
}

// sessionJSON describes the signed-in dashboard session.
type sessionJSON struct {
	Key       auth.Key  `json:"key"`
	CSRFToken string    `json:"csrf_token,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Currency is the catalog's currency code for costs ("" when unset).
	Currency string `json:"currency,omitempty"`
	// Plans names the catalog's plans, for an admin key (to pick one).
	Plans []string `json:"plans,omitempty"`
}

// sessionInfo describes key's session (token "" for a key, not a session).
func (s *server) sessionInfo(key auth.Key, token string, expires time.Time) sessionJSON {
	cat := s.gw.Catalog()
	out := sessionJSON{Key: key, Currency: cat.Currency}
	if token != "" {
		out.CSRFToken, out.ExpiresAt = auth.CSRFToken(token), expires
	}
	if key.HasScope(auth.ScopeAdmin) {
		for name := range cat.Plans {
			out.Plans = append(out.Plans, name)
		}
		slices.Sort(out.Plans)
	}
	return out
}

// signIn serves POST /dashboard/signin: the key is posted once, checked
// exactly as an API request's key is (the same failed-attempt throttle), and
// exchanged for a session cookie. Only JSON is accepted, so another site
// cannot sign a browser in with a plain form post.
func (s *server) signIn() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.sessions == nil {
			s.abort(c, tollgate.CodeNotFound, "the dashboard's sign-in is not enabled on this server")
			return
		}
		if !isJSONType(c.GetHeader("Content-Type")) {
			s.fail(c, badRequest("sign in with a JSON body {\"key\": \"tg_...\"} and Content-Type: application/json"))
			return
		}
		if !sameOrigin(c.Request) {
			s.abort(c, tollgate.CodeCSRFFailed, "sign-in from another site is refused")
			return
		}
		var body signInRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		key, ok := s.verifySecret(c, body.Key)
		if !ok {
			return
		}
		token, sess, err := s.sessions.Start(c.Request.Context(), key, body.Key)
		if err != nil {
			s.fail(c, err)
			return
		}
		ri := info(c)
		ri.keyID, ri.key = key.ID, key
		http.SetCookie(c.Writer, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", MaxAge: int(s.sessions.TTL().Seconds()),
			HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, s.sessionInfo(key, token, sess.ExpiresAt))
	}
}

// sameOrigin is false when the browser says the request comes from another
// origin (Origin, else Sec-Fetch-Site); requests without either (curl, a
// script) pass.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	site := r.Header.Get("Sec-Fetch-Site")
	return site == "" || site == "same-origin" || site == "none"
}

// showSession serves GET /dashboard/session: the caller's key and, for a
// session, its CSRF token and end.
func (s *server) showSession() gin.HandlerFunc {
	return func(c *gin.Context) {
		ri := info(c)
		var expires time.Time
		if ri.session != nil {
			expires = ri.session.ExpiresAt
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, s.sessionInfo(ri.key, ri.sessionToken, expires))
	}
}

// signOut serves DELETE /dashboard/session: the session is deleted and its
// cookie cleared. With a key instead of a session there is nothing to end.
func (s *server) signOut() gin.HandlerFunc {
	return func(c *gin.Context) {
		ri := info(c)
		if ri.session != nil {
			if err := s.sessions.End(c.Request.Context(), ri.sessionToken); err != nil {
				s.fail(c, err)
				return
			}
		}
		clearSessionCookie(c)
		c.Status(http.StatusNoContent)
	}
}

func clearSessionCookie(c *gin.Context) {
	http.SetCookie(c.Writer, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// sessionAuth authenticates a request by its dashboard session cookie. The
// key is checked again on every request (auth.Sessions.Resume, through the
// verifier), so revoking it or rotating its secret out ends the session.
// A request that changes something must carry the session's CSRF token.
func (s *server) sessionAuth(c *gin.Context, token string) {
	sess, key, err := s.sessions.Resume(c.Request.Context(), token)
	if err != nil {
		switch {
		case errors.Is(err, auth.ErrRevoked):
			clearSessionCookie(c)
			s.unauthorized(c, tollgate.CodeKeyRevoked, "the key this session signed in with has been revoked; the session has ended")
		case errors.Is(err, auth.ErrExpired):
			clearSessionCookie(c)
			s.unauthorized(c, tollgate.CodeKeyExpired, "the key this session signed in with has expired or was rotated out; sign in again with its current secret")
		case errors.Is(err, auth.ErrNoSession):
			clearSessionCookie(c)
			s.unauthorized(c, tollgate.CodeInvalidKey, "the dashboard session has ended (signed out, or past its "+shortDuration(s.sessions.TTL())+" lifetime); sign in again")
		default:
			s.fail(c, err)
		}
		return
	}
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !auth.CheckCSRF(token, c.GetHeader(csrfHeader)) {
			s.abort(c, tollgate.CodeCSRFFailed, "a change made with a dashboard session must carry the session's CSRF token in the "+csrfHeader+" header")
			return
		}
	}
	ri := info(c)
	ri.keyID, ri.key, ri.session, ri.sessionToken = key.ID, key, &sess, token
	c.Next()
}

// fromDashboard reports whether the request comes from the dashboard's
// script (it signs in, holds a session cookie or sends the CSRF header).
func fromDashboard(c *gin.Context) bool {
	if c.GetHeader(csrfHeader) != "" || c.FullPath() == "/dashboard/signin" {
		return true
	}
	_, err := c.Request.Cookie(sessionCookie)
	return err == nil
}

// usageRecord is one request's usage, as GET /usage/requests lists it.
type usageRecord struct {
	RequestID        string    `json:"request_id"`
	KeyID            string    `json:"key_id"`
	Endpoint         string    `json:"endpoint"`
	Model            string    `json:"model"`
	Surface          string    `json:"surface"`
	Status           int       `json:"status"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	TotalTokens      int64     `json:"total_tokens"`
	Cost             string    `json:"cost"`
	CostMicros       int64     `json:"cost_micros"`
	LatencyMS        float64   `json:"latency_ms"`
	Time             time.Time `json:"time"`
}

type usageRecords struct {
	Requests []usageRecord `json:"requests"`
}

// Bounds of ?limit on the recent-requests routes.
const (
	defaultRecentLimit = 20
	maxRecentLimit     = 200
)

// recentUsage serves GET /usage/requests (the caller's own key) and GET
// /admin/usage/requests (any key, ?key_id=): the newest usage records in the
// range, newest first.
func (s *server) recentUsage(self bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		q, err := usageQuery(c, s.now().UTC())
		if err != nil {
			s.fail(c, err)
			return
		}
		limit := defaultRecentLimit
		if v := c.Query("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxRecentLimit {
				s.fail(c, badRequest("query parameter \"limit\" must be a whole number from 1 to %d", maxRecentLimit))
				return
			}
			limit = n
		}
		q.KeyID = c.Query("key_id")
		if self {
			q.KeyID = info(c).keyID
		}
		events, err := s.usage.RecentEvents(c.Request.Context(), q, limit)
		if err != nil {
			s.fail(c, err)
			return
		}
		out := usageRecords{Requests: make([]usageRecord, 0, len(events))}
		for _, e := range events {
			out.Requests = append(out.Requests, toUsageRecord(e))
		}
		c.JSON(http.StatusOK, out)
	}
}

func toUsageRecord(e metering.Event) usageRecord {
	return usageRecord{RequestID: e.RequestID, KeyID: e.KeyID, Endpoint: string(e.Endpoint), Model: e.Model,
		Surface: e.SurfaceName(), Status: e.Status, PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens,
		TotalTokens: e.TotalTokens(), Cost: e.Cost.String(), CostMicros: int64(e.Cost),
		LatencyMS: float64(e.Latency.Microseconds()) / 1000, Time: e.Time.UTC()}
}

type inFlightJSON struct {
	InFlight    int `json:"in_flight"`     // inference calls running on a backend now
	MaxInFlight int `json:"max_in_flight"` // what the backends run at once, summed (max_parallel)
	Queued      int `json:"queued"`        // calls waiting in the fair queue for a backend slot
}

// inFlight serves GET /admin/inflight: how many inference calls run now,
// across the backends, and how many wait.
func (s *server) inFlight() gin.HandlerFunc {
	return func(c *gin.Context) {
		var out inFlightJSON
		if s.fleet != nil {
			for _, b := range s.fleet.Backends() {
				out.InFlight += b.InFlight
				out.MaxInFlight += b.MaxParallel
			}
			out.Queued = s.fleet.Queued()
		}
		c.JSON(http.StatusOK, out)
	}
}
