package gateway_test

// Refusals before admission leave no usage record, send nothing to Ollama
// and take nothing from the key's limits.

import (
	"context"
	"strings"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
)

// untouched checks that k's quotas and buckets are as a fresh key's and
// that Ollama was never called.
func (e *env) untouched(k auth.Key) {
	e.t.Helper()
	e.noRows()
	if n := e.fake.Stats().Requests; n != 0 {
		e.t.Errorf("the fake Ollama received %d requests, want none", n)
	}
	q := e.gw.Quota(k)
	if i64(q.RemainingRequests) != "10" || i64(q.RemainingTokens) != "1000" {
		e.t.Errorf("quota: requests %s tokens %s left, want 10 and 1000", i64(q.RemainingRequests), i64(q.RemainingTokens))
	}
	if st := e.gw.LimitState(k); st.RemainingTokens != 600 {
		e.t.Errorf("tokens per minute left %d, want 600", st.RemainingTokens)
	}
	if d := e.inFlight.get(); len(d) != 0 {
		e.t.Errorf("in-flight gauge was told %v, want nothing", d)
	}
}

var admitLimits = tollgate.Limits{MonthlyRequests: 10, MonthlyTokens: 1000, TokensPerMinute: 600}

func TestGenerateRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    func(auth.Key) auth.Key
		req    gateway.GenerateRequest
		code   tollgate.Code
		status int
		says   string // in the message
	}{
		{
			name: "no generate scope",
			key: func(k auth.Key) auth.Key {
				k.Scopes = []auth.Scope{tollgate.Embed, tollgate.Predict}
				return k
			},
			req: prompt("hi"), code: tollgate.CodeInsufficientScope, status: 403, says: "generate",
		},
		{
			name: "model not allowed for the key",
			key:  func(k auth.Key) auth.Key { k.Models = []string{"other"}; return k },
			req:  gateway.GenerateRequest{Model: "chat", Prompt: ptr("hi")}, code: tollgate.CodeModelNotAllowed, status: 403, says: `"chat"`,
		},
		{
			name: "unknown model",
			req:  gateway.GenerateRequest{Model: "gpt-9", Prompt: ptr("hi")}, code: tollgate.CodeModelNotFound, status: 404, says: `"gpt-9"`,
		},
		{
			name: "model that does not generate",
			req:  gateway.GenerateRequest{Model: "embedder", Prompt: ptr("hi")}, code: tollgate.CodeInvalidRequest, status: 400, says: "model",
		},
		{
			name: "option not allowed",
			req:  gateway.GenerateRequest{Prompt: ptr("hi"), Options: map[string]any{"num_gpu": 99}}, code: tollgate.CodeInvalidRequest, status: 400, says: "options.num_gpu",
		},
		{
			name: "option out of range",
			req:  gateway.GenerateRequest{Prompt: ptr("hi"), Options: map[string]any{"temperature": -1.0}}, code: tollgate.CodeInvalidRequest, status: 400, says: "options.temperature",
		},
		{
			name: "no prompt", req: gateway.GenerateRequest{}, code: tollgate.CodeInvalidRequest, status: 400, says: `"prompt"`,
		},
		{
			name: "bad message role",
			req:  gateway.GenerateRequest{Messages: []inference.Message{{Role: "robot", Content: "hi"}}}, code: tollgate.CodeInvalidRequest, status: 400, says: "messages[0].role",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			k := key("key_refused", admitLimits)
			if tc.key != nil {
				k = tc.key(k)
			}
			res, err := e.gw.Generate(context.Background(), e.caller(k), tc.req, nil)
			checkCode(t, err, tc.code)
			if s := tollgate.ErrorCode(err).Status(); s != tc.status {
				t.Errorf("status %d, want %d", s, tc.status)
			}
			if !strings.Contains(tollgate.ErrorMessage(err), tc.says) {
				t.Errorf("message %q does not name %s", tollgate.ErrorMessage(err), tc.says)
			}
			if res.Status != 0 || res.Usage.Total() != 0 {
				t.Errorf("result of a refusal: %+v", res.Result)
			}
			e.untouched(k)
		})
	}
}

