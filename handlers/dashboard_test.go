package handlers_test

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/inference"
)

// The dashboard's server side: its files and their CSP, sign-in and the
// session cookie, CSRF, sign-out, the session's end (lifetime, revocation,
// rotation), and the JSON routes added for it. dashboard_browser_test.go
// drives the pages in a real browser.

// signedIn is a dashboard session as a test holds it.
type signedIn struct {
	token, csrf string
	cookie      *http.Cookie
	body        sessionBody
}

type sessionBody struct {
	Key struct {
		ID     string   `json:"id"`
		Name   string   `json:"name"`
		Prefix string   `json:"prefix"`
		Scopes []string `json:"scopes"`
	} `json:"key"`
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
	Currency  string    `json:"currency"`
	Plans     []string  `json:"plans"`
}

// signIn posts secret to /dashboard/signin and returns the session.
func (ts *testServer) signIn(t *testing.T, secret string) signedIn {
	t.Helper()
	var s signedIn
	resp := ts.doJSON(t, "POST", "/dashboard/signin", map[string]string{"key": secret}, http.StatusOK, &s.body, "X-API-Key", "")
	for _, c := range resp.Cookies() {
		if c.Name == "tollgate_session" {
			s.cookie, s.token = c, c.Value
		}
	}
	if s.token == "" {
		t.Fatalf("sign-in set no tollgate_session cookie; Set-Cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	s.csrf = s.body.CSRFToken
	return s
}

// as sends a request with the session's cookie (and no key), adding
// X-CSRF-Token when withCSRF.
func (s signedIn) as(withCSRF bool, hdr ...string) []string {
	h := append([]string{"X-API-Key", "", "Cookie", "tollgate_session=" + s.token}, hdr...)
	if withCSRF {
		h = append(h, "X-CSRF-Token", s.csrf)
	}
	return h
}

func sessionRows(t *testing.T, ts *testServer) map[string]string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+ts.dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, key_id FROM sessions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, key string
		if err := rows.Scan(&id, &key); err != nil {
			t.Fatal(err)
		}
		out[id] = key
	}
	return out
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestDashboardFilesCSP: the page, its script and its style sheet are
// served with a CSP that allows only this origin's script and style (no
// inline code), no framing and no form posts elsewhere; the page itself
// holds no inline script or style, so the policy costs it nothing.
func TestDashboardFilesCSP(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	for path, ctype := range map[string]string{"/dashboard": "text/html", "/dashboard/app.js": "text/javascript", "/dashboard/app.css": "text/css"} {
		resp := ts.do(t, "GET", path, nil, "X-API-Key", "")
		body := string(readAll(t, resp))
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Fatalf("GET %s: %s %q, want 200 %s", path, resp.Status, resp.Header.Get("Content-Type"), ctype)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "http") {
			t.Errorf("GET %s: CSP %q allows inline code, eval or another origin", path, csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("GET %s: %s %q, want %q", path, h, got, want)
			}
		}
		if path == "/dashboard" {
			low := strings.ToLower(body)
			if strings.Contains(low, "<style") || strings.Contains(low, " style=") || strings.Contains(low, "<script>") || strings.Contains(low, "javascript:") {
				t.Errorf("the page holds inline script or style, which its CSP blocks")
			}
			if strings.Contains(low, "//cdn") || strings.Contains(low, "https://") {
				t.Errorf("the page loads something from another origin")
			}
		}
		if path == "/dashboard/app.js" && (strings.Contains(body, "innerHTML") || strings.Contains(body, "localStorage") || strings.Contains(body, "sessionStorage")) {
			t.Errorf("app.js uses innerHTML or browser storage; text from the server must go in with textContent, and the key must never be stored")
		}
	}
}

// TestDashboardSignInCookie: the key is exchanged for a cookie that is
// HttpOnly, SameSite=Strict, on /, bounded to 12 h and not Secure over
// plain HTTP; the answer holds no secret and is not cached; the database
// holds the SHA-256 of the session token, never the token.
func TestDashboardSignInCookie(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	resp := ts.do(t, "POST", "/dashboard/signin", map[string]string{"key": ts.key}, "X-API-Key", "")
	body := string(readAll(t, resp))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %s %s", resp.Status, body)
	}
	var c *http.Cookie
	for _, x := range resp.Cookies() {
		if x.Name == "tollgate_session" {
			c = x
		}
	}
	if c == nil {
		t.Fatalf("no session cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.MaxAge != int((12*time.Hour).Seconds()) {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over HTTP, Max-Age 43200", c)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if strings.Contains(body, ts.key) || strings.Contains(body, c.Value) {
		t.Errorf("the sign-in answer holds the key or the session token: %s", body)
	}
	rows := sessionRows(t, ts)
	if len(rows) != 1 {
		t.Fatalf("sessions table: %v, want one row", rows)
	}
	for id := range rows {
		if id != sha256Hex(c.Value) {
			t.Errorf("session stored under %q, want the SHA-256 of the token", id)
		}
	}
}

