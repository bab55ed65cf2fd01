package gateway_test

import (
	"context"
	"slices"
	"testing"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference/ollamatest"
)

// A non-streamed generation returns the text and Ollama's exact counts, is
// recorded once with those counts and the model's price, and the key's
// remaining quota goes down by exactly that.
func TestGenerateBillsOllamasCounts(t *testing.T) {
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 11})))
	k := key("key_one", tollgate.Limits{MonthlyRequests: 10, MonthlyTokens: 1000})
	before := e.gw.Quota(k)
	if i64(before.RemainingRequests) != "10" || i64(before.RemainingTokens) != "1000" {
		t.Fatalf("quota before: requests %s tokens %s, want 10 and 1000", i64(before.RemainingRequests), i64(before.RemainingTokens))
	}

	c := e.caller(k)
	res, err := e.gw.Generate(context.Background(), c, prompt("say hello"), nil)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if res.Text != "Hello, world" || res.DoneReason != "stop" || res.Model != "chat" || res.Status != 200 {
		t.Errorf("result: text %q done %q model %q status %d; want \"Hello, world\", stop, chat, 200", res.Text, res.DoneReason, res.Model, res.Status)
	}
	if res.Usage.PromptTokens != 11 || res.Usage.CompletionTokens != 3 {
		t.Errorf("usage %+v, want the fake's 11 prompt and 3 completion tokens", res.Usage)
	}
	wantCost := e.price("chat").Cost(11, 3)
	if wantCost != 40_000 { // (11*2000 + 3*6000) micro-units
		t.Fatalf("price of 11+3 tokens is %d, want 40000: the catalog changed", wantCost)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 200, 11, 3, wantCost)

	after := e.gw.Quota(k)
	if i64(after.RemainingRequests) != "9" || i64(after.RemainingTokens) != "986" {
		t.Errorf("quota after: requests %s tokens %s, want 9 and 986", i64(after.RemainingRequests), i64(after.RemainingTokens))
	}
	// What went to Ollama: the prompt, and the output cap of the model.
	reqs := e.generateRequests()
	if len(reqs) != 1 || reqs[0].Prompt != "say hello" || reqs[0].Model != "llama3.2:3b" {
		t.Fatalf("requests to Ollama: %+v", reqs)
	}
	if n, _ := reqs[0].NumPredict(); n != 64 {
		t.Errorf("num_predict sent %d, want the model's cap 64", n)
	}
}

// A streamed generation hands every piece to onPiece in order and is billed
// Ollama's counts; the result carries no text (the client has it).
func TestGenerateStreamPiecesInOrder(t *testing.T) {
	chunks := []string{"one", " two", " three", " four", " five"}
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{Chunks: chunks, PromptEvalCount: 4})))
	k := key("key_stream", tollgate.Limits{})
	c := e.caller(k)
	var got []string
	res, err := e.gw.Generate(context.Background(), c, prompt("count to five"), func(s string) error {
		got = append(got, s)
		return nil
	})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if !slices.Equal(got, chunks) {
		t.Errorf("pieces %q, want %q", got, chunks)
	}
	if res.Text != "" || res.DoneReason != "stop" || res.Status != 200 {
		t.Errorf("result: text %q done %q status %d; want \"\", stop, 200", res.Text, res.DoneReason, res.Status)
	}
	if res.Usage.PromptTokens != 4 || res.Usage.CompletionTokens != 5 {
		t.Errorf("usage %+v, want 4+5", res.Usage)
	}
	checkRow(t, e.row(), c, tollgate.Generate, "chat", 200, 4, 5, e.price("chat").Cost(4, 5))
}

// Near the end of a monthly token quota the output cap sent to Ollama is
// lowered to what is left, and an answer cut there says "limit", not
// "length". A client's own num_predict cut says "length".
func TestGenerateOutputLoweredNearTokenQuota(t *testing.T) {
	e := newEnv(t) // default reply: 3 chunks; prompt tokens = words
	// "hi there": 8 bytes + 4 overhead = 12 tokens reserved for the
	// prompt. The first call bills 2+3 = 5, leaving 14: room for the
	// prompt and 2 output tokens.
	k := key("key_low", tollgate.Limits{MonthlyTokens: 5 + 12 + 2})
	first, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi there"), nil)
	if err != nil {
		t.Fatalf("first Generate: %v", err)
	}
	if first.Usage.Total() != 5 || first.DoneReason != "stop" {
		t.Fatalf("first call: usage %+v done %q, want 5 tokens and stop", first.Usage, first.DoneReason)
	}
	if got := i64(e.gw.Quota(k).RemainingTokens); got != "14" {
		t.Fatalf("remaining tokens after the first call: %s, want 14", got)
	}

	c := e.caller(k)
	res, err := e.gw.Generate(context.Background(), c, prompt("hi there"), nil)
	if err != nil {
		t.Fatalf("second Generate: %v", err)
	}
	if n := e.lastNumPredict(); n != 2 {
		t.Errorf("num_predict sent to Ollama %d, want 2 (what is left of the quota)", n)
	}
	if res.Text != "Hello," || res.DoneReason != gateway.DoneLimit {
		t.Errorf("result: text %q done %q, want \"Hello,\" and %q", res.Text, res.DoneReason, gateway.DoneLimit)
	}
	checkRow(t, e.rows()[1], c, tollgate.Generate, "chat", 200, 2, 2, e.price("chat").Cost(2, 2))
	if got := i64(e.gw.Quota(k).RemainingTokens); got != "10" {
		t.Errorf("remaining tokens: %s, want 10", got)
	}

	// The client's own cap is not the key's limit.
	free := key("key_free", tollgate.Limits{})
	res, err = e.gw.Generate(context.Background(), e.caller(free),
		gateway.GenerateRequest{Prompt: ptr("hi"), Options: map[string]any{"num_predict": 2}}, nil)
	if err != nil {
		t.Fatalf("Generate with num_predict 2: %v", err)
	}
	if res.DoneReason != "length" || e.lastNumPredict() != 2 {
		t.Errorf("client's num_predict 2: done %q, sent %d; want length and 2", res.DoneReason, e.lastNumPredict())
	}
}

