package handlers_test

// The Ollama-compatible surface, driven by Ollama's own Go client.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
	"tollgate/internal/tinymodel"
	"tollgate/metering"
)

// keyHeader adds an API key to every request, as an Ollama client
// configured with custom headers does.
type keyHeader struct {
	name, value string
	next        http.RoundTripper
}

func (k keyHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if k.value != "" {
		r.Header.Set(k.name, k.value)
	}
	return k.next.RoundTrip(r)
}

// ollamaClient is Ollama's Go client for ts, sending secret as a bearer
// token ("" for none).
func ollamaClient(t testing.TB, ts *testServer, secret string) *api.Client {
	t.Helper()
	t.Setenv("OLLAMA_AUTH", "") // no request signing: the key is the credential
	base, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	value := ""
	if secret != "" {
		value = "Bearer " + secret
	}
	return api.NewClient(base, &http.Client{Timeout: ts.client.Timeout,
		Transport: keyHeader{name: "Authorization", value: value, next: ts.client.Transport}})
}

func ptr[T any](v T) *T { return &v }

// onlyRow returns key id's one usage row, requiring it on the ollama surface.
func onlyRow(t *testing.T, ts *testServer, id string) metering.Event {
	t.Helper()
	rows := ts.usageRows(t, id)
	if len(rows) != 1 {
		t.Fatalf("%d usage rows, want 1: %+v", len(rows), rows)
	}
	if rows[0].Surface != metering.SurfaceOllama {
		t.Errorf("usage row surface %q, want %q", rows[0].Surface, metering.SurfaceOllama)
	}
	return rows[0]
}

func checkCounts(t *testing.T, m api.Metrics, row metering.Event) {
	t.Helper()
	if int64(m.PromptEvalCount) != row.PromptTokens || int64(m.EvalCount) != row.CompletionTokens || row.PromptTokens <= 0 {
		t.Errorf("answer counts prompt %d eval %d; usage row prompt %d completion %d: want equal, positive prompt",
			m.PromptEvalCount, m.EvalCount, row.PromptTokens, row.CompletionTokens)
	}
}

func TestOllamaGenerateFake(t *testing.T) {
	fake, ts := newFakeServer(t, "10s", ollamaStreamReply)
	want := strings.Join(ollamaChunks, "")
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			id, secret := ts.newKey(t, auth.Spec{})
			var parts []api.GenerateResponse
			err := ollamaClient(t, ts, secret).Generate(t.Context(), &api.GenerateRequest{
				Model: "chat:latest", Prompt: "hi", Stream: ptr(stream), Options: map[string]any{"temperature": 0}},
				func(r api.GenerateResponse) error { parts = append(parts, r); return nil })
			if err != nil {
				t.Fatal(err)
			}
			text := ""
			for i, p := range parts {
				text += p.Response
				if p.Done != (i == len(parts)-1) || p.Model != "chat:latest" || p.CreatedAt.IsZero() {
					t.Errorf("part %d of %d: %+v", i, len(parts), p)
				}
			}
			if text != want || (stream && len(parts) != len(ollamaChunks)+1) || (!stream && len(parts) != 1) {
				t.Errorf("text %q in %d parts, want %q", text, len(parts), want)
			}
			last := parts[len(parts)-1]
			if last.DoneReason != "stop" {
				t.Errorf("done_reason %q", last.DoneReason)
			}
			checkCounts(t, last.Metrics, onlyRow(t, ts, id))
			if got := lastRequest(t, fake); got.Model != "llama3.2:3b" {
				t.Errorf("Ollama got model %q", got.Model)
			}
		})
	}
}

// ollamaStreamReply is the fake's reply in these tests.
var (
	ollamaChunks      = []string{"Hel", "lo", "!"}
	ollamaStreamReply = ollamatest.WithReply(ollamatest.Reply{Chunks: ollamaChunks, PromptEvalCount: 5})
)

