package handlers_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

const (
	generateBody = `{"model":"chat","prompt":"hi"}`
	streamBody   = `{"model":"chat","prompt":"hi","stream":true}`
	embedBody    = `{"model":"embedder","input":["a","b"]}`
	predictBody  = `{"task":"sentiment","input":"hi"}`
)

// TestUpstreamFaults: what Ollama does wrong becomes a plain 5xx that says
// what happened, in the error envelope.
func TestUpstreamFaults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fault      ollamatest.Fault
		firstByte  string // the backend's first_byte_timeout; "" = 10s
		path, body string
		status     int
		code       string
		msgs       []string
		retryAfter string
	}{
		{name: "model not installed", fault: ollamatest.ModelNotFound(), path: "/generate", body: generateBody,
			status: 502, code: "model_not_installed", msgs: []string{"ollama pull llama3.2:3b"}},
		{name: "embedding model not installed", fault: ollamatest.ModelNotFound(), path: "/embed", body: embedBody,
			status: 502, code: "model_not_installed", msgs: []string{"ollama pull nomic-embed-text"}},
		{name: "predict model not installed", fault: ollamatest.ModelNotFound(), path: "/predict", body: predictBody,
			status: 502, code: "model_not_installed", msgs: []string{"ollama pull llama3.2:3b"}},
		{name: "busy", fault: ollamatest.Busy(), path: "/generate", body: generateBody,
			status: 503, code: "overloaded", msgs: []string{"Ollama is busy"}, retryAfter: "1"},
		{name: "busy, streamed: an error before the first chunk is plain JSON", fault: ollamatest.Busy(), path: "/generate", body: streamBody,
			status: 503, code: "overloaded", msgs: []string{"Ollama is busy"}, retryAfter: "1"},
		{name: "embed busy", fault: ollamatest.Busy(), path: "/embed", body: embedBody,
			status: 503, code: "overloaded", retryAfter: "1"},
		{name: "slow first byte", fault: ollamatest.SlowFirstByte(time.Hour), firstByte: "100ms", path: "/generate", body: generateBody,
			status: 504, code: "backend_timeout", msgs: []string{"Ollama at http://127.0.0.1:", "did not answer within 100ms"}},
		{name: "embed slow first byte", fault: ollamatest.SlowFirstByte(time.Hour), firstByte: "100ms", path: "/embed", body: embedBody,
			status: 504, code: "backend_timeout", msgs: []string{"did not answer within 100ms"}},
		{name: "stream cut", fault: ollamatest.CutAfter(1), path: "/generate", body: generateBody,
			status: 502, code: "backend_error", msgs: []string{"ended before its final chunk"}},
		{name: "embed cut", fault: ollamatest.CutAfter(0), path: "/embed", body: embedBody,
			status: 502, code: "backend_error", msgs: []string{"Ollama"}},
		{name: "error line", fault: ollamatest.ErrorAfter(1, "CUDA error: out of memory"), path: "/generate", body: generateBody,
			status: 502, code: "backend_error", msgs: []string{"CUDA error: out of memory"}},
		{name: "malformed stream", fault: ollamatest.MalformedAfter(1), path: "/generate", body: generateBody,
			status: 502, code: "backend_error", msgs: []string{"malformed"}},
		{name: "hangup", fault: ollamatest.Hangup(), path: "/generate", body: generateBody,
			status: 502, code: "backend_error", msgs: []string{"broke before it answered"}},
		{name: "runner crashed", fault: ollamatest.StatusFault(500, `{"error":"llama runner process has terminated"}`), path: "/generate", body: generateBody,
			status: 502, code: "backend_error", msgs: []string{"llama runner process has terminated"}},
		{name: "predict answer cut", fault: ollamatest.CutAfter(2), path: "/predict", body: predictBody,
			status: 502, code: "backend_error", msgs: []string{"ended before its final chunk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			firstByte := tc.firstByte
			if firstByte == "" {
				firstByte = "10s"
			}
			fake, ts := newFakeServer(t, firstByte, ollamatest.WithFault(tc.fault))
			resp, e := ts.doError(t, "POST", tc.path, tc.body, tc.status, tc.code, tc.msgs)
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if fake.Stats().Faulted == 0 {
				t.Errorf("the fault did not apply; message %q", e.Message)
			}
			if tc.status == 504 {
				// The timeout closed the connection: Ollama stops working.
				waitFake(t, fake, "the timed-out request canceled", func(s ollamatest.Stats) bool { return s.Canceled >= 1 })
			}
		})
	}
}

// TestOllamaDown: a stopped Ollama is named, with its address.
func TestOllamaDown(t *testing.T) {
	url := ollamatest.RefusedURL(t)
	ts := newTestServer(t, fakeCatalog(url, "10s"))
	want := "Ollama at " + url + " is not reachable"
	for _, tc := range []struct{ path, body string }{
		{"/generate", generateBody},
		{"/generate", streamBody},
		{"/embed", embedBody},
		{"/predict", predictBody},
	} {
		t.Run(tc.body, func(t *testing.T) {
			resp, _ := ts.doError(t, "POST", tc.path, tc.body, http.StatusBadGateway, "backend_unreachable", []string{want})
			if ra := resp.Header.Get("Retry-After"); ra == "" {
				t.Error("no Retry-After")
			}
		})
	}

	var ready map[string]any
	ts.doJSON(t, "GET", "/readyz", nil, http.StatusServiceUnavailable, &ready)
	if ready["status"] != "not ready" || ready["ollama"] != want || ready["database"] != "ok" {
		t.Errorf("readyz %v, want not ready because %q", ready, want)
	}
}

