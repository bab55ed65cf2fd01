package handlers_test

import (
	"strings"
	"testing"

	"tollgate/inference/ollamatest"
)

// TestMetrics reads /metrics from the real server after traffic of every
// kind and checks the series an operator would graph.
func TestMetrics(t *testing.T) {
	fake, ts := newFakeServer(t, "5s", ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 7, EvalCount: 3}))
	if resp := ts.do(t, "POST", "/generate", `{"model":"chat","prompt":"hi"}`); resp.StatusCode != 200 {
		t.Fatalf("generate: %d %s", resp.StatusCode, readAll(t, resp))
	}
	ts.doError(t, "POST", "/generate", `{"prompt":"hi"}`, 401, "missing_api_key", nil, "X-API-Key", "")
	fake.SetFault(ollamatest.ModelNotFound())
	ts.doError(t, "POST", "/generate", `{"model":"chat","prompt":"hi"}`, 502, "model_not_installed", nil)

	resp := ts.do(t, "GET", "/metrics", nil, "X-API-Key", "")
	body := string(readAll(t, resp))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`tollgate_requests_total{model="chat",route="/generate",status="200",surface="native"} 1`,
		`tollgate_requests_total{model="",route="/generate",status="401",surface="native"} 1`,
		`tollgate_requests_total{model="chat",route="/generate",status="502",surface="native"} 1`,
		`tollgate_tokens_total{kind="prompt",model="chat"} 7`,
		`tollgate_tokens_total{kind="completion",model="chat"} 3`,
		`tollgate_rejections_total{reason="auth"} 1`,
		`tollgate_rejections_total{reason="rate"} 0`,
		`tollgate_ollama_errors_total{code="model_not_installed"} 1`,
		`tollgate_upstream_first_token_seconds_count{model="chat"} 1`,
		`tollgate_request_duration_seconds_count{route="/generate"} 3`,
		`tollgate_metering_batch_size_count `,
		`tollgate_metering_commit_seconds_count `,
		`tollgate_inflight_requests 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, ts.key) || strings.Contains(body, "llama3.2:3b") {
		t.Error("/metrics shows a key or an internal Ollama model name")
	}
}