func TestOllamaChatFake(t *testing.T) {
	_, ts := newFakeServer(t, "10s", ollamaStreamReply)
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			id, secret := ts.newKey(t, auth.Spec{})
			var text string
			var last api.ChatResponse
			err := ollamaClient(t, ts, secret).Chat(t.Context(), &api.ChatRequest{Model: "chat", Stream: ptr(stream),
				Messages: []api.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi there"}}},
				func(r api.ChatResponse) error {
					if r.Message.Role != "assistant" {
						t.Errorf("role %q", r.Message.Role)
					}
					text += r.Message.Content
					last = r
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if text != "Hello!" || !last.Done || last.DoneReason != "stop" || last.Model != "chat" {
				t.Errorf("text %q, last %+v", text, last)
			}
			checkCounts(t, last.Metrics, onlyRow(t, ts, id))
		})
	}
}

func TestOllamaChatToolCalls(t *testing.T) {
	fake, ts := newFakeServer(t, "10s", ollamatest.WithReply(ollamatest.Reply{
		Chunks: []string{}, PromptEvalCount: 21, EvalCount: 9,
		ToolCalls: []api.ToolCall{{Function: api.ToolCallFunction{Name: "get_weather", Arguments: map[string]any{"city": "Paris"}}}},
	}))
	tools := `[{"type":"function","function":{"name":"get_weather","description":"Weather in a city",
		"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"the city"}},"additionalProperties":false}}}]`
	var apiTools api.Tools
	if err := json.Unmarshal([]byte(tools), &apiTools); err != nil {
		t.Fatal(err)
	}
	history := []api.Message{
		{Role: "user", Content: "weather in Rome?"},
		{Role: "assistant", ToolCalls: []api.ToolCall{{Function: api.ToolCallFunction{Name: "get_weather", Arguments: map[string]any{"city": "Rome"}}}}},
		{Role: "tool", ToolName: "get_weather", Content: "sunny"},
		{Role: "user", Content: "and Paris?"},
	}
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			id, secret := ts.newKey(t, auth.Spec{})
			var calls []api.ToolCall
			var last api.ChatResponse
			err := ollamaClient(t, ts, secret).Chat(t.Context(), &api.ChatRequest{Model: "chat", Stream: ptr(stream), Messages: history, Tools: apiTools},
				func(r api.ChatResponse) error { calls = append(calls, r.Message.ToolCalls...); last = r; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments["city"] != "Paris" {
				t.Errorf("tool calls %+v, want get_weather(city=Paris)", calls)
			}
			if !last.Done || last.PromptEvalCount != 21 || last.EvalCount != 9 {
				t.Errorf("last %+v", last)
			}
			checkCounts(t, last.Metrics, onlyRow(t, ts, id))
			var got api.ChatRequest
			if err := json.Unmarshal(lastRequest(t, fake).Body, &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Tools) != 1 || got.Tools[0].Function.Name != "get_weather" || got.Tools[0].Function.Parameters.Required[0] != "city" {
				t.Errorf("Ollama got tools %v", got.Tools)
			}
			if len(got.Messages) != 4 || got.Messages[1].ToolCalls[0].Function.Arguments["city"] != "Rome" ||
				got.Messages[2].Role != "tool" || got.Messages[2].ToolName != "get_weather" {
				t.Errorf("Ollama got messages %+v", got.Messages)
			}
		})
	}
}

