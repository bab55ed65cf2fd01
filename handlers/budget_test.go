package handlers_test

// Money budgets: a key's or an account's monthly_budget is never exceeded,
// however many clients call at once; a request that cannot be paid for is
// refused with 402 budget_exceeded saying what is left and when it resets;
// alerts fire at 50, 80 and 100 percent (a log line and a metric).

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"tollgate"
	"tollgate/auth"
	"tollgate/inference/ollamatest"
)

// budgetCatalog prices input only, 1 currency unit per 1k tokens (1000
// micro-units a token), so a request's cost does not depend on its output
// cap (the fake Ollama ignores num_predict).
func budgetCatalog(url string) string {
	return fmt.Sprintf(`
backends:
  - url: %s
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate]
    limits: {max_num_predict: 64, prompt_overhead: 4}
    price: {input_per_1k: 1, output_per_1k: 0}
plans:
  capped: {monthly_budget: 0.5}
`, url)
}

// The fake counts the prompt "hi" (2 bytes + overhead 4) at exactly its
// bound, so every request reserves what it will cost: 6 tokens, 0.006.
const (
	budgetPromptTokens = 6
	budgetPerRequest   = tollgate.Money(budgetPromptTokens * 1000)
)

func TestBudgetExactUnderConcurrency(t *testing.T) {
	for _, scope := range []string{"key", "account"} {
		t.Run(scope, func(t *testing.T) {
			fake := newFakeOllama(t, ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: budgetPromptTokens, EvalCount: 3}))
			ts := newTestServer(t, budgetCatalog(fake.URL))
			_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
			const fits = 16
			budget := budgetPerRequest * fits // 0.096: exactly 16 requests
			var secrets, ids []string
			if scope == "key" {
				id, secret := ts.newKey(t, auth.Spec{Limits: auth.Limits{MonthlyBudget: budget}})
				secrets, ids = []string{secret}, []string{id}
			} else {
				var a accountJSON
				ts.doJSON(t, "POST", "/admin/accounts", map[string]any{"name": "Acme", "limits": map[string]any{"monthly_budget": budget.String()}},
					http.StatusCreated, &a, "X-API-Key", admin)
				for i := range 3 {
					id, secret := ts.newKey(t, auth.Spec{Name: fmt.Sprint("acme-", i), Account: a.ID})
					secrets, ids = append(secrets, secret), append(ids, id)
				}
			}

			const clients = 50
			statuses := make([]int, clients)
			bodies := make([]string, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					// A well-behaved client, as in the exact quota tests:
					// a 402 that does not say x-should-retry: false
					// (requests in flight hold part of the budget and may
					// give it back) is retried; the outcome is counted.
					for range 200 {
						resp, err := ts.send(t.Context(), "POST", "/generate", generateBody, "X-API-Key", secrets[i%len(secrets)])
						if err != nil {
							t.Error(err)
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						statuses[i], bodies[i] = resp.StatusCode, string(b)
						if resp.StatusCode != http.StatusPaymentRequired || resp.Header.Get("x-should-retry") == "false" {
							return
						}
					}
				})
			}
			wg.Wait()
			ok := 0
			for i, s := range statuses {
				switch {
				case s == http.StatusOK:
					ok++
				case s == http.StatusPaymentRequired && strings.Contains(bodies[i], `"budget_exceeded"`):
				default:
					t.Errorf("status %d %s, want 200 or 402 budget_exceeded", s, bodies[i])
				}
			}
			var spent tollgate.Money
			rows := 0
			for _, id := range ids {
				for _, ev := range ts.usageRows(t, id) {
					spent += ev.Cost
					rows++
				}
			}
			if ok != fits || rows != fits || spent != budget {
				t.Fatalf("%d of %d requests passed (%d usage rows, spent %s) under a budget of %s; want exactly %d, spent %s",
					ok, clients, rows, spent, budget, fits, budget)
			}
			// Spent: refused for good, saying so and when it resets.
			who := "this key's"
			if scope == "account" {
				who = "this key's account's"
			}
			resp, _ := ts.doError(t, "POST", "/generate", generateBody, http.StatusPaymentRequired, "budget_exceeded",
				[]string{who + " monthly budget (" + budget.String() + ") is spent", "resets at"}, "X-API-Key", secrets[0])
			if resp.Header.Get("x-should-retry") != "false" {
				t.Errorf("x-should-retry = %q, want false", resp.Header.Get("x-should-retry"))
			}
			// /usage says what is left.
			var u struct {
				Quota struct {
					RemainingBudget string `json:"remaining_budget"`
				} `json:"quota"`
				Account *struct {
					Quota struct {
						MonthlyBudget   string `json:"monthly_budget"`
						RemainingBudget string `json:"remaining_budget"`
					} `json:"quota"`
				} `json:"account"`
			}
			ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, &u, "X-API-Key", secrets[0])
			left := u.Quota.RemainingBudget
			if scope == "account" {
				left = u.Account.Quota.RemainingBudget
			}
			if left != "0.000000" {
				t.Errorf("/usage remaining_budget = %q, want 0.000000", left)
			}
			// Alerts: one each at 50, 80 and 100 %, a log line and a metric.
			metrics := string(readAll(t, ts.do(t, "GET", "/metrics", nil)))
			for _, pct := range []string{"50", "80", "100"} {
				want := fmt.Sprintf(`tollgate_budget_alerts_total{scope=%q,threshold=%q} 1`, scope, pct)
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if n := len(ts.logLines(t, "monthly budget threshold reached", "scope", scope)); n != 3 {
				t.Errorf("%d budget alert log lines, want 3", n)
			}
		})
	}
}

// A plan's budget applies to its keys; each request is settled to its real
// cost, not its reservation; one that cannot fit is told what is left.
func TestBudgetFromPlanSettlesToRealCost(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 2, EvalCount: 3}))
	ts := newTestServer(t, budgetCatalog(fake.URL))
	_, secret := ts.newKey(t, auth.Spec{Plan: "capped"}) // 0.5
	// Each request reserves 6 tokens (0.006) but costs 2 (0.002): 248 fit,
	// then 0.004 is left, less than the next one may cost.
	for i := range 248 {
		if resp := ts.do(t, "POST", "/generate", generateBody, "X-API-Key", secret); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, readAll(t, resp))
		}
	}
	ts.doError(t, "POST", "/generate", generateBody, http.StatusPaymentRequired, "budget_exceeded",
		[]string{"may cost up to 0.006000", "only 0.004000 of this key's monthly budget (0.500000) is left", "resets at"}, "X-API-Key", secret)
}
