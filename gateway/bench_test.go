package gateway_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/limits"
	"tollgate/metering"
)

// instant is an Inferencer that answers at once: what is left to measure
// is the gateway's own work per call.
type instant struct{ cat *inference.Catalog }

func (i instant) Catalog() *inference.Catalog { return i.cat }

func (i instant) Generate(_ context.Context, _ inference.Model, _ inference.GenerateRequest, onText func(string) error) (inference.Result, error) {
	if onText != nil {
		if err := onText("hi"); err != nil {
			return inference.Result{}, err
		}
	}
	return inference.Result{Text: "hi", DoneReason: "stop", Done: true, Chunks: 1,
		Usage: inference.Usage{PromptTokens: 5, CompletionTokens: 1}}, nil
}

func (i instant) Embed(context.Context, inference.Model, []string, *time.Duration) (inference.EmbedResult, error) {
	return inference.EmbedResult{Embeddings: [][]float32{{1}}, Usage: inference.Usage{PromptTokens: 1}}, nil
}

func (i instant) Predict(context.Context, inference.Model, inference.PredictRequest) (inference.PredictResult, error) {
	return inference.PredictResult{}, nil
}

// counting is a Recorder that commits at once into the counters, as the
// real one's OnCommit does.
type counting struct{ c *metering.Counters }

func (r counting) Record(_ context.Context, ev metering.Event) error {
	r.c.Add(ev)
	return nil
}

// BenchmarkGateway measures one Generate through the gateway with every
// limit set (quota, concurrency, tokens per minute, rate) and the Ollama
// call and the durable commit taken out: authorize, validate, admit with
// reservations, GPU slot, settle, event, lease settlement, release.
func BenchmarkGateway(b *testing.B) {
	cat, err := inference.Parse("bench.yaml", []byte(`
backends: [{url: "http://127.0.0.1:1"}]
models:
  chat: {ollama: llama3.2, endpoints: [generate], price: {input_per_1k: 0.0002, output_per_1k: 0.0006}}
`))
	if err != nil {
		b.Fatal(err)
	}
	counters := metering.NewCounters(nil)
	g := gateway.New(gateway.Config{Inference: instant{cat}, Recorder: counting{counters},
		Limiter: limits.New(counters, 0), Ledger: counters})
	key := auth.Key{ID: "key_bench", Scopes: auth.DefaultScopes(), Limits: tollgate.Limits{
		RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e15, MaxConcurrent: 1 << 20,
		MonthlyTokens: 1e15, MonthlyRequests: 1e12}}
	prompt := "Say hi in five words"
	req := gateway.GenerateRequest{Model: "chat", Prompt: &prompt}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := gateway.Caller{Key: key, RequestID: "req_" + strconv.Itoa(i), Arrived: time.Now()}
		if _, err := g.Generate(ctx, c, req, nil); err != nil {
			b.Fatal(err)
		}
	}
}
