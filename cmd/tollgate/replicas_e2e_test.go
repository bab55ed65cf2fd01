package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/inference/ollamatest"
	"tollgate/internal/redistest"
)

// replicaSet runs n tollgate servers on one SQLite file and one Redis.
func replicaSet(t *testing.T, n int, fake *ollamatest.Server, redisURL string) []*running {
	t.Helper()
	models := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	first := startServe(t, env("TOLLGATE_MODELS", models), "--redis", redisURL, "--replicas", "3")
	out := []*running{first}
	for i := 1; i < n; i++ {
		out = append(out, startServe(t, env("TOLLGATE_MODELS", models), "--db", first.db, "--redis", redisURL, "--replicas", "3"))
	}
	return out
}

// Three replicas behind round-robin share a 20-request monthly quota:
// exactly 20 are answered (and billed), however the requests are spread.
func TestReplicasShareMonthlyQuota(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	rs := replicaSet(t, 3, fake, url)
	key := createKey(t, rs[0].db, "--name", "shared", "--monthly-requests", "20")
	hammerQuota(t, rs, key)
	if rows := exportUsage(t, rs[0].db); len(rows) != 20 {
		t.Fatalf("%d usage rows, want 20", len(rows))
	}
	wantNoRequestsLeft(t, rs, key)
}