func TestOllamaEmbedFake(t *testing.T) {
	_, ts := newFakeServer(t, "10s", ollamatest.WithReply(ollamatest.Reply{EmbeddingDim: 8}))
	id, secret := ts.newKey(t, auth.Spec{})
	c := ollamaClient(t, ts, secret)
	res, err := c.Embed(t.Context(), &api.EmbedRequest{Model: "embedder", Input: []string{"one two", "three"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "embedder" || len(res.Embeddings) != 2 || len(res.Embeddings[0]) != 8 {
		t.Fatalf("embed: %+v", res)
	}
	row := onlyRow(t, ts, id)
	if int64(res.PromptEvalCount) != row.PromptTokens || row.PromptTokens != 3 {
		t.Errorf("prompt_eval_count %d, row %d, want 3", res.PromptEvalCount, row.PromptTokens)
	}
	legacy, err := c.Embeddings(t.Context(), &api.EmbeddingRequest{Model: "embedder:latest", Prompt: "three"})
	if err != nil {
		t.Fatal(err)
	}
	if len(legacy.Embedding) != 8 || float32(legacy.Embedding[0]) != res.Embeddings[1][0] {
		t.Errorf("legacy embedding %v, want the /api/embed vector of the same text %v", legacy.Embedding, res.Embeddings[1])
	}
	if _, err := c.Embed(t.Context(), &api.EmbedRequest{Model: "embedder", Input: "x", Truncate: ptr(false)}); !statusIs(err, 400, `"truncate"`) {
		t.Errorf("truncate false: %v", err)
	}
}

// statusIs reports whether err is Ollama's StatusError with status and a
// message containing msg.
func statusIs(err error, status int, msg string) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.StatusCode == status && strings.Contains(se.ErrorMessage, msg)
}

func TestOllamaErrors(t *testing.T) {
	_, ts := newFakeServer(t, "10s", ollamaStreamReply)
	ctx := t.Context()
	gen := &api.GenerateRequest{Model: "chat", Prompt: "hi", Stream: ptr(false)}
	noop := func(api.GenerateResponse) error { return nil }

	t.Run("no key", func(t *testing.T) {
		c := ollamaClient(t, ts, "")
		if err := c.Generate(ctx, gen, noop); !statusIs(err, 401, "API key") {
			t.Errorf("generate without a key: %v, want 401 naming the key", err)
		}
		if _, err := c.List(ctx); !statusIs(err, 401, "API key") {
			t.Errorf("tags without a key: %v", err)
		}
		// The streaming path of the client reads the error line too.
		if err := c.Generate(ctx, &api.GenerateRequest{Model: "chat", Prompt: "hi"}, noop); !statusIs(err, 401, "API key") {
			t.Errorf("streamed generate without a key: %v", err)
		}
	})
	t.Run("quota", func(t *testing.T) {
		_, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{MonthlyTokens: 3}})
		err := ollamaClient(t, ts, secret).Generate(ctx, gen, noop)
		if !statusIs(err, http.StatusPaymentRequired, "quota") {
			t.Errorf("over quota: %v, want 402", err)
		}
	})
	t.Run("rate", func(t *testing.T) {
		_, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{RequestsPerSecond: 0.001, Burst: 1}})
		c := ollamaClient(t, ts, secret)
		if err := c.Generate(ctx, gen, noop); err != nil {
			t.Fatal(err)
		}
		resp := ts.do(t, "POST", "/api/generate", map[string]any{"model": "chat", "prompt": "hi"}, "X-API-Key", secret)
		var body map[string]any
		if err := json.Unmarshal(readAll(t, resp), &body); err != nil || resp.StatusCode != 429 || len(body) != 1 || body["error"] == "" {
			t.Errorf("rate limited: %d %v (%v), want 429 {\"error\": ...}", resp.StatusCode, body, err)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	})
	t.Run("restricted key", func(t *testing.T) {
		_, secret := ts.newKey(t, auth.Spec{Models: []string{"embedder"}})
		c := ollamaClient(t, ts, secret)
		tags, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(tags.Models) != 1 || tags.Models[0].Name != "embedder:latest" {
			t.Errorf("tags %+v, want only embedder:latest", tags.Models)
		}
		if err := c.Generate(ctx, gen, noop); !statusIs(err, 403, `"chat"`) {
			t.Errorf("generate on a model the key may not use: %v, want 403", err)
		}
		if _, err := c.Show(ctx, &api.ShowRequest{Model: "chat"}); !statusIs(err, 404, "model 'chat' not found") {
			t.Errorf("show of a model the key may not use: %v, want 404", err)
		}
	})
	t.Run("refused fields", func(t *testing.T) {
		c := ollamaClient(t, ts, ts.key)
		for field, req := range map[string]*api.GenerateRequest{
			"raw":      {Model: "chat", Prompt: "hi", Raw: true},
			"template": {Model: "chat", Prompt: "hi", Template: "{{ .Prompt }}"},
			"suffix":   {Model: "chat", Prompt: "hi", Suffix: "end"},
			"context":  {Model: "chat", Prompt: "hi", Context: []int{1, 2}},
			"images":   {Model: "chat", Prompt: "hi", Images: []api.ImageData{[]byte("x")}},
			"think":    {Model: "chat", Prompt: "hi", Think: ptr(true)},
		} {
			if err := c.Generate(ctx, req, noop); !statusIs(err, 400, `"`+field+`"`) {
				t.Errorf("%s: %v, want 400 naming it", field, err)
			}
		}
	})
	t.Run("error after the stream began", func(t *testing.T) {
		_, ts := newFakeServer(t, "10s", ollamaStreamReply, ollamatest.WithFault(ollamatest.ErrorAfter(2, "the GPU fell over")))
		var got string
		err := ollamaClient(t, ts, ts.key).Generate(ctx, &api.GenerateRequest{Model: "chat", Prompt: "hi"},
			func(r api.GenerateResponse) error { got += r.Response; return nil })
		if err == nil || got != "Hello" {
			t.Errorf("text %q, error %v: want the first pieces, then the error line", got, err)
		}
	})
}