// TestDashboardSignInSecureUnderTLS: over HTTPS the cookie is also Secure.
func TestDashboardSignInSecureUnderTLS(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"), withTLS())
	s := ts.signIn(t, ts.key)
	if !s.cookie.Secure || !s.cookie.HttpOnly || s.cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie over HTTPS %+v: want Secure, HttpOnly, SameSite=Strict", s.cookie)
	}
}

// TestDashboardSignInRefusals: a wrong key fails as on the API (401, but
// with no Basic challenge, which would pop up the browser's own password
// box); a form post or a post from another site is refused before the key
// is looked at; the failures count against the API's per-address throttle.
func TestDashboardSignInRefusals(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	resp, _ := ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": "tg_nope"}, http.StatusUnauthorized, "invalid_api_key", nil, "X-API-Key", "")
	if ch := resp.Header.Values("WWW-Authenticate"); len(ch) != 1 || !strings.HasPrefix(ch[0], "Bearer") {
		t.Errorf("WWW-Authenticate %q, want the Bearer challenge only", ch)
	}
	ts.doError(t, "POST", "/dashboard/signin", "key="+ts.key, http.StatusBadRequest, "invalid_request", []string{"JSON"},
		"X-API-Key", "", "Content-Type", "application/x-www-form-urlencoded")
	ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": ts.key}, http.StatusForbidden, "csrf_failed", nil,
		"X-API-Key", "", "Origin", "https://evil.example")
	ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": ts.key}, http.StatusForbidden, "csrf_failed", nil,
		"X-API-Key", "", "Sec-Fetch-Site", "cross-site")
	if n := len(sessionRows(t, ts)); n != 0 {
		t.Errorf("%d sessions after refused sign-ins, want 0", n)
	}
	// 19 more failures make 20 (the burst); the next attempt, on the API,
	// is throttled: sign-in failures and API failures are one budget.
	for range 19 {
		ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": "tg_nope"}, http.StatusUnauthorized, "invalid_api_key", nil, "X-API-Key", "")
	}
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", "tg_still_wrong")
	ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": "tg_nope"}, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", "")
}

// TestDashboardSessionCSRF: the session authenticates as its key; reads
// need nothing more, but every change needs the session's CSRF token, and
// one without it (or with another session's) changes nothing.
func TestDashboardSessionCSRF(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	adminID, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	s := ts.signIn(t, admin)
	other := ts.signIn(t, admin)
	if s.body.Key.ID != adminID || s.csrf == "" || s.csrf == other.csrf || s.body.Currency != "" {
		t.Fatalf("session %+v: want the admin key, a CSRF token of its own", s.body)
	}
	var who sessionBody
	ts.doJSON(t, "GET", "/dashboard/session", nil, http.StatusOK, &who, s.as(false)...)
	if who.Key.ID != adminID || who.CSRFToken != s.csrf {
		t.Errorf("GET /dashboard/session = %+v, want the admin key and the same CSRF token", who)
	}
	ts.doJSON(t, "GET", "/admin/keys", nil, http.StatusOK, nil, s.as(false)...)

	body := map[string]any{"name": "made-by-session", "scopes": []string{"generate"}}
	ts.doError(t, "POST", "/admin/keys", body, http.StatusForbidden, "csrf_failed", []string{"X-CSRF-Token"}, s.as(false)...)
	ts.doError(t, "POST", "/admin/keys", body, http.StatusForbidden, "csrf_failed", nil, s.as(false, "X-CSRF-Token", other.csrf)...)
	ts.doError(t, "POST", "/admin/keys", body, http.StatusForbidden, "csrf_failed", nil, s.as(false, "X-CSRF-Token", "-")...)
	var list struct {
		Keys []struct{ Name string } `json:"keys"`
	}
	ts.doJSON(t, "GET", "/admin/keys", nil, http.StatusOK, &list, s.as(false)...)
	for _, k := range list.Keys {
		if k.Name == "made-by-session" {
			t.Fatalf("a change without the CSRF token went through")
		}
	}
	var created struct {
		Info struct{ ID string } `json:"info"`
	}
	ts.doJSON(t, "POST", "/admin/keys", body, http.StatusCreated, &created, s.as(true)...)
	// The audit names the session's key as the actor.
	var audit struct {
		Entries []struct{ Actor, Action, KeyID string } `json:"entries"`
	}
	ts.doJSON(t, "GET", "/admin/audit?key_id="+created.Info.ID, nil, http.StatusOK, &audit, s.as(false)...)
	if len(audit.Entries) != 1 || audit.Entries[0].Actor != adminID {
		t.Errorf("audit %+v, want one entry by %s", audit.Entries, adminID)
	}
	// A key still works without any CSRF token: it is not a cookie.
	ts.doJSON(t, "POST", "/admin/keys", map[string]any{"name": "by-key"}, http.StatusCreated, nil, "X-API-Key", admin)
	// A session has its key's scopes, no more.
	plain := ts.signIn(t, ts.key)
	ts.doError(t, "GET", "/admin/keys", nil, http.StatusForbidden, "insufficient_scope", nil, plain.as(false)...)
	if len(plain.body.Plans) != 0 {
		t.Errorf("a non-admin session is told the plans: %v", plain.body.Plans)
	}
}

