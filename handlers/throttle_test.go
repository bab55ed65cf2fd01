package handlers_test

import (
	"context"
	"net/http"
	"testing"

	"tollgate/auth"
)

// A brute-forcer sharing an address (NAT, an untrusted proxy) with honest
// clients locks out guesses and unused keys, but not a key that was just
// in use, and that key is still checked from the cache alone.
func TestThrottledAddressKeepsRecentKeys(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	_, idle, err := auth.NewKeys(ts.db, nil, nil).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil) // ts.key is now cached
	for i := 0; i < 21; i++ {
		guess, _ := auth.Generate()
		resp := ts.do(t, "GET", "/models", nil, "X-API-Key", guess)
		readAll(t, resp)
	}
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", "tg_garbage")
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", idle)
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil) // the recent key still works
}
