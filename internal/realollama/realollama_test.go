package realollama_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"tollgate/internal/realollama"
	"tollgate/internal/tinymodel"
)

// client returns an Ollama API client for the real test server, the model
// name, and whether that model is the harness's tiny model (whose greedy
// reply is known exactly).
func client(t *testing.T) (*api.Client, string, bool) {
	t.Helper()
	raw, model := realollama.Require(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse %s: %v", raw, err)
	}
	tiny := model == "tiny" || model == "tiny:latest"
	return api.NewClient(u, &http.Client{Timeout: 2 * time.Minute}), model, tiny
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func ptr[T any](v T) *T { return &v }

// greedy makes decoding deterministic.
var greedy = map[string]any{"temperature": 0, "seed": 1}

func TestGenerate(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	var got []api.GenerateResponse
	err := c.Generate(ctx(t), &api.GenerateRequest{
		Model: model, Prompt: "Say something.", Stream: ptr(false), Options: greedy,
	}, func(r api.GenerateResponse) error { got = append(got, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("non-streaming generate: got %d responses, want 1", len(got))
	}
	r := got[0]
	if !r.Done || r.DoneReason != "stop" {
		t.Errorf("done=%v done_reason=%q, want true, stop", r.Done, r.DoneReason)
	}
	if r.PromptEvalCount <= 0 || r.EvalCount <= 0 || r.TotalDuration <= 0 {
		t.Errorf("missing metrics: %+v", r.Metrics)
	}
	if tiny {
		if r.Response != tinymodel.GreedyReply {
			t.Errorf("response %q, want %q", r.Response, tinymodel.GreedyReply)
		}
		// The end-of-sequence token is counted.
		if want := len(tinymodel.GreedyReply) + 1; r.EvalCount != want {
			t.Errorf("eval_count %d, want %d", r.EvalCount, want)
		}
	}
}

func TestGenerateStream(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	var got []api.GenerateResponse
	err := c.Generate(ctx(t), &api.GenerateRequest{
		Model: model, Prompt: "Say something.", Options: greedy, // streams by default
	}, func(r api.GenerateResponse) error { got = append(got, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 {
		t.Fatalf("streaming generate: got %d chunks, want at least 2", len(got))
	}
	var text strings.Builder
	for i, r := range got {
		text.WriteString(r.Response)
		if last := i == len(got)-1; r.Done != last {
			t.Errorf("chunk %d: done=%v", i, r.Done)
		}
	}
	final := got[len(got)-1]
	if final.DoneReason != "stop" || final.PromptEvalCount <= 0 || final.EvalCount <= 0 {
		t.Errorf("final chunk: done_reason=%q metrics=%+v", final.DoneReason, final.Metrics)
	}
	if tiny && text.String() != tinymodel.GreedyReply {
		t.Errorf("streamed %q, want %q", text.String(), tinymodel.GreedyReply)
	}
}

func TestGenerateNumPredict(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	var r api.GenerateResponse
	err := c.Generate(ctx(t), &api.GenerateRequest{
		Model: model, Prompt: "Say something.", Stream: ptr(false),
		Options: map[string]any{"temperature": 0, "num_predict": 2},
	}, func(resp api.GenerateResponse) error { r = resp; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.DoneReason != "length" || r.EvalCount != 2 {
		t.Errorf("done_reason=%q eval_count=%d, want length, 2", r.DoneReason, r.EvalCount)
	}
	if tiny && r.Response != tinymodel.GreedyReply[:2] {
		t.Errorf("response %q, want %q", r.Response, tinymodel.GreedyReply[:2])
	}
}

func TestChat(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	msgs := []api.Message{{Role: "user", Content: "Hello there."}}
	for _, stream := range []bool{false, true} {
		var content strings.Builder
		var final api.ChatResponse
		n := 0
		err := c.Chat(ctx(t), &api.ChatRequest{Model: model, Messages: msgs, Stream: ptr(stream), Options: greedy},
			func(r api.ChatResponse) error {
				n++
				content.WriteString(r.Message.Content)
				if r.Message.Role != "assistant" {
					t.Errorf("stream=%v: role %q", stream, r.Message.Role)
				}
				final = r
				return nil
			})
		if err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		if !stream && n != 1 || stream && n < 2 {
			t.Errorf("stream=%v: %d responses", stream, n)
		}
		if !final.Done || final.DoneReason != "stop" || final.PromptEvalCount <= 0 || final.EvalCount <= 0 {
			t.Errorf("stream=%v: final done=%v done_reason=%q metrics=%+v", stream, final.Done, final.DoneReason, final.Metrics)
		}
		if tiny && content.String() != tinymodel.GreedyReply {
			t.Errorf("stream=%v: content %q, want %q", stream, content.String(), tinymodel.GreedyReply)
		}
	}
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)

	one, err := c.Embed(ctx(t), &api.EmbedRequest{Model: model, Input: "hello world"})
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Embeddings) != 1 || len(one.Embeddings[0]) == 0 {
		t.Fatalf("string input: got %d embeddings", len(one.Embeddings))
	}
	dim := len(one.Embeddings[0])
	if tiny && dim != 64 {
		t.Errorf("dimension %d, want 64", dim)
	}
	if one.PromptEvalCount <= 0 {
		t.Errorf("prompt_eval_count %d", one.PromptEvalCount)
	}

	inputs := []string{"hello world", "a", "the quick brown fox"}
	many, err := c.Embed(ctx(t), &api.EmbedRequest{Model: model, Input: inputs})
	if err != nil {
		t.Fatal(err)
	}
	if len(many.Embeddings) != len(inputs) {
		t.Fatalf("array input: got %d embeddings, want %d", len(many.Embeddings), len(inputs))
	}
	for i, e := range many.Embeddings {
		if len(e) != dim {
			t.Errorf("embedding %d has dimension %d, want %d", i, len(e), dim)
		}
		var sq float64
		for _, v := range e {
			sq += float64(v) * float64(v)
		}
		if math.Abs(sq-1) > 1e-3 {
			t.Errorf("embedding %d: squared norm %v, want 1 (Ollama normalizes)", i, sq)
		}
	}
	if slices.Equal(many.Embeddings[0], many.Embeddings[1]) {
		t.Error("different inputs gave identical embeddings")
	}
	if many.PromptEvalCount <= one.PromptEvalCount {
		t.Errorf("prompt_eval_count %d for 3 inputs, %d for the first alone", many.PromptEvalCount, one.PromptEvalCount)
	}
}

func TestFormatSchemaEnum(t *testing.T) {
	t.Parallel()
	c, model, _ := client(t)
	labels := []string{"positive", "negative", "neutral"}
	schema := json.RawMessage(`{"type":"object","properties":{"label":{"type":"string",` +
		`"enum":["positive","negative","neutral"]}},"required":["label"]}`)
	for seed := 1; seed <= 3; seed++ {
		var r api.GenerateResponse
		err := c.Generate(ctx(t), &api.GenerateRequest{
			Model: model, Prompt: "Classify the sentiment: I love it.", Stream: ptr(false), Format: schema,
			Options: map[string]any{"seed": seed, "num_predict": 200},
		}, func(resp api.GenerateResponse) error { r = resp; return nil })
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Label string `json:"label"`
		}
		if err := json.Unmarshal([]byte(r.Response), &out); err != nil {
			t.Fatalf("seed %d: response %q is not JSON: %v", seed, r.Response, err)
		}
		if !slices.Contains(labels, out.Label) {
			t.Errorf("seed %d: label %q not one of %v", seed, out.Label, labels)
		}
		if r.DoneReason != "stop" {
			t.Errorf("seed %d: done_reason %q, want stop", seed, r.DoneReason)
		}
	}
}

func TestUnknownModel(t *testing.T) {
	t.Parallel()
	c, _, _ := client(t)
	const missing = "no-such-model-for-tollgate"
	check := func(what string, err error) {
		t.Helper()
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || !strings.Contains(se.ErrorMessage, "not found") {
			t.Errorf("%s: got %v, want a 404 \"... not found\" error", what, err)
		}
	}
	noop := func(api.GenerateResponse) error { return nil }
	check("generate", c.Generate(ctx(t), &api.GenerateRequest{Model: missing, Prompt: "hi"}, noop))
	check("chat", c.Chat(ctx(t), &api.ChatRequest{Model: missing, Messages: []api.Message{{Role: "user", Content: "hi"}}},
		func(api.ChatResponse) error { return nil }))
	_, err := c.Embed(ctx(t), &api.EmbedRequest{Model: missing, Input: "hi"})
	check("embed", err)
}

// fakeTB records how Require ends a test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

type stop struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, format
	panic(stop{})
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, format
	panic(stop{})
}

func runRequire(tb *fakeTB) {
	defer func() {
		if r := recover(); r != nil && r != (stop{}) {
			panic(r)
		}
	}()
	realollama.Require(tb)
}

func TestRequireWithoutServer(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv(realollama.EnvURL, "")
	t.Setenv(realollama.EnvModel, "")

	t.Setenv(realollama.EnvRequire, "")
	skip := &fakeTB{}
	runRequire(skip)
	if !skip.skipped || !strings.Contains(skip.msg, "REAL OLLAMA NOT AVAILABLE") {
		t.Errorf("without %s: skipped=%v failed=%v msg=%q, want a loud skip", realollama.EnvRequire, skip.skipped, skip.failed, skip.msg)
	}

	t.Setenv(realollama.EnvRequire, "1")
	fail := &fakeTB{}
	runRequire(fail)
	if !fail.failed || !strings.Contains(fail.msg, "scripts/test.sh") {
		t.Errorf("with %s=1: skipped=%v failed=%v msg=%q, want a failure", realollama.EnvRequire, fail.skipped, fail.failed, fail.msg)
	}
}

func TestFormatJSONGreedy(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	var r api.GenerateResponse
	err := c.Generate(ctx(t), &api.GenerateRequest{
		Model: model, Prompt: "Answer in JSON.", Stream: ptr(false), Format: json.RawMessage(`"json"`),
		Options: map[string]any{"temperature": 0, "num_predict": 200},
	}, func(resp api.GenerateResponse) error { r = resp; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid([]byte(r.Response)) || r.DoneReason != "stop" {
		t.Errorf("response %q done_reason %q, want valid JSON and stop", r.Response, r.DoneReason)
	}
	if want := `{"` + tinymodel.GreedyReply + `":"` + tinymodel.GreedyReply + `"}`; tiny && r.Response != want {
		t.Errorf("response %q, want %q", r.Response, want)
	}
}

// TestRepeatLimitEndsWithoutDone pins down an Ollama v0.10.1 behaviour the
// gateway must survive: when the model repeats one token more than 30 times,
// Ollama stops generating and ends the response without a final "done"
// message (HTTP 200; no done_reason, no token counts).
func TestRepeatLimitEndsWithoutDone(t *testing.T) {
	t.Parallel()
	c, model, tiny := client(t)
	if !tiny {
		t.Skip("needs the harness's tiny model")
	}
	for _, stream := range []bool{false, true} {
		var got []api.GenerateResponse
		err := c.Generate(ctx(t), &api.GenerateRequest{
			Model: model, Prompt: "go", Stream: ptr(stream),
			Format:  json.RawMessage(`{"type":"string","pattern":"^a+$","minLength":60}`),
			Options: map[string]any{"temperature": 0, "num_predict": 200},
		}, func(resp api.GenerateResponse) error { got = append(got, resp); return nil })
		if err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		if len(got) == 0 {
			t.Fatalf("stream=%v: no response", stream)
		}
		last := got[len(got)-1]
		if last.Done || last.DoneReason != "" || last.EvalCount != 0 {
			t.Errorf("stream=%v: last message done=%v done_reason=%q eval_count=%d; Ollama's repeat limit behaves differently now",
				stream, last.Done, last.DoneReason, last.EvalCount)
		}
	}
}
