package gateway_test

import (
	"context"
	"testing"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
)

// An embedding is billed Ollama's input count as prompt tokens, under
// endpoint "embed"; a failed one is a 502 that costs nothing.
func TestEmbed(t *testing.T) {
	e := newEnv(t)
	k := key("key_embed", tollgate.Limits{MonthlyRequests: 5})
	c := e.caller(k)
	res, err := e.gw.Embed(context.Background(), c, gateway.EmbedRequest{Input: gateway.Inputs{Items: []string{"one two", "three"}, List: true}})
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	if res.Model != "embedder" || res.Status != 200 || len(res.Embeddings) != 2 || len(res.Embeddings[0]) != ollamatest.DefaultEmbeddingDim {
		t.Errorf("result: model %q status %d %d embeddings", res.Model, res.Status, len(res.Embeddings))
	}
	if res.Usage != (inference.Usage{PromptTokens: 3}) {
		t.Errorf("usage %+v, want the fake's 3 input tokens", res.Usage)
	}
	cost := e.price("embedder").Cost(3, 0)
	if cost != 3000 {
		t.Fatalf("price of 3 embedding tokens %d, want 3000", cost)
	}
	checkRow(t, e.row(), c, tollgate.Embed, "embedder", 200, 3, 0, cost)

	e.fake.SetFault(ollamatest.StatusFault(500, ""))
	c2 := e.caller(k)
	res, err = e.gw.Embed(context.Background(), c2, gateway.EmbedRequest{Model: "embedder", Input: gateway.Inputs{Items: []string{"four"}}})
	checkCode(t, err, tollgate.CodeBackendError)
	if res.Status != 502 || res.Usage != (inference.Usage{}) || res.Embeddings != nil {
		t.Errorf("failed embed: status %d usage %+v embeddings %v", res.Status, res.Usage, res.Embeddings)
	}
	checkRow(t, e.rows()[1], c2, tollgate.Embed, "embedder", 502, 0, 0, 0)
	if got := i64(e.gw.Quota(k).RemainingRequests); got != "4" {
		t.Errorf("remaining requests %s, want 4 (the 502 is not charged)", got)
	}

	// Refusals leave no row.
	_, err = e.gw.Embed(context.Background(), e.caller(k), gateway.EmbedRequest{Input: gateway.Inputs{Items: []string{"a", "b", "c", "d"}, List: true}})
	checkCode(t, err, tollgate.CodeInvalidRequest)
	_, err = e.gw.Embed(context.Background(), e.caller(k), gateway.EmbedRequest{Input: gateway.Inputs{Items: []string{"ok", " "}, List: true}})
	checkCode(t, err, tollgate.CodeInvalidRequest)
	if tollgate.ErrorMessage(err) != `field "input[1]" must not be empty` {
		t.Errorf("message %q does not name input[1]", tollgate.ErrorMessage(err))
	}
	noEmbed := k
	noEmbed.Scopes = []tollgate.Capability{tollgate.Generate}
	_, err = e.gw.Embed(context.Background(), e.caller(noEmbed), gateway.EmbedRequest{Input: gateway.Inputs{Items: []string{"x"}}})
	checkCode(t, err, tollgate.CodeInsufficientScope)
	if n := len(e.rows()); n != 2 {
		t.Errorf("usage rows %d after refusals, want 2", n)
	}
}

