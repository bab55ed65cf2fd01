package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// limitsServer runs tollgate against a fake Ollama with a catalog that has
// plans, and returns it with the fake.
func limitsServer(t *testing.T, fake *ollamatest.Server, extra ...string) *running {
	t.Helper()
	cat := tinyCatalog(fake.URL, "tiny") + `plans:
  tiny: {requests_per_second: 0.001, burst: 2}
  roomy: {requests_per_second: 100, burst: 100, monthly_requests: 3}
`
	return startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", cat)), extra...)
}

type reply struct {
	status int
	header http.Header
	code   string
	body   string
}

func post(t *testing.T, url, key, body string) reply {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct{ Error struct{ Code string } }
	_ = json.Unmarshal(b, &env)
	return reply{resp.StatusCode, resp.Header, env.Error.Code, string(b)}
}

func TestRateLimitPerKeyWithHeaders(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake)
	noisy := createKey(t, r.db, "--name", "noisy", "--rate", "0.5", "--burst", "3", "--tokens-per-minute", "100000")
	quiet := createKey(t, r.db, "--name", "quiet", "--rate", "0.5", "--burst", "3")
	gen := r.url + "/generate"
	for i := 0; i < 3; i++ {
		got := post(t, gen, noisy, `{"prompt":"hi"}`)
		if got.status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, got.status, got.body)
		}
		if want := strconv.Itoa(2 - i); got.header.Get("x-ratelimit-remaining-requests") != want {
			t.Errorf("request %d: x-ratelimit-remaining-requests = %q, want %s", i, got.header.Get("x-ratelimit-remaining-requests"), want)
		}
		for _, h := range []string{"RateLimit-Policy", "RateLimit", "x-ratelimit-limit-requests", "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} {
			if got.header.Get(h) == "" {
				t.Errorf("request %d: no %s header", i, h)
			}
		}
	}
	got := post(t, gen, noisy, `{"prompt":"hi"}`)
	if got.status != 429 || got.code != "rate_limited" {
		t.Fatalf("4th request: %d %s", got.status, got.body)
	}
	// 0.5/s: the next token is at most 2 s away, and Retry-After is whole seconds rounded up.
	if ra, _ := strconv.Atoi(got.header.Get("Retry-After")); ra < 1 || ra > 2 {
		t.Fatalf("Retry-After = %q, want 1 or 2", got.header.Get("Retry-After"))
	}
	if !strings.Contains(got.header.Get("RateLimit-Policy"), `"requests";q=3`) {
		t.Errorf("RateLimit-Policy = %q", got.header.Get("RateLimit-Policy"))
	}
	// The noisy key took nothing from the quiet one.
	for i := 0; i < 3; i++ {
		if got := post(t, gen, quiet, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("quiet key request %d: %d %s", i, got.status, got.body)
		}
	}
}

func TestPlanLimitsAndKeyOverride(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake)
	planKey := createKey(t, r.db, "--name", "plan", "--plan", "tiny", "--catalog", writeFile(t, "c.yaml", tinyCatalog(fake.URL, "tiny")+"plans:\n  tiny: {burst: 2}\n"))
	override := createKey(t, r.db, "--name", "override", "--plan", "tiny", "--burst", "5", "--rate", "0.001",
		"--catalog", writeFile(t, "c2.yaml", tinyCatalog(fake.URL, "tiny")+"plans:\n  tiny: {burst: 2}\n"))
	count := func(key string) int {
		n := 0
		for i := 0; i < 8; i++ {
			if post(t, r.url+"/embed", key, `{"input":"x"}`).status == 200 {
				n++
			}
		}
		return n
	}
	if n := count(planKey); n != 2 {
		t.Errorf("key on plan tiny (burst 2) got %d of 8 through", n)
	}
	if n := count(override); n != 5 {
		t.Errorf("key overriding burst to 5 got %d of 8 through", n)
	}
}

func TestMonthlyQuota402(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake)
	key := createKey(t, r.db, "--name", "metered", "--plan", "roomy", "--catalog", writeFile(t, "c.yaml", tinyCatalog(fake.URL, "tiny")+"plans:\n  roomy: {}\n"))
	for i := 0; i < 3; i++ {
		if got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("request %d of a 3-request quota: %d %s", i, got.status, got.body)
		}
	}
	got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
	if got.status != 402 || got.code != "quota_exceeded" || got.header.Get("x-should-retry") != "false" {
		t.Fatalf("4th request: %d %v %s", got.status, got.header, got.body)
	}
	if !strings.Contains(got.body, "3 requests") || !strings.Contains(got.body, "resets at") {
		t.Fatalf("402 does not say what ran out and when it resets: %s", got.body)
	}
	// The refused request reached no model and is not billed.
	generated := 0
	for _, req := range fake.Requests() {
		if req.Path == "/api/generate" {
			generated++
		}
	}
	if generated != 3 {
		t.Fatalf("Ollama generated %d times, want 3", generated)
	}
	// The quota is remembered across a restart (seeded from the usage table).
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	r2 := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "m.yaml", tinyCatalog(fake.URL, "tiny")+"plans:\n  roomy: {requests_per_second: 100, burst: 100, monthly_requests: 3}\n")), "--db", r.db)
	if got := post(t, r2.url+"/generate", key, `{"prompt":"hi"}`); got.status != 402 {
		t.Fatalf("after a restart: %d %s", got.status, got.body)
	}
}

