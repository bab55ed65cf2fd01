package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tollgate/internal/realollama"
)

// Two real Ollama processes serve the tiny model: the shared test server
// (never stopped here: other tests use it) and a second one each test
// starts, stops and restarts.

// fleetCatalog lists backends as "name=url=max_parallel" in order, all
// serving the model as "tiny".
func fleetCatalog(model string, backends ...string) string {
	var b strings.Builder
	b.WriteString("backends:\n")
	for _, spec := range backends {
		p := strings.SplitN(spec, "=", 3)
		fmt.Fprintf(&b, "  - {name: %s, url: %q, max_parallel: %s, connect_timeout: 1s, first_byte_timeout: 60s}\n", p[0], p[1], p[2])
	}
	fmt.Fprintf(&b, "models:\n  tiny:\n    ollama: %s\n    endpoints: [generate, embed]\n    options: {temperature: 0}\n", model)
	return b.String()
}

type fleetBackend struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	State        string `json:"state"`
	Since        string `json:"since"`
	Why          string `json:"why"`
	LoadedModels []struct {
		Name string `json:"name"`
	} `json:"loaded_models"`
	InFlight int `json:"in_flight"`
	Queued   int `json:"queued"`
	Requests int `json:"requests"`
}

func backendsOf(t *testing.T, r *running, admin string) map[string]fleetBackend {
	t.Helper()
	x := send(t, nil, "GET", r.url+"/admin/backends", "", withKey(admin))
	var out struct {
		Backends []fleetBackend `json:"backends"`
		Queued   int            `json:"queued"`
	}
	wantStatus(t, "GET /admin/backends", x, 200, &out)
	m := map[string]fleetBackend{}
	for _, b := range out.Backends {
		m[b.Name] = b
	}
	return m
}

const tinyGenerate = `{"model":"tiny","prompt":"hi","options":{"num_predict":4}}`

// Under load, the second backend is killed: requests sent from 1 s after
// that all succeed (on the shared one), /admin/backends says it is down and
// why, and once it is back a health check brings it up and it takes
// requests again.
func TestFleetFailoverWhenABackendDies(t *testing.T) {
	url1, model := realollama.Require(t)
	second := realollama.Start(t, model, 2)
	cat := writeFile(t, "models.yaml", fleetCatalog(model, "second="+second.URL+"=2", "shared="+url1+"=2"))
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--health-interval", "200ms", "--eject-cooldown", "500ms", "--queue-wait", "30s")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")
	key := createKey(t, r.db, "--name", "load")

	// Warm the second backend up (load the model) so both take load.
	if x := send(t, nil, "POST", second.URL+"/api/generate", `{"model":"tiny","prompt":"hi","stream":false,"options":{"num_predict":1}}`); x.status != 200 {
		t.Fatalf("warming the second Ollama: %d %s", x.status, x.body)
	}
	type result struct {
		start  time.Time
		status int
		body   string
	}
	var (
		mu      sync.Mutex
		results []result
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				req, _ := http.NewRequest("POST", r.url+"/generate", strings.NewReader(tinyGenerate))
				req.Header.Set("X-API-Key", key)
				resp, err := http.DefaultClient.Do(req)
				res := result{start: start}
				if err != nil {
					res.body = err.Error()
				} else {
					res.status = resp.StatusCode
					buf := make([]byte, 512)
					n, _ := resp.Body.Read(buf)
					res.body = string(buf[:n])
					resp.Body.Close()
				}
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		})
	}
	eventually(t, 30*time.Second, "the second backend takes requests", func() bool {
		return backendsOf(t, r, admin)["second"].Requests >= 3
	})
	killed := time.Now()
	second.Stop()
	time.Sleep(2500 * time.Millisecond)
	eventually(t, 5*time.Second, "/admin/backends shows the second backend down", func() bool {
		b := backendsOf(t, r, admin)["second"]
		return b.State == "down" && b.Why != ""
	})
	b := backendsOf(t, r, admin)
	if s := b["second"]; !strings.Contains(s.Why, "not reachable") && !strings.Contains(s.Why, "broke") {
		t.Errorf("second backend down because %q, want it not reachable", s.Why)
	}
	if b["shared"].State != "up" {
		t.Errorf("shared backend %+v, want up", b["shared"])
	}

	second.Restart(2)
	eventually(t, 10*time.Second, "/admin/backends shows the second backend up again", func() bool {
		return backendsOf(t, r, admin)["second"].State == "up"
	})
	before := backendsOf(t, r, admin)["second"].Requests
	eventually(t, 30*time.Second, "the second backend takes requests again", func() bool {
		return backendsOf(t, r, admin)["second"].Requests > before
	})
	close(stop)
	wg.Wait()

	var after, failedAfter, failedBefore int
	for _, res := range results {
		if !res.start.After(killed.Add(time.Second)) {
			if res.status != 200 {
				failedBefore++
			}
			continue
		}
		after++
		if res.status != 200 {
			failedAfter++
			if failedAfter <= 3 {
				t.Errorf("request sent %s after the kill: %d %s", res.start.Sub(killed).Round(time.Millisecond), res.status, res.body)
			}
		}
	}
	if after < 10 || failedAfter > 0 {
		t.Errorf("%d requests sent from 1 s after the kill, %d failed; want at least 10, none failed", after, failedAfter)
	}
	t.Logf("%d requests in all; %d sent within 1 s of the kill failed (they were on the killed backend)", len(results), failedBefore)
}

