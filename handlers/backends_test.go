package handlers_test

import (
	"fmt"
	"strings"
	"testing"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
)

// Two backends, one refusing connections (and preferred, by its weight):
// requests fail over to the other,
// GET /admin/backends (admin scope only) shows the refusing one down and
// why, /readyz is degraded and names it, and /metrics has a series per
// backend.
func TestAdminBackendsAfterFailover(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithModels("llama3.2:3b", "nomic-embed-text"))
	refused := ollamatest.RefusedURL(t)
	fake.SetLoaded("llama3.2:3b")
	ts := newTestServer(t, fmt.Sprintf(`
backends:
  - {name: gone, url: %s, max_parallel: 2, weight: 5}
  - {name: gpu1, url: %s, max_parallel: 3, weight: 2}
models:
  chat: {ollama: llama3.2:3b, endpoints: [generate]}
`, refused, fake.URL))
	t.Cleanup(fake.Close)
	for range 3 {
		if resp := ts.do(t, "POST", "/generate", `{"model":"chat","prompt":"hi"}`); resp.StatusCode != 200 {
			t.Fatalf("generate with one backend gone: %d %s", resp.StatusCode, readAll(t, resp))
		}
	}
	ts.doError(t, "GET", "/admin/backends", nil, 403, "insufficient_scope", nil)
	_, admin := ts.newKey(t, auth.Spec{Scopes: []auth.Scope{auth.ScopeAdmin}})
	var list struct {
		Backends []struct {
			Name, URL, State, Since, Why string
			LoadedModels                 []struct{ Name, Until string } `json:"loaded_models"`
			InFlight                     int                            `json:"in_flight"`
			MaxParallel                  int                            `json:"max_parallel"`
			Weight, Queued               int
			Requests, Failures           int
			Ejections                    int
		}
		Queued int
	}
	ts.doJSON(t, "GET", "/admin/backends", nil, 200, &list, "X-API-Key", admin)
	if len(list.Backends) != 2 {
		t.Fatalf("backends: %+v", list)
	}
	gone, gpu1 := list.Backends[0], list.Backends[1]
	if gone.Name != "gone" || gone.URL != refused || gone.State != "down" || gone.Since == "" ||
		gone.Why != "Ollama at "+refused+" is not reachable" || gone.Failures != 1 || gone.Ejections != 1 || gone.Requests != 1 || gone.MaxParallel != 2 || gone.Weight != 5 {
		t.Errorf("gone: %+v", gone)
	}
	if gpu1.State != "up" || gpu1.Why != "" || gpu1.Requests != 3 || gpu1.InFlight != 0 || gpu1.MaxParallel != 3 || gpu1.Weight != 2 ||
		len(gpu1.LoadedModels) != 1 || gpu1.LoadedModels[0].Name != "llama3.2:3b" {
		t.Errorf("gpu1: %+v", gpu1)
	}

	var ready struct {
		Status, Ollama string
		Backends       []struct{ Name, State, Why string }
	}
	ts.doJSON(t, "GET", "/readyz", nil, 200, &ready, "X-API-Key", "")
	if ready.Status != "degraded" || !strings.Contains(ready.Ollama, "1 of 2 Ollama backends do not answer (Ollama at "+refused+" is not reachable)") ||
		len(ready.Backends) != 2 || ready.Backends[0].State != "down" || ready.Backends[1].State != "up" {
		t.Errorf("readyz: %+v", ready)
	}

	body := string(readAll(t, ts.do(t, "GET", "/metrics", nil, "X-API-Key", "")))
	for _, want := range []string{
		`tollgate_backend_up{backend="gone"} 0`,
		`tollgate_backend_up{backend="gpu1"} 1`,
		`tollgate_backend_requests_total{backend="gpu1"} 3`,
		`tollgate_backend_failures_total{backend="gone"} 1`,
		`tollgate_backend_ejections_total{backend="gone"} 1`,
		`tollgate_backend_max_parallel{backend="gpu1"} 3`,
		`tollgate_backend_inflight_requests{backend="gpu1"} 0`,
		`tollgate_backend_queued_requests{backend="gpu1"} 0`,
		`tollgate_queued_requests 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// This server was built without a reloader.
	ts.doError(t, "POST", "/admin/reload", nil, 404, "not_found", nil, "X-API-Key", admin)
}