// hammerQuota sends 60 requests for key, round-robin over rs from 6
// goroutines, and requires exactly 20 answered and 40 refused as quota
// exceeded: the key's monthly_requests of 20, held across the replicas.
func hammerQuota(t *testing.T, rs []*running, key string) {
	t.Helper()
	var ok, refused, next atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 10 {
				r := rs[next.Add(1)%int64(len(rs))]
				got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
				switch {
				case got.status == 200:
					ok.Add(1)
				case got.status == 402 && got.code == "quota_exceeded":
					refused.Add(1)
				default:
					t.Errorf("unexpected answer %d %s", got.status, got.body)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 20 || refused.Load() != 40 {
		t.Fatalf("answered %d and refused %d of 60, want exactly 20 and 40", ok.Load(), refused.Load())
	}
}

// wantNoRequestsLeft requires every replica's /usage to say key has no
// request left, not just its own share.
func wantNoRequestsLeft(t *testing.T, rs []*running, key string) {
	t.Helper()
	for i, r := range rs {
		x := send(t, http.DefaultClient, "GET", r.url+"/usage", "", withKey(key))
		var u struct {
			Quota struct {
				RemainingRequests *int64 `json:"remaining_requests"`
			} `json:"quota"`
		}
		wantStatus(t, "GET /usage", x, 200, &u)
		if u.Quota.RemainingRequests == nil || *u.Quota.RemainingRequests != 0 {
			t.Errorf("replica %d: /usage quota %+v, want remaining_requests 0", i, u.Quota)
		}
	}
}

// A key revoked through the CLI (with --redis) stops working on every
// replica within a second, though each has it cached.
func TestReplicasSeeRevocationWithinASecond(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	rs := replicaSet(t, 3, fake, url)
	id, key := createKeyWithID(t, rs[0].db, "--name", "leaving")
	for _, r := range rs { // cache it everywhere
		if got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("before revocation: %d %s", got.status, got.body)
		}
	}
	time.Sleep(200 * time.Millisecond) // the subscriptions are up
	cli(t, "keys", "revoke", id, "--db", rs[0].db, "--redis", url)
	start := time.Now()
	for i, r := range rs {
		for {
			got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
			if got.status == 401 {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("replica %d still answers the revoked key after %v: %d", i, time.Since(start), got.status)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("revoked on all 3 replicas within %v", time.Since(start))
}

// Redis unreachable: the replica serves with its share of the limits,
// /readyz says degraded and why, and the metric says 1.
func TestReplicaWithRedisDownIsDegraded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "redis://" + ln.Addr().String() + "/0"
	_ = ln.Close()
	fake := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	defer fake.Close()
	r := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))),
		"--redis", dead, "--replicas", "3")
	key := createKey(t, r.db, "--name", "k", "--rate", "0.01", "--burst", "6")
	answered := 0
	for i := 0; i < 6; i++ {
		got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
		if got.status == 200 {
			answered++
		} else if got.status != 429 {
			t.Fatalf("request %d: %d %s", i, got.status, got.body)
		}
	}
	if answered != 2 {
		t.Fatalf("burst 6 on one of 3 replicas answered %d, want 2", answered)
	}
	resp, err := http.Get(r.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"degraded"`) || !strings.Contains(string(body), "Redis is not reachable") {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), dead) {
		t.Logf("note: /readyz names the Redis address: %s", body)
	}
	if metric(t, r.url, "tollgate_limits_degraded") != 1 {
		t.Fatalf("/metrics has no tollgate_limits_degraded 1")
	}
}

// A client guessing keys through all replicas is throttled as one node
// would throttle it: 21 guesses spread over 3 replicas lock it out of all.
func TestReplicasShareAuthFailureThrottle(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	rs := replicaSet(t, 3, fake, url)
	// other tests' guesses come from 127.0.0.1 too: start from a clean slate
	opts, _ := redis.ParseURL(url)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	_ = rdb.Del(context.Background(), "tollgate:authfail:127.0.0.1").Err()
	t.Cleanup(func() { _ = rdb.Del(context.Background(), "tollgate:authfail:127.0.0.1").Err() })
	for i := 0; i < 21; i++ {
		got := post(t, rs[i%3].url+"/generate", "tg_garbage", `{"prompt":"hi"}`)
		if got.status != 401 && got.status != 429 {
			t.Fatalf("guess %d: %d %s", i, got.status, got.body)
		}
	}
	for i, r := range rs {
		if got := post(t, r.url+"/generate", "tg_garbage", `{"prompt":"hi"}`); got.status != 429 || got.code != "too_many_auth_failures" {
			t.Fatalf("replica %d after 21 guesses spread over 3: %d %s", i, got.status, got.body)
		}
	}
}

// max_concurrent 5 across three replicas: 5 requests held in flight,
// spread over all three, and a sixth on any replica is refused; when they
// finish, the slots are free again everywhere.
func TestReplicasShareConcurrency(t *testing.T) {
	url := redistest.URL(t)
	hold := make(chan struct{})
	fake := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	defer fake.Close()
	rs := replicaSet(t, 3, fake, url)
	key := createKey(t, rs[0].db, "--name", "five", "--max-concurrent", "5")
	var wg sync.WaitGroup
	results := make(chan reply, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(r *running) { defer wg.Done(); results <- post(t, r.url+"/generate", key, `{"prompt":"hi"}`) }(rs[i%3])
		waitFor(t, func() bool { return fake.InFlight() == int64(i+1) })
	}
	for i, r := range rs {
		if got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`); got.status != 429 || got.code != "too_many_concurrent" {
			t.Fatalf("6th in flight, on replica %d: %d %s", i, got.status, got.body)
		}
	}
	close(hold)
	wg.Wait()
	close(results)
	for res := range results {
		if res.status != 200 {
			t.Errorf("held request finished with %d %s", res.status, res.body)
		}
	}
	for i, r := range rs {
		if got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("after the 5 finished, replica %d: %d %s", i, got.status, got.body)
		}
	}
}

