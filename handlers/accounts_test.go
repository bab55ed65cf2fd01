package handlers_test

// Subscriber accounts through the admin API, and their monthly quotas
// shared by all their keys: exact under concurrency, on top of each key's
// own limits, reported by GET /usage; keys without an account unaffected.

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	"tollgate/auth"
)

type accountJSON struct {
	ID               string      `json:"id"`
	Name             string      `json:"name"`
	StripeCustomerID string      `json:"stripe_customer_id"`
	Plan             string      `json:"plan"`
	Limits           auth.Limits `json:"limits"`
}

func TestAccountsAdminAPI(t *testing.T) {
	fake := newFakeOllama(t, fixedCounts)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	as := func(secret string) []string { return []string{"X-API-Key", secret} }

	var a accountJSON
	ts.doJSON(t, "POST", "/admin/accounts", map[string]any{"name": "Acme Ltd", "stripe_customer_id": "cus_123",
		"limits": map[string]any{"monthly_requests": 10}}, http.StatusCreated, &a, as(admin)...)
	if a.ID == "" || a.Name != "Acme Ltd" || a.StripeCustomerID != "cus_123" || a.Limits.MonthlyRequests != 10 {
		t.Fatalf("created account = %+v", a)
	}
	var got accountJSON
	ts.doJSON(t, "GET", "/admin/accounts/"+a.ID, nil, http.StatusOK, &got, as(admin)...)
	if got != a {
		t.Fatalf("GET account = %+v, want %+v", got, a)
	}
	var list struct{ Accounts []accountJSON }
	ts.doJSON(t, "GET", "/admin/accounts", nil, http.StatusOK, &list, as(admin)...)
	if len(list.Accounts) != 1 || list.Accounts[0] != a {
		t.Fatalf("account list = %+v", list)
	}
	ts.doJSON(t, "PATCH", "/admin/accounts/"+a.ID, map[string]any{"name": "Acme"}, http.StatusOK, &got, as(admin)...)
	if got.Name != "Acme" || got.StripeCustomerID != "cus_123" || got.Limits.MonthlyRequests != 10 {
		t.Fatalf("patched account = %+v", got)
	}
	ts.doError(t, "GET", "/admin/accounts/acct_nope", nil, http.StatusNotFound, "account_not_found", nil, as(admin)...)
	ts.doError(t, "PATCH", "/admin/accounts/acct_nope", map[string]any{"name": "x"}, http.StatusNotFound, "account_not_found", nil, as(admin)...)
	ts.doError(t, "POST", "/admin/accounts", map[string]any{"name": "x", "limits": map[string]any{"tokens_per_minute": 5}},
		http.StatusBadRequest, "invalid_request", []string{"monthly"}, as(admin)...)
	ts.doError(t, "POST", "/admin/accounts", map[string]any{"name": "x", "limits": map[string]any{"monthly_budget": "-1"}},
		http.StatusBadRequest, "invalid_request", []string{"monthly_budget"}, as(admin)...)
	ts.doError(t, "POST", "/admin/accounts", map[string]any{"name": "x", "plan": "nope"},
		http.StatusBadRequest, "invalid_request", []string{"plan"}, as(admin)...)
	// Only admins.
	ts.doError(t, "GET", "/admin/accounts", nil, http.StatusForbidden, "insufficient_scope", nil)

	// Keys join an account when created, move, and leave.
	var created struct {
		Info struct {
			ID        string `json:"id"`
			AccountID string `json:"account_id"`
		} `json:"info"`
	}
	ts.doJSON(t, "POST", "/admin/keys", map[string]any{"name": "acme-prod", "account_id": a.ID}, http.StatusCreated, &created, as(admin)...)
	if created.Info.AccountID != a.ID {
		t.Fatalf("created key's account = %q, want %s", created.Info.AccountID, a.ID)
	}
	ts.doError(t, "POST", "/admin/keys", map[string]any{"name": "x", "account_id": "acct_nope"},
		http.StatusBadRequest, "invalid_request", []string{"account_id"}, as(admin)...)
	var key struct {
		AccountID string `json:"account_id"`
	}
	ts.doJSON(t, "PATCH", "/admin/keys/"+created.Info.ID, map[string]any{"account_id": ""}, http.StatusOK, &key, as(admin)...)
	if key.AccountID != "" {
		t.Fatalf("detached key still has account %q", key.AccountID)
	}
}

