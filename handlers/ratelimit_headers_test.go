package handlers_test

import (
	"net/http"
	"testing"
	"time"

	"tollgate/auth"
)

// TestRateLimitHeadersWithoutBurst: the request policy states the bucket's
// size (the key's burst, or its rate rounded up, at least 1) and the window
// that size refills in, not what is left of it: after one request a key at
// 0.5/s without a burst still has a policy of 1 request per 2 s.
func TestRateLimitHeadersWithoutBurst(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		rate                 float64
		policy, limit, reset string
	}{
		{0.5, `"requests";q=1;w=2`, "1", "2s"},
		{2, `"requests";q=2;w=1`, "2", "500ms"},
		{0.001, `"requests";q=1;w=1000`, "1", "16m40s"},
	} {
		_, key := ts.newKey(t, auth.Spec{Limits: auth.Limits{RequestsPerSecond: tc.rate}})
		resp := ts.do(t, "POST", "/generate", generateBody, "X-API-Key", key)
		readAll(t, resp)
		h := resp.Header
		if h.Get("RateLimit-Policy") != tc.policy || h.Get("x-ratelimit-limit-requests") != tc.limit {
			t.Errorf("rate %g: RateLimit-Policy %q, x-ratelimit-limit-requests %q; want %q, %s",
				tc.rate, h.Get("RateLimit-Policy"), h.Get("x-ratelimit-limit-requests"), tc.policy, tc.limit)
		}
		want, _ := time.ParseDuration(tc.reset)
		if d, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests")); err != nil || d <= 0 || d > want {
			t.Errorf("rate %g: x-ratelimit-reset-requests %q, want at most %s", tc.rate, h.Get("x-ratelimit-reset-requests"), tc.reset)
		}
	}

	// A burst that takes longer to refill than anything can say saturates
	// at about 292 years rather than wrapping round to "1 s".
	_, key := ts.newKey(t, auth.Spec{Limits: auth.Limits{RequestsPerSecond: 0.001, Burst: 1 << 62}})
	resp := ts.do(t, "POST", "/generate", generateBody, "X-API-Key", key)
	readAll(t, resp)
	if got, want := resp.Header.Get("RateLimit-Policy"), `"requests";q=4611686018427387904;w=9223372036`; got != want {
		t.Errorf("RateLimit-Policy %q, want %q", got, want)
	}

	// A rate below one request per 1000 s is refused when the key is made.
	ts.doError(t, "POST", "/admin/keys", map[string]any{"name": "slow", "limits": map[string]any{"requests_per_second": 0.0001}},
		http.StatusBadRequest, "invalid_request", []string{"limits.requests_per_second", "at least 0.001"}, "X-API-Key", adminKey(t, ts))
}

func adminKey(t *testing.T, ts *testServer) string {
	t.Helper()
	_, k := ts.newKey(t, auth.Spec{Scopes: []auth.Scope{auth.ScopeAdmin}})
	return k
}