// A key whose monthly requests are used up is refused with a final
// quota_exceeded (402): no row, nothing sent to Ollama.
func TestGenerateQuotaExceeded(t *testing.T) {
	e := newEnv(t)
	k := key("key_quota", tollgate.Limits{MonthlyRequests: 2})
	for i := 0; i < 2; i++ {
		if _, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi"), nil); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if got := i64(e.gw.Quota(k).RemainingRequests); got != "0" {
		t.Fatalf("remaining requests %s, want 0", got)
	}
	_, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi"), nil)
	checkCode(t, err, tollgate.CodeQuotaExceeded)
	if s := tollgate.ErrorCode(err).Status(); s != 402 {
		t.Errorf("status %d, want 402", s)
	}
	if !tollgate.IsFinal(err) {
		t.Errorf("a spent quota is not final: %v", err)
	}
	if n := len(e.rows()); n != 2 {
		t.Errorf("usage rows %d, want the 2 successful calls only", n)
	}
	if n := len(e.generateRequests()); n != 2 {
		t.Errorf("Ollama received %d requests, want 2", n)
	}
}

// With every GPU slot taken, a call waits the queue wait and is refused
// with overloaded (503, Retry-After): no row, its reservation given back,
// and the call holding the slot then completes as if nothing happened.
func TestGenerateOverloaded(t *testing.T) {
	hold := make(chan struct{})
	e := newEnv(t, withSlots(1, 20*time.Millisecond), withFake(ollamatest.WithFault(ollamatest.Fault{Hold: hold})))
	first := e.caller(key("key_first", tollgate.Limits{}))
	done := make(chan error, 1)
	var res gateway.GenerateResult
	go func() {
		var err error
		res, err = e.gw.Generate(context.Background(), first, prompt("hello"), nil)
		done <- err
	}()
	e.waitFake("the first call to be held", func(s ollamatest.Stats) bool { return s.InFlight == 1 })

	k := key("key_second", admitLimits)
	_, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi"), nil)
	checkCode(t, err, tollgate.CodeOverloaded)
	if s := tollgate.ErrorCode(err).Status(); s != 503 {
		t.Errorf("status %d, want 503", s)
	}
	if tollgate.RetryAfter(err) <= 0 {
		t.Errorf("no Retry-After on %v", err)
	}
	e.noRows()
	if n := e.fake.Stats().Requests; n != 1 {
		t.Errorf("the fake Ollama received %d requests, want only the held one", n)
	}
	q := e.gw.Quota(k)
	if i64(q.RemainingRequests) != "10" || i64(q.RemainingTokens) != "1000" {
		t.Errorf("quota: requests %s tokens %s left, want 10 and 1000", i64(q.RemainingRequests), i64(q.RemainingTokens))
	}
	if st := e.gw.LimitState(k); st.RemainingTokens != 600 {
		t.Errorf("tokens per minute left %d, want all 600 back", st.RemainingTokens)
	}
	if g := e.inFlight.get(); len(g) != 1 || g[0] != 1 {
		t.Errorf("in-flight gauge told %v, want only the held call's +1", g)
	}

	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("the held call: %v", err)
	}
	if res.Text != "Hello, world" || res.Status != 200 {
		t.Errorf("the held call: text %q status %d", res.Text, res.Status)
	}
	checkRow(t, e.row(), first, tollgate.Generate, "chat", 200, 1, 3, e.price("chat").Cost(1, 3))
}

// A key whose plan has left the catalog (removed from models.yaml, then a
// restart) has unknown limits: it is refused with plan_not_found, not
// served as if unlimited, and nothing reaches Ollama or the usage table.
func TestUnknownPlanFailsClosed(t *testing.T) {
	e := newEnv(t)
	k := key("key_goldplan", tollgate.Limits{})
	k.Plan = "gold"
	_, err := e.gw.Generate(context.Background(), e.caller(k), prompt("hi"), nil)
	checkCode(t, err, tollgate.CodePlanNotFound)
	if s := tollgate.ErrorCode(err).Status(); s != 403 {
		t.Errorf("status %d, want 403", s)
	}
	if !strings.Contains(tollgate.ErrorMessage(err), `"gold"`) {
		t.Errorf("message %q does not name the plan", tollgate.ErrorMessage(err))
	}
	_, err = e.gw.Embed(context.Background(), e.caller(k), gateway.EmbedRequest{Input: gateway.Inputs{Items: []string{"a"}}})
	checkCode(t, err, tollgate.CodePlanNotFound)
	e.noRows()
	if n := len(e.generateRequests()); n != 0 {
		t.Errorf("%d requests reached Ollama", n)
	}
}