func TestConcurrencyCapPerKeyAndGlobal(t *testing.T) {
	hold := make(chan struct{})
	fake := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	defer fake.Close()
	r := limitsServer(t, fake, "--max-inflight", "3", "--queue-wait", "50ms")
	one := createKey(t, r.db, "--name", "one", "--max-concurrent", "1")
	other := createKey(t, r.db, "--name", "other")

	var wg sync.WaitGroup
	results := make(chan reply, 4)
	send := func(key string) {
		wg.Add(1)
		go func() { defer wg.Done(); results <- post(t, r.url+"/generate", key, `{"prompt":"hi"}`) }()
	}
	send(one)
	waitFor(t, func() bool { return fake.InFlight() == 1 })
	if got := post(t, r.url+"/generate", one, `{"prompt":"hi"}`); got.status != 429 || got.code != "too_many_concurrent" {
		t.Fatalf("second concurrent request of a max-concurrent-1 key: %d %s", got.status, got.body)
	}
	send(other)
	send(other)
	waitFor(t, func() bool { return fake.InFlight() == 3 })
	// All three global slots are taken: a fourth waits 50 ms, then 503.
	got := post(t, r.url+"/generate", other, `{"prompt":"hi"}`)
	if got.status != 503 || got.code != "overloaded" || got.header.Get("Retry-After") == "" {
		t.Fatalf("beyond the global cap: %d %v %s", got.status, got.header, got.body)
	}
	close(hold)
	wg.Wait()
	close(results)
	for res := range results {
		if res.status != 200 {
			t.Errorf("held request finished with %d %s", res.status, res.body)
		}
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached within 5s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestPlanClampsGPUKnobs(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	cat := tinyCatalog(fake.URL, "tiny") + "plans:\n  small: {max_num_predict: 5, max_num_ctx: 256}\n"
	path := writeFile(t, "models.yaml", cat)
	r := startServe(t, env("TOLLGATE_MODELS", path))
	small := createKey(t, r.db, "--name", "small", "--plan", "small", "--catalog", path)
	big := createKey(t, r.db, "--name", "big")
	for _, tc := range []struct {
		key              string
		wantPredict, ctx int
	}{{small, 5, 256}, {big, 1000, 0}} { // without max_num_ctx in the catalog a request may not raise num_ctx at all
		got := post(t, r.url+"/generate", tc.key, `{"prompt":"hi","options":{"num_predict":1000,"num_ctx":4096}}`)
		if got.status != 200 {
			t.Fatalf("%d %s", got.status, got.body)
		}
		last, ok := fake.LastRequest()
		if !ok {
			t.Fatal("Ollama got no request")
		}
		if n, _ := last.NumPredict(); n != tc.wantPredict {
			t.Errorf("num_predict sent to Ollama = %d, want %d", n, tc.wantPredict)
		}
		if ctx, _ := last.Options["num_ctx"].(float64); int(ctx) != tc.ctx {
			t.Errorf("num_ctx sent to Ollama = %v, want %d", last.Options["num_ctx"], tc.ctx)
		}
	}
}

// An admin raising a key's limits takes effect on its next request.
func TestLimitsChangeWithoutRestart(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake)
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")
	id, key := createKeyWithID(t, r.db, "--name", "slow", "--rate", "0.001", "--burst", "1")
	if got := post(t, r.url+"/embed", key, `{"input":"x"}`); got.status != 200 {
		t.Fatalf("first request: %d %s", got.status, got.body)
	}
	if got := post(t, r.url+"/embed", key, `{"input":"x"}`); got.status != 429 {
		t.Fatalf("second request at burst 1: %d %s", got.status, got.body)
	}
	req, _ := http.NewRequest("PATCH", r.url+"/admin/keys/"+id, strings.NewReader(`{"limits":{"requests_per_second":100,"burst":10}}`))
	req.Header.Set("X-API-Key", admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PATCH limits: %d", resp.StatusCode)
	}
	got := post(t, r.url+"/embed", key, `{"input":"x"}`)
	if got.status != 200 || got.header.Get("x-ratelimit-limit-requests") != "10" {
		t.Fatalf("after raising the limit: %d, limit header %q, %s", got.status, got.header.Get("x-ratelimit-limit-requests"), got.body)
	}
}

// A client trickling its body holds no concurrency or GPU slot while it
// does: the body is read before the limits are taken.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake, "--max-inflight", "1", "--queue-wait", "10ms")
	key := createKey(t, r.db, "--name", "one", "--max-concurrent", "1")
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"inp\r\n", key)
	// Give the trickling request time to pass authentication and start
	// waiting for its body (if it took the slots, the request below gets 429
	// or 503; if it has not got that far, the test passes vacuously).
	time.Sleep(100 * time.Millisecond)
	if got := post(t, r.url+"/embed", key, `{"input":"x"}`); got.status != 200 {
		t.Fatalf("while another request of the key trickles its body: %d %s", got.status, got.body)
	}
	fmt.Fprintf(conn, "8\r\nut\":\"x\"}\r\n0\r\n\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("the trickled request: %q %v", line, err)
	}
}
