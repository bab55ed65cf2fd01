package handlers_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"tollgate/auth"
)

// TestTrailingSlash: a route's path with a trailing slash is a 404 in the
// envelope that names the route, never Gin's redirect (a 301 with an HTML
// body for GET, a 307 with none for POST), for GET and POST alike.
func TestTrailingSlash(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	noFollow := *ts.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tc := range []struct{ method, path, route string }{
		{"GET", "/models/", "/models"},
		{"GET", "/usage//", "/usage"},
		{"POST", "/generate/", "/generate"},
		{"POST", "/embed/", "/embed"},
		{"GET", "/admin/keys/key_0000000000000000/", "/admin/keys/key_0000000000000000"},
		{"GET", "/docs/", "/docs"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var body io.Reader
			if tc.method == "POST" {
				body = strings.NewReader(generateBody)
			}
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, ts.URL+tc.path, body)
			req.Header.Set("X-API-Key", ts.key)
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw := readAll(t, resp)
			if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("%s %s: %s (Location %q, Content-Type %q): %s; want 404 in the envelope",
					tc.method, tc.path, resp.Status, resp.Header.Get("Location"), resp.Header.Get("Content-Type"), raw)
			}
			checkEnvelope(t, raw, "not_found", tc.method+" "+tc.path, "no trailing slash", "use "+tc.route)
		})
	}
	// A path that is no route with or without the slash keeps the general
	// message.
	ts.doError(t, "GET", "/nope/", nil, http.StatusNotFound, "not_found", []string{"no route GET /nope/ (see GET /models"})
}

// TestRoot: GET / points to the reference, as JSON, without a key.
func TestRoot(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	var root map[string]string
	ts.doJSON(t, "GET", "/", nil, http.StatusOK, &root, "X-API-Key", "")
	if root["docs"] != "/docs" || root["openapi"] != "/openapi.json" || root["service"] != "tollgate" {
		t.Errorf("GET / = %v, want pointers to /docs and /openapi.json", root)
	}
}

// plansCatalog is fakeCatalog with a plan that lowers the output cap, and a
// generate-only model.
func plansCatalog(url string) string {
	return strings.Replace(fakeCatalog(url, "10s"), "tasks:", `  writer:
    ollama: llama3.2:3b
    endpoints: [generate]
    limits: {max_num_predict: 4096}
plans:
  small: {max_num_predict: 16}
  roomy: {max_num_predict: 100000}
tasks:`, 1)
}

// TestModelsShowPlanCaps: /models reports the caps the caller's key gets
// (the model's, lowered by its plan), an output cap only for models that
// write text and an input count only for those that take arrays; a key
// whose plan has left the catalog gets plan_not_found, as its calls do.
func TestModelsShowPlanCaps(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, plansCatalog(fake.URL))
	type model struct {
		Name      string
		MaxOutput *int `json:"max_output_tokens"`
		MaxInputs *int `json:"max_inputs"`
	}
	caps := func(key string) map[string][2]int {
		var raw json.RawMessage
		ts.doJSON(t, "GET", "/models", nil, http.StatusOK, &raw, "X-API-Key", key)
		var out struct{ Models []model }
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		got := map[string][2]int{}
		for _, m := range out.Models {
			var c [2]int
			for i, p := range []*int{m.MaxOutput, m.MaxInputs} {
				c[i] = -1 // absent
				if p != nil {
					c[i] = *p
				}
			}
			got[m.Name] = c
		}
		return got
	}
	for _, tc := range []struct {
		plan string
		want map[string][2]int // max_output_tokens, max_inputs; -1: absent
	}{
		{"", map[string][2]int{"chat": {64, 3}, "embedder": {-1, 3}, "writer": {4096, -1}}},
		{"small", map[string][2]int{"chat": {16, 3}, "embedder": {-1, 3}, "writer": {16, -1}}},
		{"roomy", map[string][2]int{"chat": {64, 3}, "embedder": {-1, 3}, "writer": {4096, -1}}},
	} {
		_, key := ts.newKey(t, auth.Spec{Plan: tc.plan})
		if got := caps(key); !equalCaps(got, tc.want) {
			t.Errorf("plan %q: caps %v, want %v", tc.plan, got, tc.want)
		}
	}

	// What /models promises is what a call gets: the small plan's 16.
	_, key := ts.newKey(t, auth.Spec{Plan: "small"})
	ts.doJSON(t, "POST", "/generate", `{"model":"writer","prompt":"hi","options":{"num_predict":1000}}`, http.StatusOK, nil, "X-API-Key", key)
	if n, _ := lastRequest(t, fake).NumPredict(); n != 16 {
		t.Errorf("num_predict sent to Ollama %d, want the plan's 16", n)
	}

	_, gone := ts.newKey(t, auth.Spec{Plan: "gone"})
	ts.doError(t, "GET", "/models", nil, http.StatusForbidden, "plan_not_found", []string{`"gone"`}, "X-API-Key", gone)
}

func equalCaps(a, b map[string][2]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
