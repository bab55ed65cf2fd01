package inference

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
	"tollgate/internal/realollama"
	"tollgate/internal/tinymodel"
)

// realClient returns a client for the real test Ollama and the catalog models
// "tiny" (generate, predict) and "embedder", both mapped to its model.
func realClient(t *testing.T) (*Client, Model, Model) {
	t.Helper()
	url, model := realollama.Require(t)
	c := NewClient(testCatalog(t, url, "", model))
	return c, c.Catalog().Models["tiny"], c.Catalog().Models["embedder"]
}

func realContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var greedy = map[string]any{"temperature": 0.0, "seed": 1}

func TestRealGenerate(t *testing.T) {
	t.Parallel()
	c, tiny, _ := realClient(t)
	ctx := realContext(t)
	// "hi": 1 (BOS) + 3 + 2 bytes = 6 prompt tokens; "WORKS" + end = 6.
	want := Result{Text: tinymodel.GreedyReply, DoneReason: "stop", Usage: Usage{PromptTokens: 6, CompletionTokens: 6}, Done: true}
	for _, tc := range []struct {
		name string
		req  GenerateRequest
	}{
		{"prompt", GenerateRequest{Prompt: "hi", Options: greedy}},
		{"chat", GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, Options: greedy}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Generate(ctx, tiny, tc.req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Chunks < 1 {
				t.Errorf("Chunks = %d", res.Chunks)
			}
			if res.FirstToken <= 0 {
				t.Errorf("FirstToken = %v", res.FirstToken)
			}
			res.Chunks, res.FirstToken = 0, 0
			if !reflect.DeepEqual(res, want) {
				t.Errorf("Result = %+v, want %+v", res, want)
			}

			// Streamed, the pieces make the same text.
			var sb strings.Builder
			pieces := 0
			streamed, err := c.Generate(ctx, tiny, tc.req, func(s string) error { sb.WriteString(s); pieces++; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if sb.String() != tinymodel.GreedyReply || streamed.Text != "" || streamed.Chunks != pieces || pieces < 2 ||
				streamed.Usage != want.Usage || !streamed.Done {
				t.Errorf("streamed %q in %d pieces: %+v", sb.String(), pieces, streamed)
			}
		})
	}
}

// The model's output cap is enforced by Ollama: a request asking for more
// gets the catalog's max_num_predict.
func TestRealNumPredictClamped(t *testing.T) {
	t.Parallel()
	url, model := realollama.Require(t)
	cat, err := Parse("real.yaml", []byte("backends:\n  - url: "+url+"\nmodels:\n  capped:\n    ollama: "+model+
		"\n    endpoints: [generate]\n    limits: {max_num_predict: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := NewClient(cat).Generate(realContext(t), cat.Models["capped"], GenerateRequest{Prompt: "hi", Options: map[string]any{"temperature": 0.0, "num_predict": 1000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != tinymodel.GreedyReply[:3] || res.DoneReason != "length" || res.Usage.CompletionTokens != 3 {
		t.Errorf("Result = %+v, want 3 tokens and done_reason length", res)
	}
}

func TestRealEmbed(t *testing.T) {
	t.Parallel()
	c, _, embedder := realClient(t)
	ctx := realContext(t)
	one, err := c.Embed(ctx, embedder, []string{"hello world"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	two, err := c.Embed(ctx, embedder, []string{"hello world", "goodbye!"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, res := range map[string]EmbedResult{"one": one, "two": two} {
		for i, e := range res.Embeddings {
			if len(e) != 64 {
				t.Errorf("%s: embedding %d has %d dimensions, want 64", name, i, len(e))
			}
		}
		if res.Usage.PromptTokens <= 0 || res.Usage.CompletionTokens != 0 {
			t.Errorf("%s: usage %+v", name, res.Usage)
		}
	}
	if len(one.Embeddings) != 1 || len(two.Embeddings) != 2 {
		t.Fatalf("%d and %d embeddings, want 1 and 2", len(one.Embeddings), len(two.Embeddings))
	}
	if two.Usage.PromptTokens <= one.Usage.PromptTokens {
		t.Errorf("two inputs counted %d prompt tokens, one input %d", two.Usage.PromptTokens, one.Usage.PromptTokens)
	}
	if !slices.Equal(one.Embeddings[0], two.Embeddings[0]) && cosine(one.Embeddings[0], two.Embeddings[0]) < 0.999 {
		t.Errorf("the same input embeds differently alone and in a batch")
	}
	if slices.Equal(two.Embeddings[0], two.Embeddings[1]) {
		t.Errorf("different inputs got the same vector")
	}
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func TestRealPredict(t *testing.T) {
	t.Parallel()
	c, tiny, _ := realClient(t)
	labels := []string{"positive", "negative"}
	inputs := []string{"I love it", "this is awful", "meh"}
	res, err := c.Predict(realContext(t), tiny, PredictRequest{Labels: labels, Instruction: "Judge the tone.", Inputs: inputs})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Predictions) != len(inputs) {
		t.Fatalf("%d predictions for %d inputs", len(res.Predictions), len(inputs))
	}
	for i, p := range res.Predictions {
		if !slices.Contains(labels, p.Label) {
			t.Errorf("input %d labelled %q, not one of %v", i, p.Label, labels)
		}
	}
	if res.Usage.PromptTokens <= 0 || res.Usage.CompletionTokens <= 0 {
		t.Errorf("usage %+v", res.Usage)
	}
}

func TestRealModelMissing(t *testing.T) {
	t.Parallel()
	url, _ := realollama.Require(t)
	c := NewClient(testCatalog(t, url, "", "nope"))
	ctx := realContext(t)
	check := func(what string, err error) {
		t.Helper()
		var mm *ModelMissingError
		if !errors.As(err, &mm) || mm.Ollama != "nope" || !strings.Contains(err.Error(), "ollama pull nope") {
			t.Errorf("%s: error %v (%T), want *ModelMissingError for nope", what, err, err)
		}
	}
	_, err := c.Generate(ctx, c.Catalog().Models["tiny"], GenerateRequest{Prompt: "hi"}, nil)
	check("generate", err)
	_, err = c.Generate(ctx, c.Catalog().Models["tiny"], GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}}, nil)
	check("chat", err)
	_, err = c.Embed(ctx, c.Catalog().Models["embedder"], []string{"hi"}, nil)
	check("embed", err)
}

func TestRealPing(t *testing.T) {
	t.Parallel()
	c, _, _ := realClient(t)
	if h, err := c.Ping(realContext(t)); err != nil || len(h.Missing) != 0 || len(h.Serving) == 0 {
		t.Errorf("Ping: %+v, %v; want every model serving", h, err)
	}
	refused := ollamatest.RefusedURL(t)
	_, err := NewClient(testCatalog(t, refused, "", "tiny")).Ping(realContext(t))
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), refused) {
		t.Errorf("Ping on %s: %v (%T), want *UnreachableError", refused, err, err)
	}
}

// A real Ollama's /api/tags says which catalog models are installed: the
// test model under its bare name and with ":latest", and not one that was
// never pulled.
func TestRealPingMissing(t *testing.T) {
	t.Parallel()
	url, model := realollama.Require(t)
	cat, err := Parse("real.yaml", []byte(fmt.Sprintf(`backends:
  - url: %s
models:
  bare:   {ollama: %s, endpoints: [generate]}
  latest: {ollama: %s:latest, endpoints: [generate]}
  ghost:  {ollama: tollgate-never-pulled:7b, endpoints: [generate]}
`, url, model, model)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewClient(cat).Ping(realContext(t))
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if fmt.Sprint(h.Serving) != "[bare latest]" || len(h.Missing) != 1 || h.Missing[0].Name != "ghost" {
		t.Errorf("health %+v, want bare and latest serving, ghost missing", h)
	}
	if p := h.Pulls(); len(p) != 1 || !strings.HasSuffix(p[0], "ollama pull tollgate-never-pulled:7b") {
		t.Errorf("pulls %q", p)
	}
}
