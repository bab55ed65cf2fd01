package gateway

import (
	"context"
	"sort"
	"time"
	"tollgate"

	"tollgate/auth"
	"tollgate/inference"
	"tollgate/metering"
)

// Models returns the models and tasks key may use, sorted by name, under
// their public names, each model with its caps lowered to the key's plan
// (what a call would get: see allow). A key whose plan is not in the catalog
// gets plan_not_found, as its calls do.
func (g *Gateway) Models(key auth.Key) ([]inference.Model, []inference.Task, error) {
	cat := g.inf.Catalog()
	var models []inference.Model
	for _, m := range cat.ModelList() {
		if !key.AllowsModel(m.Name) {
			continue
		}
		m, err := g.allow(Caller{Key: key}, m)
		if err != nil {
			return nil, nil, err
		}
		models = append(models, m)
	}
	var tasks []inference.Task
	for _, t := range cat.Tasks {
		if key.AllowsModel(t.Model) {
			tasks = append(tasks, t)
		}
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].Name < tasks[j].Name })
	return models, tasks, nil
}

// Usage runs the usage report q (q.KeyID "" for every key).
func (g *Gateway) Usage(ctx context.Context, q metering.Query) ([]metering.Row, error) {
	return g.usage.Summary(ctx, q)
}

// Quota is a key's monthly allowance and what is left of it. Remaining
// fields are nil where the key has no such quota.
type Quota struct {
	MonthlyTokens     int64
	RemainingTokens   *int64
	MonthlyRequests   int64
	RemainingRequests *int64
	MonthlyBudget     tollgate.Money
	RemainingBudget   *tollgate.Money
	ResetsAt          time.Time
}

// Quota reports key's monthly quotas and what is left of them now, from
// the in-memory counters of committed usage (no database query).
func (g *Gateway) Quota(key auth.Key) Quota {
	return quotaOf(g.Limits(key), g.ledger.Month(key.ID), g.now())
}

// AccountUsage is what /usage tells a key about its account: the account,
// its keys' committed usage this month, and its shared monthly quotas.
type AccountUsage struct {
	Account auth.Account
	Month   metering.Totals
	Quota   Quota
}

// AccountUsage reports on the account owning key, from the in-memory
// counters (no usage query); ok is false for a key without an account.
func (g *Gateway) AccountUsage(ctx context.Context, key auth.Key) (u AccountUsage, ok bool, err error) {
	if key.AccountID == "" || g.accounts == nil {
		return u, false, nil
	}
	a, lim, err := g.AccountLimits(ctx, key)
	if err != nil && a.ID == "" {
		return u, false, err
	}
	now := g.now()
	used := g.ledger.AccountMonth(a.ID)
	return AccountUsage{Account: a, Month: used, Quota: quotaOf(lim, used, now)}, true, nil
}

// quotaOf is what is left of lim's monthly quotas after used.
func quotaOf(lim tollgate.Limits, used metering.Totals, now time.Time) Quota {
	q := Quota{MonthlyTokens: lim.MonthlyTokens, MonthlyRequests: lim.MonthlyRequests, ResetsAt: metering.NextMonthStart(now)}
	if lim.MonthlyTokens > 0 {
		left := max(0, lim.MonthlyTokens-used.TotalTokens())
		q.RemainingTokens = &left
	}
	if lim.MonthlyRequests > 0 {
		left := max(0, lim.MonthlyRequests-used.Requests)
		q.RemainingRequests = &left
	}
	if lim.MonthlyBudget > 0 {
		q.MonthlyBudget = lim.MonthlyBudget
		left := max(0, lim.MonthlyBudget-used.Cost)
		q.RemainingBudget = &left
	}
	return q
}
