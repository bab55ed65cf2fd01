package handlers_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"tollgate/handlers"
)

// The OpenAPI document is hand-written; these tests keep it honest: every
// route is documented and every documented operation is a route, the
// security it declares is the one the server enforces, errors use the one
// envelope, and every reference resolves. openapi_types_test.go compares its
// schemas with the Go types.

// publicPaths need no key; every other operation needs one.
var publicPaths = []string{"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
	"/dashboard", "/dashboard/app.js", "/dashboard/app.css", "/dashboard/signin"}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type openAPIDoc map[string]any

// fetchOpenAPI gets the document from a running server, without a key.
func fetchOpenAPI(t *testing.T) (*testServer, openAPIDoc) {
	t.Helper()
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	var doc openAPIDoc
	ts.doJSON(t, "GET", "/openapi.json", nil, http.StatusOK, &doc, "X-API-Key", "")
	v, _ := doc["openapi"].(string)
	if !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi = %q, want an OpenAPI 3 document", v)
	}
	return ts, doc
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

// operation is one (method, path) of the document.
type operation struct {
	method, path string
	op           map[string]any
}

func operations(doc openAPIDoc) []operation {
	var out []operation
	for path, item := range obj(doc["paths"]) {
		for _, m := range httpMethods {
			if op := obj(obj(item)[m]); op != nil {
				out = append(out, operation{strings.ToUpper(m), path, op})
			}
		}
	}
	slices.SortFunc(out, func(a, b operation) int { return strings.Compare(a.path+" "+a.method, b.path+" "+b.method) })
	return out
}

// resolveRef follows a local JSON pointer ("#/components/schemas/Key").
func resolveRef(doc openAPIDoc, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	var node any = map[string]any(doc)
	for _, part := range strings.Split(ref[2:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := node.(map[string]any)
		if !ok {
			return nil, false
		}
		if node, ok = m[part]; !ok {
			return nil, false
		}
	}
	return node, true
}

// deref returns v, or what its $ref points to.
func deref(t *testing.T, doc openAPIDoc, v any) map[string]any {
	t.Helper()
	m := obj(v)
	for i := 0; m != nil && m["$ref"] != nil; i++ {
		target, ok := resolveRef(doc, m["$ref"].(string))
		if !ok || i > 10 {
			t.Fatalf("$ref %v does not resolve", m["$ref"])
		}
		m = obj(target)
	}
	return m
}

var ginParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// TestOpenAPICoversEveryRoute: the documented (method, path) pairs are
// exactly the router's. Adding a route without documenting it, or documenting
// one that does not exist, fails here.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	h := handlers.NewServer(handlers.Config{MetricsRoute: true})
	engine, ok := h.(*gin.Engine)
	if !ok {
		t.Fatalf("NewServer returns %T, not *gin.Engine: teach this test to reach the router", h)
	}
	var routes, documented []string
	for _, r := range engine.Routes() {
		routes = append(routes, r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}"))
	}
	for _, op := range operations(doc) {
		documented = append(documented, op.method+" "+op.path)
	}
	slices.Sort(routes)
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in handlers/openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("handlers/openapi.json documents %s, which is not a route", d)
		}
	}
	if len(routes) < 20 {
		t.Errorf("only %d routes found; is the router built with every route? %v", len(routes), routes)
	}
}

