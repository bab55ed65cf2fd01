package gateway_test

import (
	"context"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/limits"
	"tollgate/metering"
)

// panicking is an Inferencer whose Generate panics once, then answers.
type panicking struct {
	instant
	panics *int
}

func (p panicking) Generate(ctx context.Context, m inference.Model, req inference.GenerateRequest, onText func(string) error) (inference.Result, error) {
	if *p.panics > 0 {
		*p.panics--
		panic("ollama client blew up")
	}
	return p.instant.Generate(ctx, m, req, onText)
}

// A panic between admission and finish (in Ollama's client, or in a
// surface's onPiece) must not keep the GPU slot or the key's reservations:
// with one slot and a one-request concurrency limit, the next call still
// runs.
func TestPanicReleasesSlotAndLease(t *testing.T) {
	cat, err := inference.Parse("t.yaml", []byte(`
backends: [{url: "http://127.0.0.1:1", max_parallel: 1}]
models:
  chat: {ollama: llama3.2, endpoints: [generate]}
`))
	if err != nil {
		t.Fatal(err)
	}
	counters := metering.NewCounters(nil)
	n := 1
	g := gateway.New(gateway.Config{Inference: panicking{instant{cat}, &n}, Recorder: counting{counters},
		Limiter: limits.New(counters, 0), Ledger: counters, Scheduler: inference.NewClient(cat, inference.WithQueue(10*time.Millisecond, 0))})
	key := auth.Key{ID: "key_panic", Scopes: auth.DefaultScopes(), Limits: tollgate.Limits{MaxConcurrent: 1, TokensPerMinute: 1000}}
	p := "hi"
	call := func(id string) (err error, panicked bool) {
		defer func() {
			if recover() != nil {
				panicked = true
			}
		}()
		_, err = g.Generate(context.Background(), gateway.Caller{Key: key, RequestID: id, Arrived: time.Now()},
			gateway.GenerateRequest{Model: "chat", Prompt: &p}, nil)
		return err, false
	}
	if _, panicked := call("req_1"); !panicked {
		t.Fatal("the first call did not panic")
	}
	if err, panicked := call("req_2"); panicked || err != nil {
		t.Fatalf("after a panic: err %v, panicked %v; want the slot and the key's concurrency back", err, panicked)
	}
	if st := g.LimitState(key); st.RemainingTokens != 1000-6 {
		t.Errorf("tokens per minute left %d, want %d: the panicked call's reservation must come back", st.RemainingTokens, 1000-6)
	}
}
