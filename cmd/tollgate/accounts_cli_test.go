package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"tollgate/auth"
	"tollgate/inference/ollamatest"
	"tollgate/internal/redistest"
)

// The operator manages accounts from the command line and puts keys in
// them; mistakes are usage errors naming the flag.
// The first account may come before the first key: accounts create makes
// the database, as keys create does.
func TestAccountsCreateMakesTheDatabase(t *testing.T) {
	db := filepath.Join(t.TempDir(), "fresh.db")
	r := mustCLI(t, env(), "accounts", "create", "--name", "Acme Ltd", "--stripe-customer", "cus_123", "--json", "--db", db)
	var a auth.Account
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || !strings.HasPrefix(a.ID, "acct_") {
		t.Fatalf("accounts create on a new database = %q (%v)", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "created new database") {
		t.Errorf("stderr %q does not say the database was created", r.stderr)
	}
	if r = mustCLI(t, env(), "keys", "create", "--name", "acme-prod", "--account", a.ID, "--db", db); !strings.Contains(r.stdout, "tg_") {
		t.Fatalf("keys create in the new account:\n%s", r.stdout)
	}
}

func TestAccountsCLI(t *testing.T) {
	db := filepath.Join(t.TempDir(), "t.db")
	mustCLI(t, env(), "keys", "create", "--name", "first", "--db", db) // makes the database
	var a auth.Account
	r := mustCLI(t, env(), "accounts", "create", "--name", "Acme Ltd", "--stripe-customer", "cus_123", "--monthly-requests", "100", "--json", "--db", db)
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || !strings.HasPrefix(a.ID, "acct_") || a.StripeCustomerID != "cus_123" || a.Limits.MonthlyRequests != 100 {
		t.Fatalf("accounts create --json = %q (%v)", r.stdout, err)
	}
	r = mustCLI(t, env(), "accounts", "list", "--db", db)
	if !strings.Contains(r.stdout, a.ID) || !strings.Contains(r.stdout, "Acme Ltd") || !strings.Contains(r.stdout, "cus_123") {
		t.Fatalf("accounts list:\n%s", r.stdout)
	}
	r = mustCLI(t, env(), "accounts", "update", a.ID, "--monthly-tokens", "5000", "--monthly-budget", "250.5", "--json", "--db", db)
	var up auth.Account
	if err := json.Unmarshal([]byte(r.stdout), &up); err != nil || up.Limits.MonthlyTokens != 5000 || up.Limits.MonthlyRequests != 100 ||
		up.Limits.MonthlyBudget != 250_500_000 || up.Name != "Acme Ltd" {
		t.Fatalf("accounts update kept/changed the wrong fields: %q", r.stdout)
	}
	r = mustCLI(t, env(), "accounts", "show", a.ID, "--db", db)
	if !strings.Contains(r.stdout, "5000") || !strings.Contains(r.stdout, "250.500000") {
		t.Fatalf("accounts show:\n%s", r.stdout)
	}

	var created secretJSON
	r = mustCLI(t, env(), "keys", "create", "--name", "acme-prod", "--account", a.ID, "--monthly-budget", "0.25", "--json", "--db", db)
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Info.AccountID != a.ID || created.Info.Limits.MonthlyBudget != 250_000 {
		t.Fatalf("keys create --account = %q (%v)", r.stdout, err)
	}
	if r := mustCLI(t, env(), "keys", "list", "--db", db); !strings.Contains(r.stdout, a.ID) {
		t.Fatalf("keys list does not show the account:\n%s", r.stdout)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"keys", "create", "--name", "x", "--account", "acct_nope"}, 2, "--account: no account"},
		{[]string{"accounts", "show", "acct_nope"}, 1, "no account with id"},
		{[]string{"accounts", "show"}, 2, "an account id is required"},
		{[]string{"accounts", "create"}, 2, "--name"},
		{[]string{"accounts", "frob"}, 2, "unknown subcommand"},
		{[]string{"keys", "create", "--name", "x", "--monthly-budget", "0.0000001"}, 2, "monthly-budget"},
		{[]string{"accounts", "create", "--name", "x", "--monthly-budget", "-1"}, 2, "monthly-budget"},
	} {
		r := runCLI(env(), append(tc.args, "--db", db)...)
		if exitCode(r.err) != tc.code || r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%v: exit %d, %v; want exit %d mentioning %q", tc.args, exitCode(r.err), r.err, tc.code, tc.want)
		}
	}
}