// TestOpenAPISecurity: both key schemes are required globally, the public
// operations opt out with an empty list, and the server agrees: without a
// key every secured operation answers 401 with WWW-Authenticate and every
// public one does not.
func TestOpenAPISecurity(t *testing.T) {
	ts, doc := fetchOpenAPI(t)
	schemes := obj(obj(doc["components"])["securitySchemes"])
	var apiKey, bearer string
	for name, s := range schemes {
		s := obj(s)
		switch {
		case s["type"] == "apiKey" && s["in"] == "header" && s["name"] == "X-API-Key":
			apiKey = name
		case s["type"] == "http" && strings.EqualFold(s["scheme"].(string), "bearer"):
			bearer = name
		}
	}
	if apiKey == "" || bearer == "" {
		t.Fatalf("securitySchemes %v: want an apiKey in header X-API-Key and an http bearer scheme", schemes)
	}
	global, _ := doc["security"].([]any)
	var alternatives []string
	for _, req := range global {
		for name := range obj(req) {
			alternatives = append(alternatives, name)
		}
	}
	if !slices.Contains(alternatives, apiKey) || !slices.Contains(alternatives, bearer) {
		t.Errorf("global security %v: want %s and %s as alternatives", global, apiKey, bearer)
	}

	for _, op := range operations(doc) {
		sec, overridden := op.op["security"].([]any)
		public := slices.Contains(publicPaths, op.path)
		switch {
		case public && (!overridden || len(sec) != 0):
			t.Errorf("%s %s is public but does not say security: []", op.method, op.path)
		case !public && overridden:
			t.Errorf("%s %s overrides the global security (%v); only %v may", op.method, op.path, sec, publicPaths)
		}

		path := strings.ReplaceAll(op.path, "{id}", "key_0000000000000000")
		resp := ts.do(t, op.method, path, nil, "X-API-Key", "")
		readAll(t, resp)
		if public {
			if resp.StatusCode == http.StatusUnauthorized {
				t.Errorf("%s %s is documented as public but answers 401 without a key", op.method, op.path)
			}
			if resp.StatusCode == http.StatusNotFound {
				t.Errorf("%s %s: 404", op.method, op.path)
			}
			continue
		}
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s without a key: %s (WWW-Authenticate %q), want 401 with a challenge", op.method, op.path, resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestOpenAPIErrors: every 4xx/5xx response is the shared error envelope
// (/readyz's 503, read by load balancers, is the one exception), 401s carry
// WWW-Authenticate, 429s Retry-After, and every secured operation documents
// 401 and 500, and every one with a body 400 and 413.
func TestOpenAPIErrors(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	envelope := deref(t, doc, map[string]any{"$ref": "#/components/schemas/Error"})
	detail := deref(t, doc, obj(envelope["properties"])["error"])
	for _, f := range []string{"code", "message", "request_id"} {
		if obj(detail["properties"])[f] == nil || !slices.Contains(detail["required"].([]any), any(f)) {
			t.Errorf("the error envelope's error object lacks required field %q", f)
		}
	}
	for _, op := range operations(doc) {
		responses := obj(op.op["responses"])
		if len(responses) == 0 {
			t.Errorf("%s %s documents no responses", op.method, op.path)
		}
		for status, r := range responses {
			if status == "" || status[0] < '4' {
				continue
			}
			where := op.method + " " + op.path + " " + status
			if op.path == "/readyz" && status == "503" {
				continue
			}
			res := deref(t, doc, r)
			content := obj(res["content"])
			if schema := errorSchema(op.path); len(content) != 1 || obj(obj(content["application/json"])["schema"])["$ref"] != schema {
				t.Errorf("%s: content %v, want only application/json with $ref %s", where, content, schema)
			}
			headers := obj(res["headers"])
			if status == "401" && headers["WWW-Authenticate"] == nil {
				t.Errorf("%s: no WWW-Authenticate header", where)
			}
			if (status == "429" || status == "503") && headers["Retry-After"] == nil {
				t.Errorf("%s: no Retry-After header", where)
			}
			if status == "402" && headers["x-should-retry"] == nil {
				t.Errorf("%s: no x-should-retry header", where)
			}
		}
		if slices.Contains(publicPaths, op.path) {
			continue
		}
		want := []string{"401", "429", "500"}
		if op.op["requestBody"] != nil {
			want = append(want, "400", "413")
		}
		if op.path == "/generate" || op.path == "/embed" || op.path == "/predict" ||
			op.path == "/api/generate" || op.path == "/api/chat" || op.path == "/api/embed" || op.path == "/api/embeddings" {
			want = append(want, "402", "403", "404", "502", "503", "504")
		}
		if strings.HasPrefix(op.path, "/admin/") {
			want = append(want, "403")
		}
		for _, s := range want {
			if responses[s] == nil {
				t.Errorf("%s %s does not document %s", op.method, op.path, s)
			}
		}
	}
}

// errorSchema is the error shape of a path's surface: Ollama's under /api,
// the native envelope elsewhere.
func errorSchema(path string) string {
	switch {
	case strings.HasPrefix(path, "/api/"):
		return "#/components/schemas/OllamaError"
	case strings.HasPrefix(path, "/v1/"):
		return "#/components/schemas/OpenAIError"
	}
	return "#/components/schemas/Error"
}

// TestOpenAPILimitHeaders: the inference routes document the rate-limit
// headers on success.
func TestOpenAPILimitHeaders(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	for _, path := range []string{"/generate", "/embed", "/predict"} {
		ok := deref(t, doc, obj(obj(obj(obj(doc["paths"])[path])["post"])["responses"])["200"])
		for _, h := range []string{"RateLimit-Policy", "RateLimit", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
			"x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} {
			if obj(ok["headers"])[h] == nil {
				t.Errorf("POST %s 200 does not document %s", path, h)
			}
		}
	}
	stream := obj(obj(deref(t, doc, obj(obj(obj(obj(doc["paths"])["/generate"])["post"])["responses"])["200"])["content"])["text/event-stream"])
	if ex, _ := stream["example"].(string); !strings.Contains(ex, "data: ") || !strings.Contains(ex, `"done":true`) {
		t.Errorf("POST /generate does not show a text/event-stream example ending in a done event: %v", stream)
	}
}

// TestOpenAPIRefs: every $ref resolves, and every component is used.
func TestOpenAPIRefs(t *testing.T) {
	_, doc := fetchOpenAPI(t)
	used := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, ok := resolveRef(doc, ref); !ok {
					t.Errorf("%s: $ref %q does not resolve", path, ref)
				}
				used[ref] = true
			}
			for k, x := range v {
				walk(path+"/"+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path, x)
			}
		}
	}
	walk("#", map[string]any(doc))
	for kind, set := range obj(doc["components"]) {
		if kind == "securitySchemes" {
			continue // used by name, not by $ref
		}
		for name := range obj(set) {
			if ref := "#/components/" + kind + "/" + name; !used[ref] {
				t.Errorf("%s is never used", ref)
			}
		}
	}
}

