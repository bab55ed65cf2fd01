package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tollgate/billing/billingtest"
)

// testStripeKey is a test-mode key in the shape stripe-mock wants.
const testStripeKey = "sk_test_tollgate0e2e0secret0key"

// billingView is the part of GET /admin/billing the tests read.
type billingView struct {
	Enabled bool `json:"enabled"`
	Leader  bool `json:"leader"`
	Cursor  *struct {
		Before time.Time `json:"before"`
	} `json:"cursor"`
	Pending    *json.RawMessage `json:"pending"`
	LastError  string           `json:"last_error"`
	EventsSent int64            `json:"events_sent"`
	Batches    int64            `json:"batches"`
}

func getBilling(t *testing.T, url, admin string) billingView {
	t.Helper()
	var v billingView
	wantStatus(t, "GET /admin/billing", send(t, http.DefaultClient, "GET", url+"/admin/billing", "", withKey(admin)), 200, &v)
	return v
}

// metric reads one sample of /metrics: series is the name with its labels
// as printed (`name{label="v"}`, or the bare name); 0 when absent.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	x := send(t, http.DefaultClient, "GET", url+"/metrics", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(string(x.body))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// The real binary sends usage to Stripe's mock server through a proxy that
// keeps what Stripe would. Stripe refuses a few calls, then the process is
// killed (-9) while Stripe has accepted events of a batch whose answers it
// never heard; after a restart, the events Stripe holds add up exactly to
// the usage rows of the accounts with a Stripe customer, each interval once,
// and the secret key is in no output.
func TestStripeExportSurvivesRefusalsAndKill9(t *testing.T) {
	proxy, stripeURL := billingtest.StartStripe(t)
	fake := newFake(t)
	db := filepath.Join(t.TempDir(), "t.db")
	_, admin := createKeyWithID(t, db, "--name", "admin", "--scopes", "admin")
	account := func(args ...string) string {
		var a struct{ ID string }
		out := cli(t, append([]string{"accounts", "create", "--json", "--db", db}, args...)...)
		if err := json.Unmarshal([]byte(out), &a); err != nil || a.ID == "" {
			t.Fatalf("accounts create printed %q", out)
		}
		return a.ID
	}
	acctA, acctB := account("--name", "A", "--stripe-customer", "cus_A"), account("--name", "B", "--stripe-customer", "cus_B")
	acctC := account("--name", "C (no customer)")
	customerOf := map[string]string{}
	var keys []string
	for _, k := range []struct{ acct, cus string }{{acctA, "cus_A"}, {acctA, "cus_A"}, {acctB, "cus_B"}, {acctC, ""}, {"", ""}} {
		args := []string{"--name", "k"}
		if k.acct != "" {
			args = append(args, "--account", k.acct)
		}
		id, secret := createKeyWithID(t, db, args...)
		customerOf[id] = k.cus
		keys = append(keys, secret)
	}
	env := []string{"STRIPE_SECRET_KEY=" + testStripeKey}
	priced := writeFile(t, "priced.yaml", tinyCatalog(fake.URL, "tiny")+"    price: {input_per_1k: 1, output_per_1k: 2}\n")
	args := []string{"--models", priced, "--stripe-api-url", stripeURL, "--stripe-interval", "1s", "--stripe-delay", "2s",
		"--stripe-requests-event", "tollgate_requests", "--stripe-cost-event", "tollgate_cost"}
	traffic := func(url string, d time.Duration) time.Time {
		hc := &http.Client{Timeout: 10 * time.Second}
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			if _, err := generateID(context.Background(), hc, url, keys[i%len(keys)]); err != nil {
				t.Fatalf("generate: %v", err)
			}
		}
		return time.Now()
	}

	p := startBinaryEnv(t, fake, db, env, args...)
	proxy.Refuse(3)
	traffic(p.url, 2500*time.Millisecond)
	eventually(t, 20*time.Second, "three refused meter events counted", func() bool {
		return metric(t, p.url, `tollgate_billing_events_total{outcome="failed"}`) >= 3
	})

	// Stripe accepts the next events but their answers never arrive: the
	// process dies with its batch pending.
	release := proxy.Hold()
	eventually(t, 20*time.Second, "an accepted event whose answer is held", func() bool {
		_, holding := proxy.Calls()
		return holding >= 1
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.wait(t, 10*time.Second)
	release()
	out := p.out.String()

	p = startBinaryEnv(t, fake, db, env, args...)
	last := traffic(p.url, 1500*time.Millisecond)
	eventually(t, 30*time.Second, "the export past the last request", func() bool {
		v := getBilling(t, p.url, admin)
		return v.Cursor != nil && v.Cursor.Before.After(last) && v.Pending == nil
	})
	v := getBilling(t, p.url, admin)
	if !v.Enabled || !v.Leader || v.LastError != "" || v.EventsSent == 0 || v.Batches == 0 {
		t.Fatalf("GET /admin/billing after catching up = %+v", v)
	}

	want := map[string]int64{}
	for _, r := range exportUsage(t, db) {
		cus := customerOf[r.KeyID]
		if cus == "" {
			continue
		}
		want[cus+"/tollgate_tokens"] += r.TotalTokens
		want[cus+"/tollgate_cost"] += r.CostMicros
		if r.Status < 500 {
			want[cus+"/tollgate_requests"]++
		}
	}
	got := proxy.Totals()
	if fmt.Sprint(got) != fmt.Sprint(want) || len(want) != 6 || want["cus_A/tollgate_cost"] == 0 {
		t.Fatalf("Stripe holds %v\nthe usage rows say %v", got, want)
	}
	if rep := proxy.RepeatedIntervals(); len(rep) > 0 {
		t.Fatalf("intervals sent as more than one event: %v", rep)
	}
	if proxy.Duplicates() == 0 {
		t.Fatal("no event was sent twice: the kill did not land mid-batch, so the test showed nothing")
	}
	if out += p.out.String(); strings.Contains(out, testStripeKey) || strings.Contains(out, "tollgate0e2e0secret") {
		t.Fatal("the Stripe secret key appears in the server's output")
	}
}

// Without STRIPE_SECRET_KEY nothing is sent and GET /admin/billing says how
// to turn the export on.
func TestBillingOffWithoutAKey(t *testing.T) {
	srv, _ := serveOnFake(t)
	_, admin := createKeyWithID(t, srv.db, "--name", "admin", "--scopes", "admin")
	var v struct {
		Enabled bool   `json:"enabled"`
		Hint    string `json:"hint"`
	}
	wantStatus(t, "GET /admin/billing", send(t, http.DefaultClient, "GET", srv.url+"/admin/billing", "", withKey(admin)), 200, &v)
	if v.Enabled || !strings.Contains(v.Hint, "STRIPE_SECRET_KEY") {
		t.Fatalf("GET /admin/billing without a key = %+v", v)
	}
}