// TestDashboardSignOut: DELETE /dashboard/session (with the CSRF token)
// deletes the session and clears the cookie; the cookie then opens nothing.
func TestDashboardSignOut(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	s := ts.signIn(t, ts.key)
	ts.doError(t, "DELETE", "/dashboard/session", nil, http.StatusForbidden, "csrf_failed", nil, s.as(false)...)
	resp := ts.do(t, "DELETE", "/dashboard/session", nil, s.as(true)...)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %s", resp.Status)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == "tollgate_session" && c.MaxAge < 0 && c.Value == "")
	}
	if !cleared {
		t.Errorf("sign-out did not clear the cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	if n := len(sessionRows(t, ts)); n != 0 {
		t.Errorf("%d sessions after sign-out, want 0", n)
	}
	r, _ := ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "invalid_api_key", []string{"session has ended"}, s.as(false)...)
	if ch := r.Header.Values("WWW-Authenticate"); len(ch) != 1 {
		t.Errorf("WWW-Authenticate %q: want no Basic challenge for a dashboard request", ch)
	}
}

// TestDashboardSessionLifetime: a session lasts 12 h from sign-in, however
// busy, then its cookie opens nothing and its row is gone.
func TestDashboardSessionLifetime(t *testing.T) {
	clock := authtest.NewClock(time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"), withClock(clock.Now))
	s := ts.signIn(t, ts.key)
	if want := clock.Now().Add(12 * time.Hour); !s.body.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %v, want %v", s.body.ExpiresAt, want)
	}
	clock.Advance(12*time.Hour - time.Second)
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, nil, s.as(false)...)
	clock.Advance(time.Second)
	ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "invalid_api_key", []string{"12h"}, s.as(false)...)
	if n := len(sessionRows(t, ts)); n != 0 {
		t.Errorf("%d sessions after the lifetime, want 0", n)
	}
	// The key itself is fine: a new sign-in works.
	ts.signIn(t, ts.key)
}

// TestDashboardSessionEndsWithKey: revoking the key ends its sessions at
// once; an admin rotation ends them when the old secret's grace period
// does; a self-rotation made through the session keeps it for the grace
// period too.
func TestDashboardSessionEndsWithKey(t *testing.T) {
	clock := authtest.NewClock(time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"), withClock(clock.Now))
	_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})

	id, secret := ts.newKey(t, auth.Spec{Name: "revoked-soon"})
	s := ts.signIn(t, secret)
	ts.doJSON(t, "POST", "/admin/keys/"+id+"/revoke", nil, http.StatusOK, nil, "X-API-Key", admin)
	// Every request the browser had in flight is told the same reason.
	for range 2 {
		ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "key_revoked", []string{"session has ended"}, s.as(false)...)
	}
	ts.doError(t, "POST", "/dashboard/signin", map[string]string{"key": secret}, http.StatusUnauthorized, "key_revoked", nil, "X-API-Key", "")

	id, secret = ts.newKey(t, auth.Spec{Name: "rotated"})
	s = ts.signIn(t, secret)
	ts.doJSON(t, "POST", "/admin/keys/"+id+"/rotate", map[string]string{"grace": "1h"}, http.StatusOK, nil, "X-API-Key", admin)
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, nil, s.as(false)...)
	clock.Advance(time.Hour)
	ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "key_expired", []string{"rotated out"}, s.as(false)...)

	_, secret = ts.newKey(t, auth.Spec{Name: "self"})
	s = ts.signIn(t, secret)
	ts.doError(t, "POST", "/keys/self/rotate", map[string]string{"grace": "1h"}, http.StatusForbidden, "csrf_failed", nil, s.as(false)...)
	var rotated struct {
		Key string `json:"key"`
	}
	ts.doJSON(t, "POST", "/keys/self/rotate", map[string]string{"grace": "1h"}, http.StatusOK, &rotated, s.as(true)...)
	if auth.CheckFormat(rotated.Key) != nil || rotated.Key == secret {
		t.Fatalf("self-rotation through the session gave %q, want a new key", auth.DisplayPrefix(rotated.Key))
	}
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, nil, s.as(false)...)
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, nil, "X-API-Key", rotated.Key)
	// The session signed in with the secret the rotation replaced: it may
	// not rotate again (that secret is no longer the key's current one).
	ts.doError(t, "POST", "/keys/self/rotate", nil, http.StatusForbidden, "superseded_key", nil, s.as(true)...)
	clock.Advance(time.Hour)
	ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "key_expired", nil, s.as(false)...)
}

