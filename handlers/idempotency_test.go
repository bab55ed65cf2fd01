package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/inference/ollamatest"
)

// idemCall is one request's outcome, read in full.
type idemCall struct {
	status int
	header http.Header
	body   []byte
}

func (ts *testServer) idem(t *testing.T, path string, body any, key string, hdr ...string) idemCall {
	t.Helper()
	resp := ts.do(t, "POST", path, body, append([]string{"Idempotency-Key", key}, hdr...)...)
	return idemCall{resp.StatusCode, resp.Header, readAll(t, resp)}
}

// TestIdempotencyKeyReplays: on every surface, the same Idempotency-Key with
// the same body replays the first answer (status, Content-Type, body;
// Ollama's NDJSON stream as one body) without a second Ollama call or usage
// row, echoing the key and saying Idempotent-Replayed.
func TestIdempotencyKeyReplays(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		path string
		body string
		ct   string
	}{
		{"/generate", generateBody, "application/json"},
		{"/generate", `{"model":"chat","prompt":"hi","stream":true}`, "text/event-stream"},
		{"/embed", `{"model":"embedder","input":"hi"}`, "application/json"},
		{"/predict", `{"task":"sentiment","input":"great"}`, "application/json"},
		{"/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":"hi"}]}`, "application/json"},
		{"/v1/embeddings", `{"model":"embedder","input":"hi"}`, "application/json"},
		{"/api/generate", `{"model":"chat","prompt":"hi"}`, "application/x-ndjson"},
		{"/api/chat", `{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":false}`, "application/json"},
		{"/api/embed", `{"model":"embedder","input":"hi"}`, "application/json"},
	} {
		id, key := ts.newKey(t, auth.Spec{})
		before := fake.Stats().Requests
		first := ts.idem(t, tc.path, tc.body, "abc-1", "X-API-Key", key)
		second := ts.idem(t, tc.path, tc.body, "abc-1", "X-API-Key", key)
		if first.status != 200 || !strings.HasPrefix(first.header.Get("Content-Type"), tc.ct) {
			t.Fatalf("%s %s: %d %q %s", tc.path, tc.body, first.status, first.header.Get("Content-Type"), first.body)
		}
		if second.status != first.status || !bytes.Equal(second.body, first.body) ||
			second.header.Get("Content-Type") != first.header.Get("Content-Type") {
			t.Errorf("%s: replay %d %q %s, want %d %q %s", tc.path, second.status, second.header.Get("Content-Type"), second.body,
				first.status, first.header.Get("Content-Type"), first.body)
		}
		if first.header.Get("Idempotent-Replayed") != "" || second.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("%s: Idempotent-Replayed %q then %q, want none then true", tc.path,
				first.header.Get("Idempotent-Replayed"), second.header.Get("Idempotent-Replayed"))
		}
		if first.header.Get("Idempotency-Key") != "abc-1" || second.header.Get("Idempotency-Key") != "abc-1" {
			t.Errorf("%s: the Idempotency-Key is not echoed", tc.path)
		}
		if n := fake.Stats().Requests - before; n != 1 {
			t.Errorf("%s: Ollama got %d requests, want 1", tc.path, n)
		}
		if rows := ts.usageRows(t, id); len(rows) != 1 {
			t.Errorf("%s: %d usage rows, want 1", tc.path, len(rows))
		}
	}
}