// With --redis the rate-limit headers and Retry-After are what one
// instance gives.
func TestRedisRateLimitHeaders(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	r := limitsServer(t, fake, "--redis", url)
	key := createKey(t, r.db, "--name", "noisy", "--rate", "0.5", "--burst", "3", "--tokens-per-minute", "100000")
	for i := 0; i < 3; i++ {
		got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
		if got.status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, got.status, got.body)
		}
		if want := strconv.Itoa(2 - i); got.header.Get("x-ratelimit-remaining-requests") != want {
			t.Errorf("request %d: x-ratelimit-remaining-requests = %q, want %s", i, got.header.Get("x-ratelimit-remaining-requests"), want)
		}
		if got.header.Get("x-ratelimit-remaining-tokens") == "" || got.header.Get("RateLimit") == "" {
			t.Errorf("request %d: no token or RateLimit header: %v", i, got.header)
		}
	}
	got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
	if got.status != 429 || got.code != "rate_limited" {
		t.Fatalf("4th request: %d %s", got.status, got.body)
	}
	if ra, _ := strconv.Atoi(got.header.Get("Retry-After")); ra < 1 || ra > 2 {
		t.Fatalf("Retry-After = %q, want 1 or 2", got.header.Get("Retry-After"))
	}
}

// A replica killed (SIGKILL) while holding a key's 5 concurrency slots:
// the other replica refuses the key until the dead one's slots expire
// (--slot-ttl 2s), then serves it again.
func TestKilledReplicaFreesItsSlots(t *testing.T) {
	url := redistest.URL(t)
	hold := make(chan struct{})
	fake := ollamatest.NewServer(ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	defer fake.Close()
	db := filepath.Join(t.TempDir(), "t.db")
	doomed := startBinaryOn(t, fake, db, "--redis", url, "--replicas", "2", "--slot-ttl", "2s", "--max-inflight", "8")
	key := createKey(t, db, "--name", "five", "--max-concurrent", "5")
	for i := 0; i < 5; i++ {
		go func() { // cut by the kill: no answer expected
			req, _ := http.NewRequest("POST", doomed.url+"/generate", strings.NewReader(`{"prompt":"hi"}`))
			req.Header.Set("X-API-Key", key)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitFor(t, func() bool { return fake.InFlight() == 5 })
	survivor := startServe(t, env("TOLLGATE_MODELS", writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))),
		"--db", db, "--redis", url, "--replicas", "2", "--slot-ttl", "2s")
	if got := post(t, survivor.url+"/generate", key, `{"prompt":"hi"}`); got.status != 429 || got.code != "too_many_concurrent" {
		t.Fatalf("6th in flight: %d %s", got.status, got.body)
	}
	if err := doomed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = doomed.wait(t, 10*time.Second)
	killed := time.Now()
	close(hold)
	for {
		got := post(t, survivor.url+"/generate", key, `{"prompt":"hi"}`)
		if got.status == 200 {
			// renewed every 2/3 s until the kill: they cannot expire sooner
			if d := time.Since(killed); d < time.Second {
				t.Fatalf("the killed replica's slots were free %v after the kill, before they could expire", d)
			}
			break
		}
		if got.code != "too_many_concurrent" {
			t.Fatalf("after the kill: %d %s", got.status, got.body)
		}
		if time.Since(killed) > 4*time.Second {
			t.Fatalf("the killed replica's slots still held %v after the kill (--slot-ttl 2s)", time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the killed replica's slots were free %v after the kill (--slot-ttl 2s)", time.Since(killed))
}

// An Idempotency-Key retried on another replica replays the first answer:
// the claim lives in the shared database.
func TestReplicasShareIdempotencyKeys(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	rs := replicaSet(t, 2, fake, url)
	key := createKey(t, rs[0].db, "--name", "retrier")
	first := send(t, http.DefaultClient, "POST", rs[0].url+"/generate", `{"prompt":"hi"}`, withKey(key), withHeader("Idempotency-Key", "task-1"))
	again := send(t, http.DefaultClient, "POST", rs[1].url+"/generate", `{"prompt":"hi"}`, withKey(key), withHeader("Idempotency-Key", "task-1"))
	if first.status != 200 || again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
		t.Fatalf("retry on the other replica: %d %v %s, first %d %s", again.status, again.header, again.body, first.status, first.body)
	}
	if rows := exportUsage(t, rs[0].db); len(rows) != 1 {
		t.Fatalf("%d usage rows, want 1", len(rows))
	}
}

// An account's budget and request quota, and a key's own budget, are
// shared by every key of the account and every replica: 48 clients over
// three replicas and two keys are answered exactly as often as the budgets
// pay for, never more, and every replica's /usage says the account's
// budget is spent. Each request costs exactly what it reserves (2 prompt
// tokens at 1 per 1k, 10 output tokens at 2 per 1k: 0.022), so the
// count is exact in every interleaving.
func TestReplicasShareAccountBudgetAndQuota(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer(ollamatest.WithModels("tiny"), tenTokens())
	defer fake.Close()
	models := writeFile(t, "models.yaml", exactCatalog(fake.URL, "tiny", 1, 10))
	first := startServe(t, env("TOLLGATE_MODELS", models), "--redis", url, "--replicas", "3")
	rs := []*running{first}
	for range 2 {
		rs = append(rs, startServe(t, env("TOLLGATE_MODELS", models), "--db", first.db, "--redis", url, "--replicas", "3"))
	}
	var a struct{ ID string }
	// 20 requests' worth of budget; the request quota (25) does not bind
	if err := json.Unmarshal([]byte(cli(t, "accounts", "create", "--name", "Acme", "--monthly-budget", "0.44",
		"--monthly-requests", "25", "--json", "--db", first.db)), &a); err != nil {
		t.Fatal(err)
	}
	k1 := createKey(t, first.db, "--name", "acme-1", "--account", a.ID)
	k2 := createKey(t, first.db, "--name", "acme-2", "--account", a.ID, "--monthly-budget", "0.11") // 5 requests
	keys := []string{k1, k2}
	tr := &http.Transport{MaxIdleConnsPerHost: 48}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		mu       sync.Mutex
		answered = map[string]int{}
		finals   = map[string]int{}
		wg       sync.WaitGroup
	)
	for c := range 48 {
		wg.Go(func() {
			key := keys[c%2]
			for i := range maxPerClient {
				o := postOutcome(hc, rs[(c/2+i)%3].url+"/generate", key, `{"prompt":"h"}`)
				mu.Lock()
				switch {
				case o.err != nil || (o.status != 200 && o.status != 402):
					t.Errorf("client %d: %d %s %v", c, o.status, o.code, o.err)
				case o.status == 200:
					answered[key]++
				case !retryable(o):
					finals[o.code]++
				}
				mu.Unlock()
				if o.err != nil || (o.status != 200 && !retryable(o)) {
					return
				}
			}
			t.Errorf("client %d was never refused", c)
		})
	}
	wg.Wait()
	t.Logf("final refusals %v", finals)
	if total := answered[k1] + answered[k2]; total != 20 || answered[k2] > 5 {
		t.Fatalf("answered %d for acme-1 and %d for acme-2 (%d), want 20 in all (the account's budget) and at most 5 for acme-2 (its own)",
			answered[k1], answered[k2], total)
	}
	if finals["budget_exceeded"] != 48 {
		t.Errorf("final refusals %v, want 48 budget_exceeded", finals)
	}
	n, _, cost := billedTotals(exportUsage(t, first.db))
	if n != 20 || cost != 440_000 {
		t.Fatalf("billed %d requests costing %d micro-units, want 20 and 440000", n, cost)
	}
	for i, r := range rs {
		var u struct {
			Account struct {
				Quota struct {
					RemainingBudget   string `json:"remaining_budget"`
					RemainingRequests *int64 `json:"remaining_requests"`
				} `json:"quota"`
			} `json:"account"`
		}
		wantStatus(t, "GET /usage", send(t, nil, "GET", r.url+"/usage", "", withKey(k1)), 200, &u)
		if q := u.Account.Quota; q.RemainingBudget != "0.000000" || q.RemainingRequests == nil || *q.RemainingRequests != 5 {
			t.Errorf("replica %d: the account's /usage quota %+v, want remaining_budget 0.000000 and 5 requests left", i, q)
		}
	}
	t.Logf("acme-1 answered %d, acme-2 %d", answered[k1], answered[k2])
}