// A plan's max_num_predict caps what is sent to Ollama below the model's,
// whatever the request asks for; a cut at the plan's cap is "length".
func TestGeneratePlanCapsNumPredict(t *testing.T) {
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{Chunks: []string{"a", "b", "c", "d", "e", "f", "g", "h"}})))
	small := key("key_small", tollgate.Limits{})
	small.Plan = "small"
	for _, tc := range []struct {
		name string
		opts map[string]any
		want int
	}{
		{"no num_predict", nil, 5},
		{"num_predict above the plan's cap", map[string]any{"num_predict": 50}, 5},
		{"num_predict 0 (Ollama: unlimited)", map[string]any{"num_predict": 0}, 5},
		{"num_predict -1 (Ollama: unlimited)", map[string]any{"num_predict": -1}, 5},
		{"num_predict below the plan's cap", map[string]any{"num_predict": 3}, 3},
	} {
		res, err := e.gw.Generate(context.Background(), e.caller(small), gateway.GenerateRequest{Prompt: ptr("go"), Options: tc.opts}, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := e.lastNumPredict(); got != tc.want {
			t.Errorf("%s: num_predict sent %d, want %d", tc.name, got, tc.want)
		}
		if res.DoneReason != "length" || res.Usage.CompletionTokens != tc.want {
			t.Errorf("%s: done %q completion %d, want length and %d", tc.name, res.DoneReason, res.Usage.CompletionTokens, tc.want)
		}
	}
	// A key with no plan gets the model's cap.
	if _, err := e.gw.Generate(context.Background(), e.caller(key("key_noplan", tollgate.Limits{})), prompt("go"), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.lastNumPredict(); got != 64 {
		t.Errorf("no plan: num_predict sent %d, want the model's 64", got)
	}
}

// The InFlight gauge is told +1 then -1 for every admitted call, failed
// ones included, and nothing for a call refused before admission.
func TestInFlightGauge(t *testing.T) {
	e := newEnv(t)
	k := key("key_gauge", tollgate.Limits{MonthlyRequests: 2})
	ctx := context.Background()

	if _, err := e.gw.Generate(ctx, e.caller(k), prompt("hi"), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.inFlight.get(); !slices.Equal(got, []int{1, -1}) {
		t.Fatalf("after a successful call: %v, want [1 -1]", got)
	}

	e.fake.SetFault(ollamatest.StatusFault(500, ""))
	if _, err := e.gw.Generate(ctx, e.caller(k), prompt("hi"), nil); err == nil {
		t.Fatal("Generate against a failing Ollama succeeded")
	}
	e.fake.SetFault(ollamatest.Fault{})
	if got := e.inFlight.get(); !slices.Equal(got, []int{1, -1, 1, -1}) {
		t.Fatalf("after a failed call: %v, want [1 -1 1 -1]", got)
	}

	// Refusals: scope, model, validation, quota.
	noScope := k
	noScope.Scopes = []tollgate.Capability{tollgate.Embed}
	_, err1 := e.gw.Generate(ctx, e.caller(noScope), prompt("hi"), nil)
	_, err2 := e.gw.Generate(ctx, e.caller(k), gateway.GenerateRequest{Model: "nope", Prompt: ptr("hi")}, nil)
	_, err3 := e.gw.Generate(ctx, e.caller(k), gateway.GenerateRequest{}, nil)
	if _, err := e.gw.Generate(ctx, e.caller(k), prompt("hi"), nil); err != nil { // the second charged request
		t.Fatal(err)
	}
	_, err4 := e.gw.Generate(ctx, e.caller(k), prompt("hi"), nil)
	for i, err := range []error{err1, err2, err3, err4} {
		if err == nil {
			t.Fatalf("refusal %d succeeded", i+1)
		}
	}
	checkCode(t, err4, tollgate.CodeQuotaExceeded)
	if got := e.inFlight.get(); !slices.Equal(got, []int{1, -1, 1, -1, 1, -1}) {
		t.Errorf("after refusals: %v, want only the three admitted calls' [1 -1]", got)
	}
}