// TestIdempotencyKeyReusedForAnotherRequest: another body, or another
// route, under a used key is 422 in the route's own error shape; a request
// without the header is untouched.
func TestIdempotencyKeyReusedForAnotherRequest(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	ts.idem(t, "/generate", generateBody, "k")
	ts.doError(t, "POST", "/generate", `{"model":"chat","prompt":"other"}`, 422, "idempotency_key_reused",
		[]string{"Idempotency-Key", "different request"}, "Idempotency-Key", "k")
	ts.doError(t, "POST", "/embed", `{"model":"embedder","input":"hi"}`, 422, "idempotency_key_reused", nil, "Idempotency-Key", "k")

	// OpenAI's shape.
	chat := `{"model":"chat","messages":[{"role":"user","content":"hi"}]}`
	ts.idem(t, "/v1/chat/completions", chat, "oa")
	r := ts.idem(t, "/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":"bye"}]}`, "oa")
	var oa struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &oa); err != nil || r.status != 422 || oa.Error.Code != "idempotency_key_reused" ||
		oa.Error.Type != "invalid_request_error" || oa.Error.Message == "" {
		t.Errorf("OpenAI 422: %d %s (%v)", r.status, r.body, err)
	}
	// Ollama's shape.
	ts.idem(t, "/api/embed", `{"model":"embedder","input":"hi"}`, "ol")
	r = ts.idem(t, "/api/embed", `{"model":"embedder","input":"ho"}`, "ol")
	var ol map[string]any
	if err := json.Unmarshal(r.body, &ol); err != nil || r.status != 422 || len(ol) != 1 || !strings.Contains(ol["error"].(string), "Idempotency-Key") {
		t.Errorf("Ollama 422: %d %s (%v)", r.status, r.body, err)
	}
	if n := fake.Stats().Requests; n != 3 {
		t.Errorf("Ollama got %d requests, want 3", n)
	}
}

// TestIdempotencyKeyInUse: while the first request is held in Ollama, the
// retry is 409 with Retry-After: 1 in the route's shape; once the first is
// done the retry replays it.
func TestIdempotencyKeyInUse(t *testing.T) {
	hold := make(chan struct{})
	fake, ts := newFakeServer(t, "10s", ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	chat := `{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":false}`
	for i, p := range []struct{ path, body, want string }{
		{"/generate", generateBody, `"code":"idempotency_key_in_use"`},
		{"/v1/chat/completions", chat, `"code":"idempotency_key_in_use"`},
		{"/api/chat", chat, `{"error":"a request with this Idempotency-Key is still running`},
	} {
		key := "busy-" + p.path
		first := make(chan idemCall, 1)
		go func() {
			resp, err := ts.send(t.Context(), "POST", p.path, p.body, "Idempotency-Key", key)
			if err != nil {
				first <- idemCall{}
				return
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			first <- idemCall{resp.StatusCode, resp.Header, buf.Bytes()}
		}()
		waitFake(t, fake, "the first request held", func(s ollamatest.Stats) bool { return s.InFlight == 1 })
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		resp, err := ts.send(ctx, "POST", p.path, p.body, "Idempotency-Key", key)
		if err != nil {
			cancel()
			t.Fatalf("%s while running: %v (it ran instead of being refused?)", p.path, err)
		}
		r := idemCall{resp.StatusCode, resp.Header, readAll(t, resp)}
		resp.Body.Close()
		cancel()
		if r.status != 409 || r.header.Get("Retry-After") != "1" || !strings.Contains(string(r.body), p.want) {
			t.Errorf("%s while running: %d Retry-After %q %s, want 409, 1, %s", p.path, r.status, r.header.Get("Retry-After"), r.body, p.want)
		}
		hold <- struct{}{}
		var got idemCall
		select {
		case got = <-first:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the first request did not finish", p.path)
		}
		if got.status != 200 {
			t.Fatalf("%s: the first request: %d %s", p.path, got.status, got.body)
		}
		r = ts.idem(t, p.path, p.body, key)
		if r.status != 200 || !bytes.Equal(r.body, got.body) || r.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("%s after the first: %d %s, want the replay of %s", p.path, r.status, r.body, got.body)
		}
		if n := fake.Stats().Requests; n != int64(i+1) {
			t.Errorf("%s: Ollama got %d requests in all, want %d", p.path, n, i+1)
		}
	}
}

// TestIdempotencyKeyPerAPIKey: two API keys using the same Idempotency-Key
// are two requests.
func TestIdempotencyKeyPerAPIKey(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	_, k1 := ts.newKey(t, auth.Spec{})
	_, k2 := ts.newKey(t, auth.Spec{})
	a := ts.idem(t, "/generate", generateBody, "same", "X-API-Key", k1)
	b := ts.idem(t, "/generate", generateBody, "same", "X-API-Key", k2)
	if a.status != 200 || b.status != 200 || b.header.Get("Idempotent-Replayed") != "" || bytes.Equal(a.body, b.body) {
		t.Errorf("second key: %d %s replayed %q, want its own 200", b.status, b.body, b.header.Get("Idempotent-Replayed"))
	}
	if n := fake.Stats().Requests; n != 2 {
		t.Errorf("Ollama got %d requests, want 2", n)
	}
}

// TestIdempotencyKeyNotStoredWhenRetryable: a 429 is not stored, so the
// retry after Retry-After runs and succeeds; nor is a 400 (the client may
// fix the body and resend under the same key).
func TestIdempotencyKeyNotStoredWhenRetryable(t *testing.T) {
	clock := authtest.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), withClock(clock.Now))
	t.Cleanup(fake.Close)
	_, key := ts.newKey(t, auth.Spec{Limits: auth.Limits{RequestsPerSecond: 1, Burst: 1}})
	if r := ts.idem(t, "/generate", generateBody, "warm", "X-API-Key", key); r.status != 200 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	r := ts.idem(t, "/generate", generateBody, "z1", "X-API-Key", key)
	if r.status != 429 {
		t.Fatalf("over the rate: %d %s, want 429", r.status, r.body)
	}
	clock.Advance(2 * time.Second)
	r = ts.idem(t, "/generate", generateBody, "z1", "X-API-Key", key)
	if r.status != 200 || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("retry after the 429: %d %s, want a fresh 200", r.status, r.body)
	}
	clock.Advance(2 * time.Second)
	if r := ts.idem(t, "/generate", `{"model":"chat","promt":"hi"}`, "z2", "X-API-Key", key); r.status != 400 {
		t.Fatalf("typo: %d %s", r.status, r.body)
	}
	if r := ts.idem(t, "/generate", generateBody, "z2", "X-API-Key", key); r.status != 200 {
		t.Errorf("fixed body under the same key: %d %s, want 200", r.status, r.body)
	}
	if n := fake.Stats().Requests; n != 3 {
		t.Errorf("Ollama got %d requests, want 3", n)
	}
}