// With the model loaded on the shared Ollama only (the second has it
// installed but not loaded), requests go to the shared one although the
// second comes first in the catalog, and the second never loads it.
func TestFleetRoutesToTheBackendWithTheModelLoaded(t *testing.T) {
	url1, model := realollama.Require(t)
	second := realollama.Start(t, model, 2)
	// Make sure the shared server has it loaded (it keeps models loaded).
	if x := send(t, nil, "POST", url1+"/api/generate", `{"model":"tiny","prompt":"hi","stream":false,"options":{"num_predict":1}}`); x.status != 200 {
		t.Fatalf("loading tiny on the shared Ollama: %d %s", x.status, x.body)
	}
	cat := writeFile(t, "models.yaml", fleetCatalog(model, "second="+second.URL+"=4", "shared="+url1+"=4"))
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--health-interval", "200ms")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")
	key := createKey(t, r.db, "--name", "user")
	eventually(t, 10*time.Second, "a health check sees tiny loaded on the shared backend", func() bool {
		for _, m := range backendsOf(t, r, admin)["shared"].LoadedModels {
			if strings.HasPrefix(m.Name, model) {
				return true
			}
		}
		return false
	})
	for i := range 5 {
		if x := send(t, nil, "POST", r.url+"/generate", tinyGenerate, withKey(key)); x.status != 200 {
			t.Fatalf("request %d: %d %s", i, x.status, x.body)
		}
	}
	b := backendsOf(t, r, admin)
	if b["second"].Requests != 0 || b["shared"].Requests != 5 {
		t.Errorf("requests: second %d, shared %d; want 0 and 5", b["second"].Requests, b["shared"].Requests)
	}
	x := send(t, nil, "GET", second.URL+"/api/ps", "")
	var ps struct{ Models []any }
	if err := json.Unmarshal(x.body, &ps); err != nil || len(ps.Models) != 0 {
		t.Errorf("the second Ollama's /api/ps: %s (%v), want no model loaded", x.body, err)
	}
}

// Both backends run one request at a time; key A queues 100 requests, then
// key B 5. B's requests are served in turn with A's (deficit round robin),
// so all five finish among the first few, not after A's hundred.
func TestFleetFairQueueAcrossKeys(t *testing.T) {
	url1, model := realollama.Require(t)
	second := realollama.Start(t, model, 1)
	cat := writeFile(t, "models.yaml", fleetCatalog(model, "second="+second.URL+"=1", "shared="+url1+"=1"))
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--queue-wait", "5m", "--queue-per-key", "200")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")
	keyA := createKey(t, r.db, "--name", "flood")
	keyB := createKey(t, r.db, "--name", "polite")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}

	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
	)
	// Long enough answers that A's hundred cannot drain while they are still
	// being queued, even on a loaded machine.
	const slowGenerate = `{"model":"tiny","prompt":"hi","options":{"num_predict":48}}`
	fire := func(name, key string) {
		wg.Go(func() {
			x := send(t, hc, "POST", r.url+"/generate", slowGenerate, withKey(key))
			mu.Lock()
			defer mu.Unlock()
			if x.status != 200 {
				t.Errorf("%s: %d %s", name, x.status, x.body)
			}
			order = append(order, name)
		})
	}
	queued := func() int {
		x := send(t, nil, "GET", r.url+"/admin/backends", "", withKey(admin))
		var out struct{ Queued int }
		_ = json.Unmarshal(x.body, &out)
		return out.Queued
	}
	for range 100 {
		fire("A", keyA)
	}
	eventually(t, 30*time.Second, "A's requests queue (2 running, the rest waiting)", func() bool { return queued() >= 80 })
	for range 5 {
		fire("B", keyB)
	}
	wg.Wait()
	if len(order) != 105 {
		t.Fatalf("%d requests finished, want 105", len(order))
	}
	last := 0
	for i, k := range order {
		if k == "B" {
			last = i
		}
	}
	// Fair: B's 5 are served every other turn, behind at most the 2 of
	// A's running and the few queued A's may have taken before B arrived.
	if last >= 25 {
		t.Errorf("B's last request finished %d-th of 105 (order %s), want among the first 25", last+1, strings.Join(order, ""))
	}
	t.Logf("order of completion: %s", strings.Join(order, ""))
}