// TestReadyzDatabase: a database that is gone makes the server not ready.
func TestReadyzDatabase(t *testing.T) {
	_, ts := newFakeServer(t, "10s", ollamatest.WithModels("llama3.2:3b", "nomic-embed-text"))
	if err := ts.db.Close(); err != nil {
		t.Fatal(err)
	}
	var ready map[string]any
	ts.doJSON(t, "GET", "/readyz", nil, http.StatusServiceUnavailable, &ready)
	if ready["status"] != "not ready" || ready["database"] != "database is not usable" || ready["ollama"] != "ok" {
		t.Errorf("readyz %v", ready)
	}
}

// TestReadyzMissingModels: /readyz says which catalog models Ollama lacks
// and the ollama pull that installs each; it is 200 "degraded" while some
// model can serve, and 503 with Retry-After when none can (every request
// would fail with model_not_installed).
func TestReadyzMissingModels(t *testing.T) {
	type ready struct {
		Status, Database, Ollama string
		Missing                  []struct{ Model, Ollama, Pull string } `json:"missing_models"`
	}
	for _, tc := range []struct {
		name      string
		installed []string
		status    int
		want      string
		missing   []string // public names
	}{
		{"all", []string{"llama3.2:3b", "NOMIC-EMBED-TEXT:latest"}, 200, "ready", nil},
		{"some", []string{"llama3.2:3b"}, 200, "degraded", []string{"embedder"}},
		{"none", []string{"llama3.2:1b", "other"}, 503, "not ready", []string{"chat", "embedder"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, ts := newFakeServer(t, "10s", ollamatest.WithModels(tc.installed...))
			var got ready
			resp := ts.doJSON(t, "GET", "/readyz", nil, tc.status, &got)
			if got.Status != tc.want || got.Database != "ok" {
				t.Errorf("readyz %+v, want status %q", got, tc.want)
			}
			if ra := resp.Header.Get("Retry-After"); (tc.status == 503) != (ra != "") {
				t.Errorf("status %d with Retry-After %q", tc.status, ra)
			}
			var names []string
			for _, m := range got.Missing {
				names = append(names, m.Model)
				if want := "OLLAMA_HOST=" + fake.URL + " ollama pull " + m.Ollama; m.Pull != want {
					t.Errorf("missing %s: pull %q, want %q", m.Model, m.Pull, want)
				}
				if !strings.Contains(got.Ollama, m.Pull) {
					t.Errorf("ollama %q does not say %q", got.Ollama, m.Pull)
				}
			}
			if fmt.Sprint(names) != fmt.Sprint(tc.missing) {
				t.Errorf("missing models %v, want %v", names, tc.missing)
			}
			if tc.missing == nil && got.Ollama != "ok" {
				t.Errorf("ollama %q, want ok", got.Ollama)
			}
			if n := len(fake.Requests()); n != 1 {
				t.Errorf("readyz sent %d requests to Ollama, want 1 (GET /api/tags)", n)
			}
		})
	}
}

// TestStreamFaults: once a stream has started, a failure ends it with an
// "error" event carrying the envelope, and no done event.
func TestStreamFaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    ollamatest.Fault
		wantText string
		code     string
		msg      string
	}{
		{"cut", ollamatest.CutAfter(2), "Hello,", "backend_error", "ended before its final chunk"},
		{"error line", ollamatest.ErrorAfter(1, "CUDA error: out of memory"), "Hello", "backend_error", "CUDA error: out of memory"},
		{"malformed line", ollamatest.MalformedAfter(2), "Hello,", "backend_error", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ts := newFakeServer(t, "10s", ollamatest.WithFault(tc.fault))
			resp := ts.do(t, "POST", "/generate", streamBody)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), readAll(t, resp))
			}
			gs := parseGenerateStream(t, readEvents(t, resp.Body))
			if gs.text != tc.wantText {
				t.Errorf("text %q, want %q", gs.text, tc.wantText)
			}
			if gs.done != nil {
				t.Errorf("a done event after a failure: %v", gs.done)
			}
			if gs.errEv == nil {
				t.Fatalf("no error event: %v", gs.events)
			}
			e := checkEnvelope(t, gs.errEv, tc.code, tc.msg)
			if e.RequestID != resp.Header.Get("X-Request-ID") {
				t.Errorf("request_id %q, X-Request-ID %q", e.RequestID, resp.Header.Get("X-Request-ID"))
			}
		})
	}
}

// TestReadyzOllamaHangs: an Ollama that accepts connections but does not
// answer is named, whichever timeout ends the wait: the backend's
// first_byte_timeout or readyz's own 3 s.
func TestReadyzOllamaHangs(t *testing.T) {
	t.Parallel() // one case waits 3 s
	for _, tc := range []struct{ firstByte, within string }{{"100ms", "100ms"}, {"10s", "3s"}} {
		t.Run(tc.firstByte, func(t *testing.T) {
			t.Parallel()
			hang := ollamatest.SlowFirstByte(time.Hour)
			hang.Paths = []string{"/api/tags"}
			fake, ts := newFakeServer(t, tc.firstByte, ollamatest.WithFault(hang))
			var ready map[string]any
			ts.doJSON(t, "GET", "/readyz", nil, http.StatusServiceUnavailable, &ready)
			if want := "Ollama at " + fake.URL + " did not answer within " + tc.within; ready["ollama"] != want {
				t.Errorf("readyz %v, want ollama %q", ready, want)
			}
		})
	}
}
