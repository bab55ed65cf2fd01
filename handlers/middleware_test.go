package handlers_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"tollgate/gateway"
	"tollgate/inference"
)

// TestGinErrors: Gin's own 404 and 405 come in the envelope too.
func TestGinErrors(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
		msgs         []string
	}{
		{"GET", "/nope", 404, "not_found", "", []string{"GET /nope"}},
		{"POST", "/generat", 404, "not_found", "", []string{"POST /generat"}},
		{"GET", "/generate", 405, "method_not_allowed", "POST", []string{"GET", "/generate", "POST"}},
		{"DELETE", "/models", 405, "method_not_allowed", "GET", []string{"DELETE", "/models", "GET"}},
		{"PUT", "/readyz", 405, "method_not_allowed", "GET", []string{"PUT", "/readyz"}},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, _ := ts.doError(t, tc.method, tc.path, nil, tc.status, tc.code, tc.msgs)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
}

// TestRequestID: a sane incoming X-Request-ID is echoed; anything else is
// replaced by Tollgate's own. Bodies always carry Tollgate's own id.
func TestRequestID(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		name, in string
		echoed   bool
	}{
		{"sane", "trace-42.a_b:C", true},
		{"longest sane", strings.Repeat("a", 128), true},
		{"too long", strings.Repeat("a", 129), false},
		{"shaped like an API key", "tg_0123456789abcdefABCDEF0123456789abcdef", false},
		{"space", "trace 42", false},
		{"tab", "trace\t42", false},
		{"slash", "../../etc", false},
		{"not ASCII", "trace-é", false},
		{"log injection", `x" status=200 "`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gen generateResponse
			resp := ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, &gen, "X-Request-ID", tc.in)
			got := resp.Header.Get("X-Request-ID")
			if tc.echoed && got != tc.in {
				t.Errorf("X-Request-ID %q, want %q echoed", got, tc.in)
			}
			if !tc.echoed && (got == tc.in || !strings.HasPrefix(got, "req_")) {
				t.Errorf("X-Request-ID %q, want a fresh req_... in place of %q", got, tc.in)
			}
			if !strings.HasPrefix(gen.ID, "req_") {
				t.Errorf("body id %q, want Tollgate's own", gen.ID)
			}
			line := ts.accessLog(t, gen.ID)
			if tc.echoed && line["client_request_id"] != tc.in {
				t.Errorf("access log client_request_id %v, want %q", line["client_request_id"], tc.in)
			}
			if !tc.echoed && line["client_request_id"] != nil {
				t.Errorf("access log keeps an insane client id: %v", line["client_request_id"])
			}
		})
	}

	// An error carries the id too.
	resp, e := ts.doError(t, "POST", "/generate", `{`, 400, "invalid_request", nil, "X-Request-ID", "trace-43")
	if resp.Header.Get("X-Request-ID") != "trace-43" || e.RequestID == "" {
		t.Errorf("X-Request-ID %q, request_id %q", resp.Header.Get("X-Request-ID"), e.RequestID)
	}
}

// TestBodyLimit: a body over MaxBodyBytes is a 413, whether its size is
// announced or not.
func TestBodyLimit(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), withMaxBody(256))
	big := `{"model":"chat","prompt":"` + strings.Repeat("x", 300) + `"}`
	for _, tc := range []struct {
		name string
		body any
	}{
		{"Content-Length", big},
		{"chunked", strings.NewReader(big)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.doError(t, "POST", "/generate", tc.body, http.StatusRequestEntityTooLarge, "body_too_large", []string{"256 bytes"})
		})
	}
	t.Run("under the limit", func(t *testing.T) {
		ts.doJSON(t, "POST", "/generate", strings.NewReader(generateBody), http.StatusOK, nil)
	})
	if n := fake.Stats().Requests; n != 1 {
		t.Errorf("the fake Ollama got %d requests, want 1", n)
	}
}

// TestAccessLog: one JSON line per request, never with the query string.
// A key in the query is refused (401) and must not reach the log either.
func TestAccessLog(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	const key, private = "tg_secret123", "private-note-123"
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		route, model string
	}{
		{"GET", "/models?api_key=" + key, nil, 401, "/models", ""},
		{"POST", "/generate?key=" + key, generateBody, 401, "/generate", ""},
		{"GET", "/models?note=" + private, nil, 200, "/models", ""},
		{"POST", "/generate?note=" + private, generateBody, 200, "/generate", "chat"},
		{"POST", "/embed?note=" + private, `{"model":"embedder","input":""}`, 400, "/embed", ""},
		{"GET", "/nope?api_key=" + key, nil, 404, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp := ts.do(t, tc.method, tc.path, tc.body)
			body := string(readAll(t, resp))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if strings.Contains(body, key) || strings.Contains(body, private) {
				t.Errorf("the response repeats the query string: %s", body)
			}
			line := ts.accessLog(t, resp.Header.Get("X-Request-ID"))
			path, _, _ := strings.Cut(tc.path, "?")
			for k, want := range map[string]any{"status": float64(tc.status), "route": tc.route, "path": path, "method": tc.method, "level": "INFO"} {
				if line[k] != want {
					t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], want, line)
				}
			}
			if tc.model != "" && (line["model"] != tc.model || line["prompt_tokens"] == nil || line["key_id"] == nil) {
				t.Errorf("access log lacks the model, usage or key id: %v", line)
			}
			if _, ok := line["latency_ms"].(float64); !ok {
				t.Errorf("access log lacks latency_ms: %v", line)
			}
		})
	}
	if log := ts.logs.String(); strings.Contains(log, key) || strings.Contains(log, private) || strings.Contains(log, ts.key) {
		t.Errorf("the log holds a query string or the key:\n%s", log)
	}
}

// panicky is an inference client whose Generate panics.
type panicky struct{ gateway.Inferencer }

func (panicky) Generate(context.Context, inference.Model, inference.GenerateRequest, func(string) error) (inference.Result, error) {
	panic("boom: internal state 0xdeadbeef")
}

// TestPanic: a panic is a 500 envelope without internals; the log has them.
func TestPanic(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"), withInferencer(func(inf gateway.Inferencer) gateway.Inferencer { return panicky{inf} }))
	_, e := ts.doError(t, "POST", "/generate", generateBody, http.StatusInternalServerError, "internal_error", []string{"request id"})
	if strings.Contains(e.Message, "boom") {
		t.Errorf("the message shows the panic: %q", e.Message)
	}
	if line := ts.accessLog(t, e.RequestID); line["status"] != float64(500) {
		t.Errorf("access log status %v, want 500", line["status"])
	}
	panics := ts.logLines(t, "panic", "request_id", e.RequestID)
	if len(panics) != 1 || !strings.Contains(panics[0]["panic"].(string), "boom") || panics[0]["stack"] == nil {
		t.Errorf("panic log lines %v", panics)
	}
	// The server goes on serving.
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil)
}
