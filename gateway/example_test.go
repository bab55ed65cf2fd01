package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
	"tollgate/limits"
	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// A metered call with no HTTP request at all, as an async job or the
// dashboard makes one: a verified key, a request id, a decoded request.
// Here Ollama is the fake from package ollamatest and usage goes to a
// SQLite file.
func ExampleGateway_Generate() {
	ctx := context.Background()
	ollama := ollamatest.NewServer(ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 12}))
	defer ollama.Close()

	cat, err := inference.Parse("models.yaml", []byte(`
backends:
  - url: `+ollama.URL+`
models:
  llama3.2:
    ollama: llama3.2:3b
    endpoints: [generate]
    price: {input_per_1k: 0.2, output_per_1k: 0.6}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, err := os.MkdirTemp("", "tollgate-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(ctx, filepath.Join(dir, "usage.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	counters := metering.NewCounters(nil)
	recorder := metering.NewRecorder(db, metering.RecorderOptions{OnCommit: counters.AddAll})
	defer recorder.Close(ctx)
	gw := gateway.New(gateway.Config{
		Inference: inference.NewClient(cat), Recorder: recorder,
		Limiter: limits.New(counters, 0), Ledger: counters, Usage: db,
	})

	key := auth.Key{ID: "key_example", Scopes: []auth.Scope{tollgate.Generate},
		Limits: tollgate.Limits{MonthlyRequests: 1000}}
	text := "Say hello"
	res, err := gw.Generate(ctx, gateway.Caller{Key: key, RequestID: "job-42", Arrived: time.Now()},
		gateway.GenerateRequest{Prompt: &text}, nil)
	if err != nil {
		fmt.Println(tollgate.ErrorCode(err), err)
		return
	}
	fmt.Printf("%s (%s): %q\n", res.Model, res.DoneReason, res.Text)
	fmt.Printf("usage: %d prompt + %d completion tokens\n", res.Usage.PromptTokens, res.Usage.CompletionTokens)

	_ = db.ExportEvents(ctx, metering.Query{}, func(ev metering.Event) error {
		fmt.Printf("billed: %s %s %s status %d, %d tokens, cost %s\n", ev.RequestID, ev.Endpoint, ev.Model, ev.Status, ev.TotalTokens(), ev.Cost)
		return nil
	})
	fmt.Println("requests left this month:", *gw.Quota(key).RemainingRequests)
	// Output:
	// llama3.2 (stop): "Hello, world"
	// usage: 12 prompt + 3 completion tokens
	// billed: job-42 generate llama3.2 status 200, 15 tokens, cost 0.004200
	// requests left this month: 999
}