func TestAccountQuotaSharedByItsKeys(t *testing.T) {
	fake := newFakeOllama(t, fixedCounts)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	const quota = 7
	var a accountJSON
	ts.doJSON(t, "POST", "/admin/accounts", map[string]any{"name": "Acme", "limits": map[string]any{"monthly_requests": quota}},
		http.StatusCreated, &a, "X-API-Key", admin)
	var keys []string
	var ids []string
	for i := range 3 {
		id, secret := ts.newKey(t, auth.Spec{Name: "acme-" + strconv.Itoa(i), Account: a.ID})
		keys, ids = append(keys, secret), append(ids, id)
	}
	_, other := ts.newKey(t, auth.Spec{Name: "no account"})

	// 30 requests at once from the account's three keys: exactly quota pass.
	const clients = 30
	statuses := make([]int, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			resp, err := ts.send(t.Context(), "POST", "/generate", generateBody, "X-API-Key", keys[i%len(keys)])
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case http.StatusOK:
			ok++
		case http.StatusPaymentRequired:
		default:
			t.Errorf("status %d, want 200 or 402", s)
		}
	}
	if ok != quota {
		t.Fatalf("%d of %d requests passed an account quota of %d", ok, clients, quota)
	}
	rows := 0
	for _, id := range ids {
		rows += len(ts.usageRows(t, id))
	}
	if rows != quota {
		t.Fatalf("%d usage rows for the account's keys, want %d", rows, quota)
	}
	// Used up: every key of the account is refused, for good this month,
	// naming the account; a key without an account is not.
	resp, _ := ts.doError(t, "POST", "/generate", generateBody, http.StatusPaymentRequired, "quota_exceeded",
		[]string{"account's monthly request quota (7 requests) is used up"}, "X-API-Key", keys[2])
	if resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("x-should-retry = %q, want false", resp.Header.Get("x-should-retry"))
	}
	spend(t, ts, other)

	// /usage answers for the key and for its account.
	var u struct {
		Totals  struct{ Requests int64 }
		Account *struct {
			ID    string `json:"id"`
			Month struct {
				Requests    int64 `json:"requests"`
				TotalTokens int64 `json:"total_tokens"`
			} `json:"month"`
			Quota struct {
				MonthlyRequests   int64  `json:"monthly_requests"`
				RemainingRequests *int64 `json:"remaining_requests"`
			} `json:"quota"`
		} `json:"account"`
	}
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, &u, "X-API-Key", keys[0])
	if u.Account == nil || u.Account.ID != a.ID || u.Account.Month.Requests != quota || u.Account.Month.TotalTokens != quota*tokensPerGenerate ||
		u.Account.Quota.MonthlyRequests != quota || u.Account.Quota.RemainingRequests == nil || *u.Account.Quota.RemainingRequests != 0 {
		t.Fatalf("/usage account = %+v", u.Account)
	}
	var plain map[string]any
	ts.doJSON(t, "GET", "/usage", nil, http.StatusOK, &plain, "X-API-Key", other)
	if _, has := plain["account"]; has {
		t.Fatalf("/usage of a key without an account has an account: %v", plain)
	}

	// Raising the account's quota (PATCH) lets its keys in again.
	ts.doJSON(t, "PATCH", "/admin/accounts/"+a.ID, map[string]any{"limits": map[string]any{"monthly_requests": quota + 1}},
		http.StatusOK, nil, "X-API-Key", admin)
	spend(t, ts, keys[1])
}

func TestAccountTokenQuotaOnTopOfKeyLimits(t *testing.T) {
	fake := newFakeOllama(t, fixedCounts)
	ts := newTestServer(t, fakeCatalog(fake.URL, "10s"))
	_, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	var a accountJSON
	ts.doJSON(t, "POST", "/admin/accounts", map[string]any{"name": "Acme", "limits": map[string]any{"monthly_tokens": 100 * tokensPerGenerate}},
		http.StatusCreated, &a, "X-API-Key", admin)
	// The key's own quota is smaller than the account's: it still applies.
	_, small := ts.newKey(t, auth.Spec{Account: a.ID, Limits: auth.Limits{MonthlyRequests: 1}})
	spend(t, ts, small)
	ts.doError(t, "POST", "/generate", generateBody, http.StatusPaymentRequired, "quota_exceeded",
		[]string{"this key's monthly request quota"}, "X-API-Key", small)
}