func TestOllamaModelsAndVersion(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	c := ollamaClient(t, ts, ts.key)
	ctx := t.Context()
	tags, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range tags.Models {
		names = append(names, m.Name)
	}
	if want := []string{"chat:latest", "embedder:latest"}; !slices.Equal(names, want) {
		t.Errorf("tags %v, want %v (models that serve only /predict are not listed)", names, want)
	}
	for name, want := range map[string]string{"chat": "completion", "embedder:latest": "embedding"} {
		show, err := c.Show(ctx, &api.ShowRequest{Model: name})
		if err != nil {
			t.Fatalf("show %s: %v", name, err)
		}
		if len(show.Capabilities) != 1 || string(show.Capabilities[0]) != want {
			t.Errorf("show %s: capabilities %v, want %s", name, show.Capabilities, want)
		}
	}
	if _, err := c.Show(ctx, &api.ShowRequest{Model: "nope"}); !statusIs(err, 404, "model 'nope' not found") {
		t.Errorf("show nope: %v", err)
	}
	var legacy api.ShowResponse // older clients send "name"
	ts.doJSON(t, "POST", "/api/show", map[string]string{"name": "chat:latest"}, http.StatusOK, &legacy)
	if len(legacy.Capabilities) != 1 {
		t.Errorf("show by name: %+v", legacy)
	}
	ps, err := c.ListRunning(ctx)
	if err != nil || ps.Models == nil || len(ps.Models) != 0 {
		t.Errorf("ps: %+v, %v", ps, err)
	}
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`github.com/ollama/ollama v` + regexp.QuoteMeta(v) + `\b`).Match(gomod) {
		t.Errorf("version %q is not the github.com/ollama/ollama version in go.mod", v)
	}
	if err := c.Heartbeat(ctx); err != nil {
		t.Errorf("heartbeat (HEAD /): %v", err)
	}
	resp := ts.do(t, "GET", "/", nil, "X-API-Key", "", "User-Agent", "ollama-python/0.5.1 (x86_64 linux) Python/3.12")
	if body := string(readAll(t, resp)); resp.StatusCode != 200 || body != "Ollama is running" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET / from an Ollama client: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// TestOllamaManagementRefused: model management is never forwarded: every
// route answers 403 in Ollama's shape with a key (401 without), other
// methods 405, unknown /api routes 404, and the fake Ollama sees nothing.
func TestOllamaManagementRefused(t *testing.T) {
	fake, ts := newFakeServer(t, "10s")
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/api/pull", 403}, {"POST", "/api/push", 403}, {"POST", "/api/create", 403},
		{"POST", "/api/copy", 403}, {"DELETE", "/api/delete", 403},
		{"HEAD", "/api/blobs/sha256:0123", 403}, {"POST", "/api/blobs/sha256:0123", 403},
		{"GET", "/api/pull", 405}, {"PUT", "/api/delete", 405}, {"GET", "/api/blobs/sha256:0123", 405},
		{"POST", "/api/tags", 405}, {"GET", "/api/generate", 405},
		{"POST", "/api/unload", 404}, {"GET", "/api/models/x", 404}, {"POST", "/api/pull/x", 404},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp := ts.do(t, tc.method, tc.path, `{"model":"chat","source":"chat","destination":"x"}`)
			data := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, data)
			}
			if tc.method != "HEAD" {
				var body map[string]any
				if err := json.Unmarshal(data, &body); err != nil || len(body) != 1 || body["error"] == "" {
					t.Errorf("body %s, want {\"error\":\"...\"}", data)
				}
				if tc.status == 403 && !strings.Contains(string(data), "model management") {
					t.Errorf("body %s does not say model management is refused", data)
				}
			}
			if resp := ts.do(t, tc.method, tc.path, nil, "X-API-Key", ""); resp.StatusCode != 401 && tc.status == 403 {
				t.Errorf("without a key: %d, want 401", resp.StatusCode)
			}
		})
	}
	if got := fake.Stats(); got.Requests != 0 {
		t.Errorf("the fake Ollama got %d requests, want none", got.Requests)
	}
}