// A prediction over a list labels every input, is billed the sum of
// Ollama's counts under endpoint "predict"; an answer outside the labels is
// a 502 that costs nothing; an unknown task is refused with no row.
func TestPredict(t *testing.T) {
	e := newEnv(t, withFake(ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 9})))
	k := key("key_predict", tollgate.Limits{})
	c := e.caller(k)
	res, err := e.gw.Predict(context.Background(), c, gateway.PredictRequest{Task: "sentiment", Input: gateway.Inputs{Items: []string{"great", "awful"}, List: true}})
	if err != nil {
		t.Fatalf("Predict: %v", err)
	}
	if len(res.Predictions) != 2 || res.Predictions[0].Label != "positive" || res.Predictions[1].Label != "positive" {
		t.Errorf("predictions %+v, want two (the fake picks the first label)", res.Predictions)
	}
	// Per input: 9 prompt tokens; {"label":"positive"} streamed as 5 JSON tokens.
	if res.Usage != (inference.Usage{PromptTokens: 18, CompletionTokens: 10}) || res.Model != "chat" || res.Status != 200 {
		t.Errorf("result: usage %+v model %q status %d, want 18+10, chat, 200", res.Usage, res.Model, res.Status)
	}
	checkRow(t, e.row(), c, tollgate.Predict, "chat", 200, 18, 10, e.price("chat").Cost(18, 10))
	reqs := e.generateRequests()
	if len(reqs) != 2 || reqs[0].Path != "/api/chat" || reqs[0].Messages[len(reqs[0].Messages)-1].Content != "great" {
		t.Fatalf("requests to Ollama: %+v", reqs)
	}

	// Ad-hoc labels, the model answers outside them.
	e.fake.SetReply(ollamatest.Reply{JSONChunks: []string{`{`, `"label"`, `:`, `"maybe"`, `}`}, PromptEvalCount: 9})
	c2 := e.caller(k)
	res, err = e.gw.Predict(context.Background(), c2, gateway.PredictRequest{Labels: []string{"yes", "no"}, Input: gateway.Inputs{Items: []string{"is it?"}}})
	checkCode(t, err, tollgate.CodeBackendError)
	if res.Status != 502 || res.Usage != (inference.Usage{}) || res.Predictions != nil {
		t.Errorf("failed predict: status %d usage %+v predictions %+v", res.Status, res.Usage, res.Predictions)
	}
	checkRow(t, e.rows()[1], c2, tollgate.Predict, "chat", 502, 0, 0, 0)

	_, err = e.gw.Predict(context.Background(), e.caller(k), gateway.PredictRequest{Task: "horoscope", Input: gateway.Inputs{Items: []string{"x"}}})
	checkCode(t, err, tollgate.CodeTaskNotFound)
	_, err = e.gw.Predict(context.Background(), e.caller(k), gateway.PredictRequest{Task: "sentiment", Labels: []string{"a"}, Input: gateway.Inputs{Items: []string{"x"}}})
	checkCode(t, err, tollgate.CodeInvalidRequest)
	noPredict := k
	noPredict.Scopes = []tollgate.Capability{tollgate.Generate}
	_, err = e.gw.Predict(context.Background(), e.caller(noPredict), gateway.PredictRequest{Task: "sentiment", Input: gateway.Inputs{Items: []string{"x"}}})
	checkCode(t, err, tollgate.CodeInsufficientScope)
	if n := len(e.rows()); n != 2 {
		t.Errorf("usage rows %d after refusals, want 2", n)
	}
	if n := len(e.generateRequests()); n != 3 {
		t.Errorf("Ollama received %d requests, want 3 (none for the refusals)", n)
	}
}

// A prediction's output cannot be cut short, so near the end of a token
// quota it is refused (quota_exceeded) rather than lowered, with no row.
func TestPredictRefusedNotLoweredNearTokenQuota(t *testing.T) {
	e := newEnv(t)
	task := e.cat.Tasks["sentiment"]
	prompt, output := inference.PredictBudget(e.cat.Models["chat"], inference.PredictRequest{Labels: task.Labels, Instruction: task.Instruction, Inputs: []string{"fine"}})
	if prompt <= 0 || output <= 1 {
		t.Fatalf("PredictBudget = %d, %d", prompt, output)
	}
	// One token short of the full output: a generation would be lowered.
	k := key("key_predict_low", tollgate.Limits{MonthlyTokens: prompt + output - 1})
	_, err := e.gw.Predict(context.Background(), e.caller(k), gateway.PredictRequest{Task: "sentiment", Input: gateway.Inputs{Items: []string{"fine"}}})
	checkCode(t, err, tollgate.CodeQuotaExceeded)
	e.noRows()
	if n := e.fake.Stats().Requests; n != 0 {
		t.Errorf("Ollama received %d requests, want none", n)
	}
}
