package handlers_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
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

// TestThrottledAddressServesKnownKeys is the figure: a client
// calling once a second beside a guesser on the same address (a NAT, a
// no-code platform's shared egress) was refused from 10 s on, once its
// cache entry went stale, because nothing refreshed it while the address
// was throttled. A key known to be good stays served for as long as it is
// in use; unknown and malformed secrets are still refused; after a day
// without use a key is no longer known.
func TestThrottledAddressServesKnownKeys(t *testing.T) {
	clock := authtest.NewClock(time.Now())
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withClock(clock.Now))
	_, idle, err := auth.NewKeys(ts.db, nil, clock.Now).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil)
	guess := func() {
		g, _ := auth.Generate()
		readAll(t, ts.do(t, "GET", "/models", nil, "X-API-Key", g))
	}
	throttle := func() { // more failures than the burst of 20
		for range 25 {
			guess()
		}
	}
	throttle()
	refused := 0
	for range 60 { // a minute: the guesser keeps going, the client calls once a second
		clock.Advance(time.Second)
		guess()
		guess()
		resp := ts.do(t, "GET", "/models", nil)
		if readAll(t, resp); resp.StatusCode != http.StatusOK {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("the working client was refused %d times in 60 beside a guesser", refused)
	}
	// The address is still throttled for everything not known to be good.
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", idle)
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil, "X-API-Key", "tg_garbage")
	// Known for a day after its last success, while the guesser goes on.
	clock.Advance(23 * time.Hour)
	throttle()
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil)
	clock.Advance(24*time.Hour + time.Minute)
	throttle()
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil)
}

// TestThrottleGroupsIPv6By64: a host holds a whole IPv6 /64 and can send
// each guess from a new address in it, so failures count per /64; a
// neighbouring /64 and IPv4 clients are unaffected.
func TestThrottleGroupsIPv6By64(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withTrustedProxies("127.0.0.1"))
	for i := range 25 {
		g, _ := auth.Generate()
		readAll(t, ts.do(t, "GET", "/models", nil, "X-API-Key", g, "X-Forwarded-For", fmt.Sprintf("2001:db8:1:2::%x", i+1)))
	}
	g, _ := auth.Generate()
	ts.doError(t, "GET", "/models", nil, http.StatusTooManyRequests, "too_many_auth_failures", nil,
		"X-API-Key", g, "X-Forwarded-For", "2001:db8:1:2:ffff:ffff:ffff:ffff")
	ts.doError(t, "GET", "/models", nil, http.StatusUnauthorized, "invalid_api_key", nil,
		"X-API-Key", g, "X-Forwarded-For", "2001:db8:1:3::1")
	ts.doError(t, "GET", "/models", nil, http.StatusUnauthorized, "invalid_api_key", nil,
		"X-API-Key", g, "X-Forwarded-For", "192.0.2.7")
}