// TestOllamaRealModel: Ollama's client against Tollgate in front of the
// real test Ollama: the tiny model answers, and every count the client sees
// is the usage row's.
func TestOllamaRealModel(t *testing.T) {
	ts := newRealServer(t)
	ctx := t.Context()
	greedy := map[string]any{"temperature": 0}
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("generate stream=", stream), func(t *testing.T) {
			id, secret := ts.newKey(t, auth.Spec{})
			var text string
			var last api.GenerateResponse
			err := ollamaClient(t, ts, secret).Generate(ctx, &api.GenerateRequest{Model: "tiny:latest", Prompt: "hi", Stream: ptr(stream), Options: greedy},
				func(r api.GenerateResponse) error { text += r.Response; last = r; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if text != tinymodel.GreedyReply || !last.Done || last.DoneReason != "stop" {
				t.Errorf("text %q, last %+v; want %q", text, last, tinymodel.GreedyReply)
			}
			checkCounts(t, last.Metrics, onlyRow(t, ts, id))
		})
		t.Run(fmt.Sprint("chat stream=", stream), func(t *testing.T) {
			id, secret := ts.newKey(t, auth.Spec{})
			var text string
			var last api.ChatResponse
			err := ollamaClient(t, ts, secret).Chat(ctx, &api.ChatRequest{Model: "tiny", Stream: ptr(stream), Options: greedy,
				Messages: []api.Message{{Role: "user", Content: "hi"}}},
				func(r api.ChatResponse) error { text += r.Message.Content; last = r; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if text != tinymodel.GreedyReply || !last.Done || last.Message.Role != "assistant" {
				t.Errorf("text %q, last %+v; want %q", text, last, tinymodel.GreedyReply)
			}
			checkCounts(t, last.Metrics, onlyRow(t, ts, id))
		})
	}
	t.Run("embed", func(t *testing.T) {
		id, secret := ts.newKey(t, auth.Spec{})
		c := ollamaClient(t, ts, secret)
		res, err := c.Embed(ctx, &api.EmbedRequest{Model: "tiny", Input: "hello world"})
		if err != nil {
			t.Fatal(err)
		}
		row := onlyRow(t, ts, id)
		if len(res.Embeddings) != 1 || len(res.Embeddings[0]) == 0 || int64(res.PromptEvalCount) != row.PromptTokens || row.PromptTokens <= 0 {
			t.Errorf("embed %d vectors, prompt_eval_count %d; row %+v", len(res.Embeddings), res.PromptEvalCount, row)
		}
		legacy, err := c.Embeddings(ctx, &api.EmbeddingRequest{Model: "tiny", Prompt: "hello world"})
		if err != nil {
			t.Fatal(err)
		}
		if len(legacy.Embedding) != len(res.Embeddings[0]) {
			t.Errorf("legacy embedding has %d dims, want %d", len(legacy.Embedding), len(res.Embeddings[0]))
		}
	})
	t.Run("tags, show, version", func(t *testing.T) {
		c := ollamaClient(t, ts, ts.key)
		tags, err := c.List(ctx)
		if err != nil || len(tags.Models) != 1 || tags.Models[0].Name != "tiny:latest" {
			t.Errorf("tags %+v, %v", tags, err)
		}
		if _, err := c.Show(ctx, &api.ShowRequest{Model: "tiny:latest"}); err != nil {
			t.Error(err)
		}
		if v, err := c.Version(ctx); err != nil || v != ollamatest.DefaultVersion {
			t.Errorf("version %q, %v", v, err)
		}
	})
}