// A reload (POST /admin/reload, and SIGHUP) that adds the second backend
// takes effect without a restart; a broken file is refused with file:line
// and the running catalog stays.
func TestFleetReloadAddsABackend(t *testing.T) {
	url1, model := realollama.Require(t)
	second := realollama.Start(t, model, 2)
	cat := writeFile(t, "models.yaml", fleetCatalog(model, "shared="+url1+"=1"))
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--queue-wait", "60s")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin")
	key := createKey(t, r.db, "--name", "user")
	if b := backendsOf(t, r, admin); len(b) != 1 {
		t.Fatalf("backends before the reload: %v", b)
	}

	// Broken: refused, with where and why; the old catalog stays.
	if err := os.WriteFile(cat, []byte(fleetCatalog(model, "shared="+url1+"=1")+"plans:\n  free: {weight: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	x := send(t, nil, "POST", r.url+"/admin/reload", "", withKey(admin))
	d := wantError(t, "reload of a broken file", x, 422, "catalog_invalid")
	if !strings.Contains(d.Message, "models.yaml:9: plans.free.weight: must be a positive integer") {
		t.Errorf("message %q does not say where and why", d.Message)
	}
	if b := backendsOf(t, r, admin); len(b) != 1 {
		t.Errorf("backends after a broken reload: %v", b)
	}

	// Adds the second backend: running requests keep going, new ones use it.
	if err := os.WriteFile(cat, []byte(fleetCatalog(model, "shared="+url1+"=1", "second="+second.URL+"=2")), 0o644); err != nil {
		t.Fatal(err)
	}
	x = send(t, nil, "POST", r.url+"/admin/reload", "", withKey(admin))
	var sum struct {
		Status   string
		Backends int
	}
	wantStatus(t, "POST /admin/reload", x, 200, &sum)
	if sum.Status != "reloaded" || sum.Backends != 2 {
		t.Errorf("reload answered %s", x.body)
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if x := send(t, nil, "POST", r.url+"/generate", tinyGenerate, withKey(key)); x.status != 200 {
				t.Errorf("after the reload: %d %s", x.status, x.body)
			}
		})
	}
	wg.Wait()
	if b := backendsOf(t, r, admin); b["second"].Requests == 0 {
		t.Errorf("the added backend took no requests: %+v", b)
	}

	// SIGHUP does the same: drop the second backend again.
	if err := os.WriteFile(cat, []byte(fleetCatalog(model, "shared="+url1+"=1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "SIGHUP reloads the catalog", func() bool { return len(backendsOf(t, r, admin)) == 1 })

	// A broken file on SIGHUP: logged with where and why; nothing changes.
	if err := os.WriteFile(cat, []byte("backends:\n  - {url: "+second.URL+", max_parallel: none}\nmodels: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the refused reload logged", func() bool {
		return strings.Contains(r.out.String(), "models.yaml:2: backends[0].max_parallel: must be a positive integer")
	})
	if b := backendsOf(t, r, admin); len(b) != 1 || b["shared"].State != "up" {
		t.Errorf("backends after a broken SIGHUP reload: %v", b)
	}
	if x := send(t, nil, "POST", r.url+"/generate", tinyGenerate, withKey(key)); x.status != 200 {
		t.Errorf("after a broken SIGHUP reload: %d %s", x.status, x.body)
	}
}
