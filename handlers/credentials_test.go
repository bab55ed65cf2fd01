package handlers_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"tollgate/auth"
)

// sendHeaders sends GET path with exactly the given header fields (name,
// value pairs; a name may repeat) and nothing else that authenticates.
func (ts *testServer) sendHeaders(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readAll(t, resp)
}

// TestTwoDifferentCredentials: a request that presents two different keys
// (X-API-Key and Authorization: Bearer, or X-API-Key twice) is refused with
// 400 instead of being served with whichever came first; the same key sent
// twice is fine. Neither key appears in the answer or the log.
func TestTwoDifferentCredentials(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	_, other, err := auth.NewKeys(ts.db, nil, nil).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	guess, _ := auth.Generate()
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"X-API-Key and a different Bearer", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + other}, http.StatusBadRequest},
		{"X-API-Key and an unknown Bearer", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + guess}, http.StatusBadRequest},
		{"a bad X-API-Key and a valid Bearer", []string{"X-API-Key", guess, "Authorization", "Bearer " + ts.key}, http.StatusBadRequest},
		{"two different X-API-Key", []string{"X-API-Key", ts.key, "X-API-Key", other}, http.StatusBadRequest},
		{"two different Bearer", []string{"Authorization", "Bearer " + ts.key, "Authorization", "Bearer " + other}, http.StatusBadRequest},
		{"the same key in both", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + ts.key}, http.StatusOK},
		{"the same X-API-Key twice", []string{"X-API-Key", ts.key, "X-API-Key", ts.key}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.sendHeaders(t, "/models", tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == http.StatusBadRequest {
				e := checkEnvelope(t, body, "invalid_request", "different API keys")
				for _, k := range []string{ts.key, other, guess} {
					if strings.Contains(e.Message, k) || strings.Contains(e.Message, auth.DisplayPrefix(k)) {
						t.Errorf("the message shows a key: %q", e.Message)
					}
				}
			}
		})
	}
	if log := ts.logs.String(); strings.Contains(log, ts.key) || strings.Contains(log, other) || strings.Contains(log, guess) {
		t.Errorf("the log holds a key:\n%s", log)
	}
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestAuthorizationForms: a key sent as the password of HTTP Basic auth is
// accepted (no-code tools often offer nothing else); a key in Authorization
// without a scheme, or Basic auth with the key in the wrong place, is told
// how to send it instead of being reported as missing. Every 401 offers
// both challenges, and no answer or log line holds a key.
func TestAuthorizationForms(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	guess, _ := auth.Generate()
	for _, tc := range []struct {
		name, authz string
		status      int
		code        string
		msgs        []string
	}{
		{"Basic, key as password", basic("zapier", ts.key), http.StatusOK, "", nil},
		{"Basic, no user name", basic("", ts.key), http.StatusOK, "", nil},
		{"Basic scheme in lower case", "basic " + strings.TrimPrefix(basic("u", ts.key), "Basic "), http.StatusOK, "", nil},
		{"Basic, unknown key as password", basic("u", guess), http.StatusUnauthorized, "invalid_api_key", nil},
		{"Basic, key as user name", basic(ts.key, ""), http.StatusUnauthorized, "invalid_api_key", []string{"password"}},
		{"Basic, not base64", "Basic !!!", http.StatusUnauthorized, "invalid_api_key", []string{"Basic", "password"}},
		{"no scheme", ts.key, http.StatusUnauthorized, "invalid_api_key", []string{"no scheme", "Authorization: Bearer <key>"}},
		{"unknown scheme", "Token " + ts.key, http.StatusUnauthorized, "invalid_api_key", []string{"Authorization: Bearer <key>", "Basic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.sendHeaders(t, "/models", "Authorization", tc.authz)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == http.StatusOK {
				return
			}
			e := checkEnvelope(t, body, tc.code, tc.msgs...)
			for _, k := range []string{ts.key, guess} {
				if strings.Contains(e.Message, k) || strings.Contains(e.Message, auth.DisplayPrefix(k)) {
					t.Errorf("the message shows a key: %q", e.Message)
				}
			}
			checkChallenges(t, resp)
		})
	}
	// A Basic password that differs from X-API-Key is two keys.
	resp, body := ts.sendHeaders(t, "/models", "X-API-Key", ts.key, "Authorization", basic("u", guess))
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("X-API-Key and a different Basic password: %s %s, want 400", resp.Status, body)
	}
	// The missing-key message names every way to send one.
	resp, body = ts.sendHeaders(t, "/models")
	checkEnvelope(t, body, "missing_api_key", "X-API-Key", "Bearer", "Basic")
	checkChallenges(t, resp)
	if log := ts.logs.String(); strings.Contains(log, ts.key) || strings.Contains(log, guess) {
		t.Errorf("the log holds a key:\n%s", log)
	}
}

// checkChallenges requires a 401 to offer Bearer and Basic challenges.
func checkChallenges(t *testing.T, resp *http.Response) {
	t.Helper()
	var bearer, basic bool
	for _, v := range resp.Header.Values("WWW-Authenticate") {
		bearer = bearer || strings.HasPrefix(v, `Bearer realm="tollgate"`)
		basic = basic || strings.HasPrefix(v, `Basic realm="tollgate"`)
	}
	if !bearer || !basic {
		t.Errorf("WWW-Authenticate %q: want a Bearer and a Basic challenge", resp.Header.Values("WWW-Authenticate"))
	}
}

// TestUnknownFieldNamesOnlyTheField: an unknown field in valid JSON sent
// with curl's default form Content-Type is reported by name, without the
// advice to change the Content-Type (the JSON was read fine); JSON that
// does not parse still gets that advice. A real form is read as a form (see
// form_test.go): its typo is reported with how form fields are spelled.
func TestUnknownFieldNamesOnlyTheField(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	form := []string{"Content-Type", "application/x-www-form-urlencoded"}
	for _, tc := range []struct {
		name, body string
		msg        string
		hint       bool
	}{
		{"unknown field", `{"model":"chat","promt":"hi"}`, `unknown field "promt"`, false},
		{"wrong type", `{"model":"chat","prompt":5}`, `"prompt"`, false},
		{"bad option", `{"model":"chat","prompt":"hi","options":{"num_gpu":1}}`, "options.num_gpu", false},
		{"JSON that does not parse", `{"model":"chat",`, "truncated JSON", true},
		{"form with a typo", `model=chat&promt=hi`, `unknown field "promt"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := ts.doError(t, "POST", "/generate", tc.body, http.StatusBadRequest, "invalid_request", []string{tc.msg}, form...)
			if got := strings.Contains(e.Message, "Content-Type"); got != tc.hint {
				t.Errorf("message %q: mentions Content-Type = %v, want %v", e.Message, got, tc.hint)
			}
		})
	}
}
