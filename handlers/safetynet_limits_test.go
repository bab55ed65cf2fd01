package handlers_test

// Safety net for per-key limits, with token counts from the fake Ollama: a
// monthly token quota admits requests until it is used up exactly and not
// one more (402 quota_exceeded, x-should-retry: false), and the tokens a
// response used are charged to the key's tokens-per-minute bucket (429
// tokens_per_minute_exceeded with Retry-After).

import (
	"net/http"
	"strconv"
	"testing"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
)

// tokensPerGenerate is what every /generate costs with fixedCounts.
const tokensPerGenerate = 10

var fixedCounts = ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 4, EvalCount: 6})

// spend sends one /generate with secret and requires it to cost
// tokensPerGenerate tokens. It returns the response's request id.
func spend(t *testing.T, ts *testServer, secret string) string {
	t.Helper()
	var gen generateResponse
	resp := ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, &gen, "X-API-Key", secret)
	if gen.Usage.TotalTokens != tokensPerGenerate {
		t.Fatalf("a /generate cost %d tokens, want %d: the fake's counts are not what this test assumes", gen.Usage.TotalTokens, tokensPerGenerate)
	}
	return resp.Header.Get("X-Request-ID")
}

func TestSafetyNetMonthlyTokenQuotaBoundary(t *testing.T) {
	fake := newFakeOllama(t, fixedCounts)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	const quota = 2 * tokensPerGenerate

	t.Run("used up exactly", func(t *testing.T) {
		_, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{MonthlyTokens: quota}})
		spend(t, ts, secret)
		spend(t, ts, secret) // quota tokens spent: nothing left
		resp, _ := ts.doError(t, "POST", "/generate", generateBody, http.StatusPaymentRequired, "quota_exceeded", []string{strconv.Itoa(quota)}, "X-API-Key", secret)
		if got := resp.Header.Get("x-should-retry"); got != "false" {
			t.Errorf("x-should-retry %q, want false", got)
		}
	})
	t.Run("room for the prompt and one token left", func(t *testing.T) {
		// Admission reserves the prompt's bound (its 2 bytes, "hi", plus the
		// catalog's prompt_overhead of 4) and at least one output token:
		// with exactly that left, the request still runs.
		_, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{MonthlyTokens: quota + 2 + 4 + 1}})
		spend(t, ts, secret)
		spend(t, ts, secret)
		ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, nil, "X-API-Key", secret)
	})
}

func TestSafetyNetTokensPerMinuteCharged(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 40, EvalCount: 40}))
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	_, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{TokensPerMinute: 50}})
	var gen generateResponse
	resp := ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, &gen, "X-API-Key", secret)
	if gen.Usage.TotalTokens != 80 {
		t.Fatalf("a /generate cost %d tokens, want 80 (more than the key's 50 per minute)", gen.Usage.TotalTokens)
	}
	// The access log line is written once the request is over, its tokens
	// charged included.
	ts.accessLog(t, resp.Header.Get("X-Request-ID"))
	resp, _ = ts.doError(t, "POST", "/generate", generateBody, http.StatusTooManyRequests, "tokens_per_minute_exceeded", nil, "X-API-Key", secret)
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Errorf("Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
}