// TestDashboardDataRoutes: /usage/requests lists the caller's own latest
// requests, newest first, never another key's; the admin version takes
// key_id; ?model= narrows the usage reports; /admin/inflight reports the
// GPU slots.
func TestDashboardDataRoutes(t *testing.T) {
	_, ts := newFakeServer(t, "5s")
	id, secret := ts.newKey(t, auth.Spec{Name: "holder"})
	_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	for _, p := range []string{"one", "two", "three"} {
		ts.doJSON(t, "POST", "/generate", map[string]any{"model": "chat", "prompt": p}, http.StatusOK, nil, "X-API-Key", secret)
	}
	ts.doJSON(t, "POST", "/embed", map[string]any{"model": "embedder", "input": "x"}, http.StatusOK, nil, "X-API-Key", secret)
	ts.doJSON(t, "POST", "/generate", map[string]any{"model": "chat", "prompt": "other key"}, http.StatusOK, nil) // ts.key

	type records struct {
		Requests []struct {
			KeyID           string `json:"key_id"`
			Model, Endpoint string
			Status          int
			TotalTokens     int64     `json:"total_tokens"`
			Time            time.Time `json:"time"`
		} `json:"requests"`
	}
	var own records
	ts.doJSON(t, "GET", "/usage/requests?limit=3", nil, http.StatusOK, &own, "X-API-Key", secret)
	if len(own.Requests) != 3 || own.Requests[0].Model != "embedder" || own.Requests[1].Model != "chat" {
		t.Fatalf("own latest requests %+v, want 3, newest (the embed) first", own.Requests)
	}
	for i, r := range own.Requests {
		if r.KeyID != id || r.Status != 200 || r.TotalTokens <= 0 || (i > 0 && r.Time.After(own.Requests[i-1].Time)) {
			t.Errorf("record %d %+v: want the caller's, 200, with tokens, newest first", i, r)
		}
	}
	// A session reads the same route as its key.
	s := ts.signIn(t, secret)
	var viaSession records
	ts.doJSON(t, "GET", "/usage/requests?key_id=someone-else", nil, http.StatusOK, &viaSession, s.as(false)...)
	if len(viaSession.Requests) != 4 {
		t.Errorf("via the session: %d records, want the key's own 4 (key_id ignored)", len(viaSession.Requests))
	}
	var all records
	ts.doJSON(t, "GET", "/admin/usage/requests", nil, http.StatusOK, &all, "X-API-Key", admin)
	if len(all.Requests) != 5 {
		t.Errorf("admin, every key: %d records, want 5", len(all.Requests))
	}
	ts.doJSON(t, "GET", "/admin/usage/requests?key_id="+id+"&model=chat", nil, http.StatusOK, &all, "X-API-Key", admin)
	if len(all.Requests) != 3 {
		t.Errorf("admin, one key, model chat: %d records, want 3", len(all.Requests))
	}
	ts.doError(t, "GET", "/usage/requests?limit=0", nil, http.StatusBadRequest, "invalid_request", []string{"limit"}, "X-API-Key", secret)
	ts.doError(t, "GET", "/admin/usage/requests", nil, http.StatusForbidden, "insufficient_scope", nil, "X-API-Key", secret)

	var report struct {
		Totals struct{ Requests int64 } `json:"totals"`
	}
	ts.doJSON(t, "GET", "/admin/usage?model=embedder", nil, http.StatusOK, &report, "X-API-Key", admin)
	if report.Totals.Requests != 1 {
		t.Errorf("admin usage for model embedder: %d requests, want 1", report.Totals.Requests)
	}
	ts.doJSON(t, "GET", "/usage?model=chat", nil, http.StatusOK, &report, "X-API-Key", secret)
	if report.Totals.Requests != 3 {
		t.Errorf("own usage for model chat: %d requests, want 3", report.Totals.Requests)
	}

	var load struct {
		InFlight    int `json:"in_flight"`
		MaxInFlight int `json:"max_in_flight"`
	}
	ts.doJSON(t, "GET", "/admin/inflight", nil, http.StatusOK, &load, "X-API-Key", admin)
	if load.InFlight != 0 || load.MaxInFlight != inference.DefaultMaxParallel {
		t.Errorf("in flight %+v, want 0 of %d (one backend, max_parallel not set)", load, inference.DefaultMaxParallel)
	}
}
