package handlers_test

import (
	"testing"

	"tollgate/handlers"
)

// X-Forwarded-For names the client only when the peer is a trusted proxy;
// otherwise anyone could pick an address and dodge the per-address throttle.
func TestClientAddressAndTrustedProxies(t *testing.T) {
	fake := newFakeOllama(t)
	for _, tc := range []struct {
		name    string
		proxies []string
		want    string
	}{
		{"no proxy trusted", nil, "127.0.0.1"},
		{"loopback proxy trusted", []string{"127.0.0.1/32"}, "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, fakeCatalog(fake.URL, "5s"), withTrustedProxies(tc.proxies...))
			resp := ts.do(t, "GET", "/models", nil, "X-Forwarded-For", "203.0.113.9")
			readAll(t, resp)
			line := ts.accessLogBy(t, "path", "/models")
			if line["client"] != tc.want {
				t.Fatalf("access log client = %v, want %s", line["client"], tc.want)
			}
		})
	}
}

func TestCheckTrustedProxies(t *testing.T) {
	if err := handlers.CheckTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1", "::1"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"proxy.local", "10.0.0.0/33", ""} {
		if err := handlers.CheckTrustedProxies([]string{bad}); err == nil {
			t.Errorf("CheckTrustedProxies(%q) accepted it", bad)
		}
	}
}