// An account's monthly quota holds across its keys through the served
// API, and across a restart (seeded from the usage rows of its keys).
func TestAccountQuotaServedAndAfterRestart(t *testing.T) {
	fake := ollamatest.NewServer()
	defer fake.Close()
	models := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	r := startServe(t, env("TOLLGATE_MODELS", models))
	var a auth.Account
	out := cli(t, "accounts", "create", "--name", "Acme", "--monthly-requests", "3", "--json", "--db", r.db)
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatal(err)
	}
	k1 := createKey(t, r.db, "--name", "acme-1", "--account", a.ID)
	k2 := createKey(t, r.db, "--name", "acme-2", "--account", a.ID)
	for i, k := range []string{k1, k2, k1} {
		if got := post(t, r.url+"/generate", k, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("request %d of the account's 3: %d %s", i, got.status, got.body)
		}
	}
	got := post(t, r.url+"/generate", k2, `{"prompt":"hi"}`)
	if got.status != 402 || got.code != "quota_exceeded" || !strings.Contains(got.body, "account's monthly request quota (3 requests)") {
		t.Fatalf("4th request of the account: %d %s", got.status, got.body)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	r2 := startServeOn(t, r.db, env("TOLLGATE_MODELS", models))
	if got := post(t, r2.url+"/generate", k1, `{"prompt":"hi"}`); got.status != 402 || !strings.Contains(got.body, "account's") {
		t.Fatalf("after a restart: %d %s", got.status, got.body)
	}
}

// With --redis, budgets and account quotas are enforced through Redis: a
// key's budget refuses what it cannot pay for, and an account's quota is
// shared by its keys (across replicas: TestReplicasShareAccountBudgetAndQuota).
func TestBudgetAndAccountQuotaWithRedis(t *testing.T) {
	url := redistest.URL(t)
	fake := ollamatest.NewServer(ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 6, EvalCount: 2}))
	defer fake.Close()
	models := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny")+"    price: {input_per_1k: 1, output_per_1k: 0}\n")
	r := startServe(t, env("TOLLGATE_MODELS", models), "--redis", url)
	// "hi" is bounded at 66 prompt tokens (2 bytes + the default overhead
	// of 64): 0.066 reserved, 0.006 spent. After one request 0.064 is left.
	key := createKey(t, r.db, "--name", "budgeted", "--monthly-budget", "0.070")
	if got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`); got.status != 200 {
		t.Fatalf("first request: %d %s", got.status, got.body)
	}
	got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
	if got.status != 402 || got.code != "budget_exceeded" || !strings.Contains(got.body, "only 0.064000 of this key's monthly budget (0.070000) is left") {
		t.Fatalf("second request: %d %s", got.status, got.body)
	}

	var a auth.Account
	if err := json.Unmarshal([]byte(cli(t, "accounts", "create", "--name", "Acme", "--monthly-requests", "2", "--json", "--db", r.db)), &a); err != nil {
		t.Fatal(err)
	}
	k1 := createKey(t, r.db, "--name", "acme-1", "--account", a.ID)
	k2 := createKey(t, r.db, "--name", "acme-2", "--account", a.ID)
	for _, k := range []string{k1, k2} {
		if got := post(t, r.url+"/generate", k, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("account request: %d %s", got.status, got.body)
		}
	}
	if got := post(t, r.url+"/generate", k1, `{"prompt":"hi"}`); got.status != 402 || !strings.Contains(got.body, "account's monthly request quota") {
		t.Fatalf("third request of a 2-request account: %d %s", got.status, got.body)
	}
}
