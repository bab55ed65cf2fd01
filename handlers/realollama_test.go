package handlers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"tollgate/internal/realollama"
	"tollgate/internal/tinymodel"
)

// newRealServer starts a Tollgate server in front of the real test Ollama,
// with one public model "tiny" on every endpoint and a "sentiment" task.
func newRealServer(t *testing.T) *testServer {
	t.Helper()
	url, model := realollama.Require(t)
	return newTestServer(t, fmt.Sprintf(`
backends:
  - url: %s
models:
  tiny:
    ollama: %s
    endpoints: [generate, embed, predict]
tasks:
  sentiment:
    model: tiny
    labels: [positive, negative, neutral]
    instruction: Say how the writer feels.
`, url, model))
}

type generateResponse struct {
	ID         string `json:"id"`
	Model      string `json:"model"`
	Text       string `json:"text"`
	DoneReason string `json:"done_reason"`
	Usage      usage  `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (u usage) check(t *testing.T, wantPrompt, wantCompletion int) {
	t.Helper()
	if wantPrompt < 0 && u.PromptTokens <= 0 || wantPrompt >= 0 && u.PromptTokens != wantPrompt {
		t.Errorf("prompt_tokens %d, want %d (negative: any positive)", u.PromptTokens, wantPrompt)
	}
	if u.CompletionTokens != wantCompletion {
		t.Errorf("completion_tokens %d, want %d", u.CompletionTokens, wantCompletion)
	}
	if u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("total_tokens %d, want %d + %d", u.TotalTokens, u.PromptTokens, u.CompletionTokens)
	}
}

var greedy = map[string]any{"temperature": 0}

func TestRealGenerate(t *testing.T) {
	ts := newRealServer(t)
	for _, tc := range []struct {
		name       string
		body       map[string]any
		wantPrompt int // -1: any positive count
	}{
		{"prompt", map[string]any{"model": "tiny", "prompt": "hi", "options": greedy}, 6},
		{"messages", map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": "hi"}}, "options": greedy}, -1},
		{"system and messages", map[string]any{"model": "tiny", "system": "be brief", "messages": []map[string]string{
			{"role": "user", "content": "hello"}, {"role": "assistant", "content": "WORKS"}, {"role": "user", "content": "hi"}}, "options": greedy}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got generateResponse
			resp := ts.doJSON(t, "POST", "/generate", tc.body, http.StatusOK, &got)
			if got.Text != tinymodel.GreedyReply || got.DoneReason != "stop" || got.Model != "tiny" {
				t.Errorf("got %+v, want text %q, done_reason stop, model tiny", got, tinymodel.GreedyReply)
			}
			if got.ID == "" || got.ID != resp.Header.Get("X-Request-ID") {
				t.Errorf("id %q, X-Request-ID %q: want the same, non-empty", got.ID, resp.Header.Get("X-Request-ID"))
			}
			got.Usage.check(t, tc.wantPrompt, len(tinymodel.GreedyReply)+1) // +1: the end token
		})
	}
}

func TestRealGenerateStream(t *testing.T) {
	ts := newRealServer(t)
	resp := ts.do(t, "POST", "/generate", map[string]any{"model": "tiny", "prompt": "hi", "stream": true, "options": greedy})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache", cc)
	}
	gs := parseGenerateStream(t, readEvents(t, resp.Body))
	if gs.text != tinymodel.GreedyReply {
		t.Errorf("text events concatenate to %q, want %q (events %v)", gs.text, tinymodel.GreedyReply, gs.events)
	}
	if len(gs.events) < 3 {
		t.Errorf("%d events, want one per token and a done event: %v", len(gs.events), gs.events)
	}
	if gs.errEv != nil || gs.done == nil {
		t.Fatalf("want a done event and no error event: %v", gs.events)
	}
	want := map[string]any{
		"done": true, "id": resp.Header.Get("X-Request-ID"), "model": "tiny", "done_reason": "stop",
		"usage": map[string]any{"prompt_tokens": 6.0, "completion_tokens": 6.0, "total_tokens": 12.0},
	}
	if fmt.Sprint(gs.done) != fmt.Sprint(want) {
		t.Errorf("done event %v, want %v", gs.done, want)
	}
}

func TestRealEmbed(t *testing.T) {
	ts := newRealServer(t)
	for _, tc := range []struct {
		name  string
		input any
		want  int
	}{
		{"string", "hello world", 1},
		{"array", []string{"one", "two", "three"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got struct {
				ID         string      `json:"id"`
				Model      string      `json:"model"`
				Embeddings [][]float64 `json:"embeddings"`
				Usage      usage       `json:"usage"`
			}
			ts.doJSON(t, "POST", "/embed", map[string]any{"model": "tiny", "input": tc.input}, http.StatusOK, &got)
			if !strings.HasPrefix(got.ID, "req_") {
				t.Errorf("embed answer id = %q, want Tollgate's request id", got.ID)
			}
			if got.Model != "tiny" || len(got.Embeddings) != tc.want {
				t.Fatalf("model %q, %d embeddings; want tiny, %d", got.Model, len(got.Embeddings), tc.want)
			}
			for i, e := range got.Embeddings {
				if len(e) != 64 {
					t.Errorf("embedding %d has %d dims, want 64", i, len(e))
				}
			}
			got.Usage.check(t, -1, 0)
		})
	}
}

func TestRealPredict(t *testing.T) {
	ts := newRealServer(t)
	sentiment := []string{"positive", "negative", "neutral"}

	t.Run("task, one input", func(t *testing.T) {
		var got struct {
			ID, Label, Model, Task string
			Usage                  usage
		}
		resp := ts.doJSON(t, "POST", "/predict", map[string]any{"task": "sentiment", "input": "I love it"}, http.StatusOK, &got)
		if !slices.Contains(sentiment, got.Label) || got.Model != "tiny" || got.Task != "sentiment" {
			t.Errorf("got %+v, want a label of %v, model tiny, task sentiment", got, sentiment)
		}
		if got.ID != resp.Header.Get("X-Request-ID") {
			t.Errorf("id %q, X-Request-ID %q", got.ID, resp.Header.Get("X-Request-ID"))
		}
		if got.Usage.PromptTokens <= 0 || got.Usage.CompletionTokens <= 0 {
			t.Errorf("usage %+v, want positive counts", got.Usage)
		}
	})

	t.Run("labels, array input", func(t *testing.T) {
		labels := []string{"cat", "dog", "bird"}
		inputs := []string{"meow", "woof", "tweet", "purr"}
		var got struct {
			Predictions []struct{ Label string }
			Model       string
			Usage       usage
		}
		ts.doJSON(t, "POST", "/predict", map[string]any{"labels": labels, "model": "tiny", "input": inputs}, http.StatusOK, &got)
		if len(got.Predictions) != len(inputs) {
			t.Fatalf("%d predictions for %d inputs", len(got.Predictions), len(inputs))
		}
		for i, p := range got.Predictions {
			if !slices.Contains(labels, p.Label) {
				t.Errorf("prediction %d: label %q is not one of %v", i, p.Label, labels)
			}
		}
		if got.Usage.PromptTokens <= 0 || got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens {
			t.Errorf("usage %+v", got.Usage)
		}
	})
}

func TestRealModelsAndReady(t *testing.T) {
	ts := newRealServer(t)
	var models struct {
		Models []struct {
			Name      string
			Endpoints []string
		}
		Tasks []struct {
			Name, Model string
			Labels      []string
		}
	}
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, &models)
	if len(models.Models) != 1 || models.Models[0].Name != "tiny" || strings.Join(models.Models[0].Endpoints, ",") != "generate,embed,predict" {
		t.Errorf("models %+v", models.Models)
	}
	if len(models.Tasks) != 1 || models.Tasks[0].Name != "sentiment" || models.Tasks[0].Model != "tiny" || len(models.Tasks[0].Labels) != 3 {
		t.Errorf("tasks %+v", models.Tasks)
	}

	var ready map[string]any
	ts.doJSON(t, "GET", "/readyz", nil, http.StatusOK, &ready)
	delete(ready, "backends") // the one backend, up
	if want := map[string]any{"status": "ready", "database": "ok", "ollama": "ok", "usage_journal": "ok"}; fmt.Sprint(ready) != fmt.Sprint(want) {
		t.Errorf("readyz %v, want %v", ready, want)
	}
	var health map[string]string
	ts.doJSON(t, "GET", "/healthz", nil, http.StatusOK, &health)
	if health["status"] != "ok" {
		t.Errorf("healthz %v", health)
	}
}

// TestRealOllamaJob: a job runs through the real Ollama, metered once.
func TestRealOllamaJob(t *testing.T) {
	ts := newRealServer(t)
	id := ts.submit(t, map[string]any{"endpoint": "generate", "request": map[string]any{"model": "tiny", "prompt": "Hello", "options": map[string]any{"num_predict": 4, "temperature": 0}}})
	v := ts.waitJob(t, id)
	if v.Status != "succeeded" {
		t.Fatalf("job %+v", v)
	}
	var res generateResponse
	if err := json.Unmarshal(v.Result, &res); err != nil {
		t.Fatal(err)
	}
	res.Usage.check(t, -1, 4)
	if n := ts.jobUsageRows(t, id); n != 1 {
		t.Errorf("%d usage rows, want 1", n)
	}
}