// TestIdempotencyKeySurvivesRestart: the record is in SQLite, so a second
// server over the same file (a restart, or another instance) replays it.
func TestIdempotencyKeySurvivesRestart(t *testing.T) {
	fake := newFakeOllama(t)
	path := filepath.Join(t.TempDir(), "shared.db")
	ts1 := newTestServer(t, fakeCatalog(fake.URL, "10s"), withDB(path))
	ts2 := newTestServer(t, fakeCatalog(fake.URL, "10s"), withDB(path))
	t.Cleanup(fake.Close)
	first := ts1.idem(t, "/generate", generateBody, "restart")
	second := ts2.idem(t, "/generate", generateBody, "restart", "X-API-Key", ts1.key)
	if first.status != 200 || second.status != 200 || !bytes.Equal(first.body, second.body) || second.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("on the second server: %d %s, want the replay of %s", second.status, second.body, first.body)
	}
	if n := fake.Stats().Requests; n != 1 {
		t.Errorf("Ollama got %d requests, want 1", n)
	}
}

// TestIdempotencyKeyExpires: an answer is replayed for 24 h, then the key
// runs afresh.
func TestIdempotencyKeyExpires(t *testing.T) {
	clock := authtest.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), withClock(clock.Now))
	t.Cleanup(fake.Close)
	first := ts.idem(t, "/generate", generateBody, "day")
	clock.Advance(23 * time.Hour)
	if r := ts.idem(t, "/generate", generateBody, "day"); r.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(r.body, first.body) {
		t.Errorf("after 23 h: %d %s, want the replay", r.status, r.body)
	}
	clock.Advance(2 * time.Hour)
	if r := ts.idem(t, "/generate", generateBody, "day"); r.status != 200 || r.header.Get("Idempotent-Replayed") != "" || bytes.Equal(r.body, first.body) {
		t.Errorf("after 25 h: %d %s replayed %q, want a fresh answer", r.status, r.body, r.header.Get("Idempotent-Replayed"))
	}
	if n := fake.Stats().Requests; n != 2 {
		t.Errorf("Ollama got %d requests, want 2", n)
	}
}

// TestIdempotencyKeyInvalid: an empty, overlong or non-ASCII key is 400
// and nothing runs.
func TestIdempotencyKeyInvalid(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	for _, k := range []string{"", strings.Repeat("k", 256), "two words", "caf\u00e9", "tab\tbed"} {
		ts.doError(t, "POST", "/generate", generateBody, 400, "invalid_request", []string{"Idempotency-Key"}, "Idempotency-Key", k)
	}
	if n := fake.Stats().Requests; n != 0 {
		t.Errorf("Ollama got %d requests, want 0", n)
	}
}

// TestIdempotencyKeyCreatesOneKey: a retried POST /admin/keys creates one
// key and replays its secret (stored sealed, never readable in the
// database).
func TestIdempotencyKeyCreatesOneKey(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	admin := adminKey(t, ts)
	body := map[string]any{"name": "zap"}
	a := ts.idem(t, "/admin/keys", body, "create-1", "X-API-Key", admin)
	b := ts.idem(t, "/admin/keys", body, "create-1", "X-API-Key", admin)
	if a.status != 201 && a.status != 200 {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	if b.status != a.status || !bytes.Equal(a.body, b.body) {
		t.Errorf("retry: %d %s, want %d %s", b.status, b.body, a.status, a.body)
	}
	var list struct {
		Keys []auth.Key `json:"keys"`
	}
	ts.doJSON(t, "GET", "/admin/keys", nil, 200, &list, "X-API-Key", admin)
	n := 0
	for _, k := range list.Keys {
		if k.Name == "zap" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d keys named zap, want 1", n)
	}
}

// A replayed 202 from Prefer: respond-async is the same job: its Location
// and Preference-Applied come back too. And Prefer is part of the request:
// the same Idempotency-Key and body without it is another request (422),
// not a replay of the job's 202 to a caller that asked for the answer.
func TestIdempotencyKeyWithRespondAsync(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	body := `{"model":"chat","prompt":"hi"}`
	var first, again map[string]any
	r1 := ts.doJSON(t, "POST", "/generate", body, http.StatusAccepted, &first, "Prefer", "respond-async", "Idempotency-Key", "job-1")
	r2 := ts.doJSON(t, "POST", "/generate", body, http.StatusAccepted, &again, "Prefer", "respond-async", "Idempotency-Key", "job-1")
	if first["id"] == nil || first["id"] != again["id"] || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: first %v, again %v (replayed %q)", first, again, r2.Header.Get("Idempotent-Replayed"))
	}
	for _, h := range []string{"Location", "Preference-Applied"} {
		if r1.Header.Get(h) == "" || r2.Header.Get(h) != r1.Header.Get(h) {
			t.Errorf("%s: first %q, replay %q", h, r1.Header.Get(h), r2.Header.Get(h))
		}
	}
	ts.doError(t, "POST", "/generate", body, 422, "idempotency_key_reused", nil, "Idempotency-Key", "job-1")
}