// TestDocsPage: /docs is a self-contained HTML page that renders
// /openapi.json and loads nothing from elsewhere.
func TestDocsPage(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	resp := ts.do(t, "GET", "/docs", nil, "X-API-Key", "")
	page := string(readAll(t, resp))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /docs: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
	if !strings.Contains(page, "<script>") || !strings.Contains(page, `fetch("openapi.json"`) {
		t.Errorf("the page does not fetch openapi.json with an inline script")
	}
	external := regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?\s*(https?:)?//|@import|url\(\s*["']?\s*(https?:)?//|fetch\(\s*["'](https?:)?//`)
	if m := external.FindString(page); m != "" {
		t.Errorf("the page loads something from elsewhere: %q", m)
	}
	for _, m := range regexp.MustCompile(`https?://[^\s"'<>)]*`).FindAllString(page, -1) {
		t.Errorf("the page mentions %s: it must work offline", m)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q, want default-src 'none' and connect-src 'self'", csp)
	}
}

// TestOpenAPIServedAsJSON: the document is served as application/json, is
// valid JSON, and needs no key.
func TestOpenAPIServedAsJSON(t *testing.T) {
	ts := newTestServer(t, fakeCatalog("http://127.0.0.1:1", "1s"))
	resp := ts.do(t, "GET", "/openapi.json", nil, "X-API-Key", "")
	data := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if !json.Valid(data) {
		t.Fatal("GET /openapi.json: not valid JSON")
	}
}
