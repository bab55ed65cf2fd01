package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/inference/ollamatest"
	"tollgate/webhook"
	"tollgate/webhook/webhooktest"
)

// alertBody is a budget alert's JSON body.
type alertBody struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      struct {
		Scope     string `json:"scope"`
		ID        string `json:"id"`
		AccountID string `json:"account_id"`
		Percent   int    `json:"percent"`
		Spent     string `json:"spent"`
		Budget    string `json:"budget"`
		Currency  string `json:"currency"`
		Month     string `json:"month"`
		ResetsAt  string `json:"resets_at"`
	} `json:"data"`
}

// Spending through the real server crosses 50, 80 and 100 % of a monthly
// budget (a key's, then an account's): the operator's receiver gets
// exactly those three alerts, signed with the secret, each with its own
// webhook-id, the amounts in the money format and the month it resets
// after; the secret is in no log line.
func TestBudgetAlertWebhookEndToEnd(t *testing.T) {
	for _, scope := range []string{"key", "account"} {
		t.Run(scope, func(t *testing.T) {
			clock := authtest.NewClock(time.Date(2026, 12, 14, 9, 30, 0, 0, time.UTC))
			secret := webhook.NewSecret()
			rcv := webhooktest.NewReceiver(t, nil)
			// "hi" is bounded at 6 prompt tokens (2 bytes + overhead 4), and
			// the fake counts 6: each request reserves and costs 0.006.
			fake := newFake(t, ollamatest.WithReply(ollamatest.Reply{PromptEvalCount: 6, EvalCount: 2}))
			models := writeFile(t, "models.yaml", "currency: EUR\n"+tinyCatalog(fake.URL, "tiny")+
				"    limits: {prompt_overhead: 4}\n    price: {input_per_1k: 1, output_per_1k: 0}\n")
			r := startServeAt(t, clock.Now, env("TOLLGATE_MODELS", models, "TOLLGATE_ALERT_WEBHOOK_SECRET", secret),
				"--alert-webhook-url", rcv.URL+"/hooks/budget?token=t0ken")

			var a auth.Account
			args := []string{"accounts", "create", "--name", "Acme", "--json", "--db", r.db}
			if scope == "account" {
				args = append(args, "--monthly-budget", "0.06")
			}
			if err := json.Unmarshal([]byte(cli(t, args...)), &a); err != nil {
				t.Fatal(err)
			}
			keyArgs := []string{"--name", "acme", "--account", a.ID}
			if scope == "key" {
				keyArgs = append(keyArgs, "--monthly-budget", "0.06")
			}
			keyID, key := createKeyWithID(t, r.db, keyArgs...)
			for i := range 10 {
				if x := send(t, nil, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(key)); x.status != 200 {
					t.Fatalf("request %d: %d %s", i+1, x.status, x.body)
				}
			}
			wantError(t, "the 11th request", send(t, nil, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(key)), 402, "budget_exceeded")
			eventually(t, 10*time.Second, "three alerts delivered", func() bool {
				return metric(t, r.url, `tollgate_budget_alert_webhooks_total{outcome="delivered"}`) == 3
			})
			if err := r.stop(t); err != nil { // nothing more may arrive
				t.Fatal(err)
			}

			ds := rcv.Deliveries()
			if len(ds) != 3 {
				t.Fatalf("the receiver got %d alerts, want 3: %+v", len(ds), ds)
			}
			id, accountID := keyID, a.ID
			if scope == "account" {
				id, accountID = a.ID, ""
			}
			ids := map[string]bool{}
			for i, d := range ds {
				pct, spent := []int{50, 80, 100}[i], []string{"0.030000", "0.048000", "0.060000"}[i]
				if err := d.Verify(secret, clock.Now()); err != nil {
					t.Errorf("alert %d: %v", i+1, err)
				}
				var body alertBody
				if err := json.Unmarshal(d.Body, &body); err != nil {
					t.Errorf("alert %d: %s: %v", i+1, d.Body, err)
				}
				b := body.Data
				if body.Type != "budget.threshold_reached" || body.Timestamp != "2026-12-14T09:30:00Z" || b.Scope != scope ||
					b.ID != id || b.AccountID != accountID || b.Percent != pct || b.Spent != spent || b.Budget != "0.060000" ||
					b.Currency != "EUR" || b.Month != "2026-12" || b.ResetsAt != "2027-01-01T00:00:00Z" {
					t.Errorf("alert %d: %s; want %s %s at %d %%, spent %s of 0.060000 EUR, month 2026-12", i+1, d.Body, scope, id, pct, spent)
				}
				if ids[d.ID()] || !strings.HasPrefix(d.ID(), "msg_") {
					t.Errorf("alert %d: webhook-id %q repeated or malformed", i+1, d.ID())
				}
				ids[d.ID()] = true
			}
			out := r.out.String()
			if strings.Contains(out, strings.TrimPrefix(secret, "whsec_")) || strings.Contains(out, "t0ken") {
				t.Errorf("the server's log holds the secret or the URL's token:\n%s", out)
			}
			if strings.Count(out, "monthly budget threshold reached") != 3 {
				t.Errorf("want 3 alert log lines:\n%s", out)
			}
		})
	}
}

// A webhook URL without its secret, a bad secret, or plain http to another
// host stop serve and check-config at once with a usage error that says
// what to do, and never repeats the secret or the URL's token.
func TestAlertWebhookConfigRefused(t *testing.T) {
	const url = "https://alerts.example.com/hook?token=t0ken"
	for _, c := range []struct {
		name   string
		secret string
		url    string
		want   string
	}{
		{"no secret", "", url, "TOLLGATE_ALERT_WEBHOOK_SECRET"},
		{"not whsec_", "hunter2hunter2hunter2hunter2", url, "whsec_"},
		{"too short", "whsec_c2hvcnQ=", url, "24 to 64 bytes"},
		{"plain http", webhook.NewSecret(), "http://alerts.example.com/hook?token=t0ken", "https://"},
	} {
		for _, cmd := range []string{"serve", "check-config"} {
			args := []string{cmd, "--db", t.TempDir() + "/t.db", "--alert-webhook-url", c.url}
			got := runCLI(env("TOLLGATE_ALERT_WEBHOOK_SECRET", c.secret), args...)
			msg := ""
			if got.err != nil {
				msg = got.err.Error()
			}
			if exitCode(got.err) != 2 || !strings.Contains(msg, c.want) || !strings.Contains(strings.ToLower(msg), "alert") {
				t.Errorf("%s with %s: exit %d %q; want 2 and a message naming %q", cmd, c.name, exitCode(got.err), msg, c.want)
			}
			if strings.Contains(msg+got.stdout+got.stderr, "t0ken") || (c.secret != "" && strings.Contains(msg+got.stdout+got.stderr, c.secret)) {
				t.Errorf("%s with %s: the output repeats the URL's token or the secret: %q", cmd, c.name, msg)
			}
		}
	}
}

// check-config says where alerts go (host only) when the pair is right.
func TestCheckConfigShowsAlertWebhook(t *testing.T) {
	fake := newFake(t)
	models := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	var out strings.Builder
	err := run(context.Background(), []string{"check-config", "--models", models, "--alert-webhook-url", "https://alerts.example.com/hook?token=t0ken"},
		env("TOLLGATE_ALERT_WEBHOOK_SECRET", webhook.NewSecret()), time.Now, &out, &out)
	if !strings.Contains(out.String(), "budget alert webhook: posts to https://alerts.example.com") || strings.Contains(out.String(), "t0ken") {
		t.Errorf("check-config (%v) printed:\n%s", err, out.String())
	}
}
