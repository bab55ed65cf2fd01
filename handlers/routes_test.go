package handlers_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
