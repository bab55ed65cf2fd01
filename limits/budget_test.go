package limits_test

import (
	"errors"
	"math/rand"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/limits"
	"tollgate/metering"
)

// Money budgets, on a key and on its account, reserved at the worst-case
// cost and settled to the real one: what is committed never exceeds either
// budget however requests interleave, a request near the end gets a lower
// output cap instead of a refusal, and refusals are budget_exceeded.
func TestBudgetsNeverExceeded(t *testing.T) {
	price := tollgate.Price{InputPer1K: 1000, OutputPer1K: 3000} // 1 and 3 micro-units a token
	const (
		keyBudget     = tollgate.Money(20_000)
		accountBudget = tollgate.Money(30_000)
		prompt, out   = 10, 100
	)
	counters := metering.NewCounters(func() time.Time { return t0 })
	l := limits.New(counters, 0)
	keys := []string{"a", "b"}
	var (
		mu      sync.Mutex
		lowered int
		n       int
	)
	hammer(50, 2_000, func(g, i int) bool {
		key := keys[g%2]
		ls, err := l.Admit(ctx, limits.Request{KeyID: key, Limits: tollgate.Limits{MonthlyBudget: keyBudget},
			AccountID: "acct", Account: tollgate.Limits{MonthlyBudget: accountBudget}, Price: price,
			Prompt: prompt, Output: out, MinOutput: 1, Now: t0})
		if err != nil {
			var te *tollgate.Error
			if !errors.As(err, &te) || te.Code != tollgate.CodeBudgetExceeded {
				t.Errorf("refusal %v, want budget_exceeded", err)
				return false
			}
			return !te.Final
		}
		if price.Cost(prompt, ls.Output()) > keyBudget {
			t.Errorf("granted output %d costs more than the budget", ls.Output())
		}
		mu.Lock()
		n++
		rng := rand.New(rand.NewSource(int64(n)))
		if ls.Lowered() {
			lowered++
		}
		mu.Unlock()
		used := int64(rng.Intn(int(ls.Output()) + 1))
		counters.Add(metering.Event{RequestID: "r", KeyID: key, AccountID: "acct", Endpoint: tollgate.Generate,
			PromptTokens: prompt, CompletionTokens: used, Status: 200, Cost: price.Cost(prompt, used), Time: t0})
		if err := ls.Settle(ctx, limits.Settlement{Tokens: prompt + used, Now: t0, Charged: true}); err != nil {
			t.Error(err)
		}
		return true
	})
	for _, k := range keys {
		if s := counters.Spent(k); s > keyBudget {
			t.Errorf("key %s spent %s of a %s budget", k, s, keyBudget)
		}
	}
	if s := counters.AccountSpent("acct"); s > accountBudget {
		t.Errorf("account spent %s of a %s budget", s, accountBudget)
	}
	if lowered == 0 {
		t.Errorf("no request near the end of a budget got a lower output cap")
	}
}
