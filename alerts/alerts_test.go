package alerts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/alerts"
	"tollgate/auth/authtest"
	"tollgate/gateway"
	"tollgate/webhook"
	"tollgate/webhook/webhooktest"
)

// clock is a test clock whose After advances it at once (and notes the
// wait), so retries need no sleeping.
type clock struct {
	*authtest.Clock
	mu    sync.Mutex
	waits []time.Duration
}

func newClock() *clock {
	return &clock{Clock: authtest.NewClock(time.Date(2026, 12, 14, 9, 30, 0, 0, time.UTC))}
}

func (c *clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	c.Advance(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

func (c *clock) waited() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// outcomes collects Config.OnOutcome.
type outcomes struct {
	mu  sync.Mutex
	got []string
}

func (o *outcomes) add(s string) { o.mu.Lock(); o.got = append(o.got, s); o.mu.Unlock() }

func (o *outcomes) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.got...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

func start(t *testing.T, cfg alerts.Config) *alerts.Notifier {
	t.Helper()
	n, err := alerts.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n
}

func alert(c *clock, pct int) gateway.BudgetAlert {
	now := c.Now()
	return gateway.BudgetAlert{Scope: "key", ID: "key_1", AccountID: "acct_1", Percent: pct,
		Spent: 12_400_000, Budget: 15_500_000, Currency: "EUR", Month: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC), At: now}
}

// A receiver that fails twice (a 500, then a hang past the timeout) gets
// the alert a third time: every attempt signed with the secret, the same
// webhook-id and the same body each time, after the back-off's waits; a
// log line per failure, without the secret or the URL's token.
func TestAlertRetriedWithStableIDUntilDelivered(t *testing.T) {
	c := newClock()
	secret := webhook.NewSecret()
	rcv := webhooktest.NewReceiver(t, func(n int) int { return [...]int{500, 0, 204}[min(n, 3)-1] })
	var out outcomes
	var logs bytes.Buffer // read after Stop
	n := start(t, alerts.Config{URL: rcv.URL + "/hooks/budget?token=s3cr3t", Secret: secret, Timeout: 300 * time.Millisecond,
		Retry: webhook.Backoff{First: 10 * time.Second, Max: time.Minute, Attempts: 5}, Now: c.Now, After: c.After,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), OnOutcome: out.add})
	a := alert(c, 80)
	n.Alert(a)
	waitFor(t, "delivered", func() bool { return len(out.list()) == 3 })
	n.Stop(context.Background())

	if got := strings.Join(out.list(), ","); got != "retry,retry,delivered" {
		t.Errorf("outcomes %s, want retry,retry,delivered", got)
	}
	if w := c.waited(); len(w) != 2 || w[0] != 10*time.Second || w[1] != 20*time.Second {
		t.Errorf("waits between attempts %v, want [10s 20s]", w)
	}
	ds := rcv.Deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	id := ds[0].ID()
	if id != alerts.MessageID(a) || !strings.HasPrefix(id, "msg_") {
		t.Errorf("webhook-id %q, want %q", id, alerts.MessageID(a))
	}
	for i, d := range ds {
		if err := d.Verify(secret, c.Now()); err != nil {
			t.Errorf("attempt %d: the signature does not verify with the secret: %v", i+1, err)
		}
		if d.ID() != id || !bytes.Equal(d.Body, ds[0].Body) {
			t.Errorf("attempt %d: webhook-id %q body %s; want the first attempt's %q %s", i+1, d.ID(), d.Body, id, ds[0].Body)
		}
		if ct := d.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	if ds[0].Header.Get(webhook.HeaderTimestamp) == ds[2].Header.Get(webhook.HeaderTimestamp) {
		t.Error("webhook-timestamp is the same on the first and the third attempt; want each attempt's time")
	}
	var body map[string]any
	if err := json.Unmarshal(ds[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "budget.threshold_reached", "timestamp": "2026-12-14T09:30:00Z", "data": map[string]any{
		"scope": "key", "id": "key_1", "account_id": "acct_1", "percent": 80.0, "spent": "12.400000", "budget": "15.500000",
		"currency": "EUR", "month": "2026-12", "resets_at": "2027-01-01T00:00:00Z"}}
	if g, w := mustJSON(t, body), mustJSON(t, want); g != w {
		t.Errorf("body %s\nwant %s", g, w)
	}
	l := logs.String()
	if strings.Count(l, "budget alert webhook attempt failed") != 2 || !strings.Contains(l, `"status":500`) || !strings.Contains(l, id) {
		t.Errorf("want two failure lines (one with status 500) naming %s:\n%s", id, l)
	}
	if strings.Contains(l, "s3cr3t") || strings.Contains(l, strings.TrimPrefix(secret, "whsec_")) {
		t.Errorf("the log holds the URL's token or the secret:\n%s", l)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The same budget, month and threshold always has the same webhook-id;
// another threshold, budget or month another.
func TestMessageID(t *testing.T) {
	c := newClock()
	a := alert(c, 50)
	b := a
	b.At, b.Spent = b.At.Add(time.Hour), b.Spent+1 // sent again later, by another replica
	if alerts.MessageID(a) != alerts.MessageID(b) {
		t.Error("the same alert got two ids")
	}
	seen := map[string]bool{alerts.MessageID(a): true}
	for _, other := range []gateway.BudgetAlert{alert(c, 80), {Scope: "account", ID: "key_1", Percent: 50, Month: a.Month},
		{Scope: "key", ID: "key_2", Percent: 50, Month: a.Month}, {Scope: "key", ID: "key_1", Percent: 50, Month: a.Month.AddDate(0, 1, 0)}} {
		if id := alerts.MessageID(other); seen[id] {
			t.Errorf("%+v: id %s already used", other, id)
		} else {
			seen[id] = true
		}
	}
}

// A receiver that always fails: Attempts attempts, then the alert is given
// up, logged as an error and counted.
func TestAlertGivesUp(t *testing.T) {
	c := newClock()
	secret := webhook.NewSecret()
	rcv := webhooktest.NewReceiver(t, func(int) int { return 503 })
	var out outcomes
	var logs bytes.Buffer // read after Stop
	n := start(t, alerts.Config{URL: rcv.URL, Secret: secret, Retry: webhook.Backoff{First: time.Second, Max: 2 * time.Second, Attempts: 4},
		Now: c.Now, After: c.After, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), OnOutcome: out.add})
	n.Alert(alert(c, 100))
	waitFor(t, "given up", func() bool { return len(out.list()) == 4 })
	n.Stop(context.Background()) // nothing more is sent
	if got := strings.Join(out.list(), ","); got != "retry,retry,retry,gave_up" {
		t.Errorf("outcomes %s", got)
	}
	if w := c.waited(); len(w) != 3 || w[2] != 2*time.Second {
		t.Errorf("waits %v, want [1s 2s 2s]", w)
	}
	if !strings.Contains(logs.String(), "budget alert webhook not delivered; giving up") {
		t.Errorf("no give-up line:\n%s", logs.String())
	}
	if len(rcv.Deliveries()) != 4 {
		t.Errorf("%d deliveries, want 4", len(rcv.Deliveries()))
	}
}

// Alert never blocks: with a receiver that hangs, the queue fills and what
// does not fit is dropped and counted. Stop gives each queued alert one
// last attempt (cut when Stop's context ends), then drops it.
func TestAlertQueueBoundedAndStop(t *testing.T) {
	c := newClock()
	secret := webhook.NewSecret()
	rcv := webhooktest.NewReceiver(t, func(int) int { return 0 })
	var out outcomes
	n, err := alerts.New(alerts.Config{URL: rcv.URL, Secret: secret, Queue: 2, Timeout: time.Minute, Now: c.Now, After: c.After, OnOutcome: out.add})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	begin := time.Now()
	for _, pct := range []int{50, 80, 100} {
		n.Alert(alert(c, pct))
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("3 alerts took %v to queue", took)
	}
	if got := strings.Join(out.list(), ","); got != "dropped" {
		t.Errorf("outcomes %s, want one dropped (the queue holds 2)", got)
	}
	waitFor(t, "the first attempt", func() bool { return len(rcv.Deliveries()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n.Stop(ctx)
	// The attempt under way when Stop's context ended is cut (a retry),
	// then both queued alerts get their last attempt, also cut: dropped.
	if got := strings.Join(out.list(), ","); strings.Count(got, "dropped") != 3 || strings.Contains(got, "delivered") {
		t.Errorf("outcomes after Stop %s, want all three dropped", got)
	}
	before := len(out.list())
	n.Alert(alert(c, 50))
	if got := out.list(); len(got) != before+1 || got[before] != "dropped" {
		t.Errorf("an alert after Stop: outcomes %v, want it dropped", got)
	}
}

func TestCheckURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://alerts.example.com/hook?token=x": true,
		"https://10.0.0.5/hook":                   true, // the operator's own network
		"http://127.0.0.1:9000/hook":              true,
		"http://[::1]:9000/hook":                  true,
		"http://localhost:9000/hook":              true,
		"http://alerts.example.com/hook":          false,
		"http://10.0.0.5/hook":                    false,
		"https://user:pw@alerts.example.com/":     false,
		"alerts.example.com/hook":                 false,
	} {
		if err := alerts.CheckURL(raw); (err == nil) != ok {
			t.Errorf("CheckURL(%s) = %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestNewRefusesBadSecret(t *testing.T) {
	for _, s := range []string{"", "hunter2hunter2hunter2hunter2", "whsec_c2hvcnQ="} {
		_, err := alerts.New(alerts.Config{URL: "https://alerts.example.com/", Secret: s})
		if err == nil || !strings.Contains(err.Error(), "secret") || (s != "" && strings.Contains(err.Error(), s)) {
			t.Errorf("New with secret %q: %v; want an error about the secret that does not repeat it", s, err)
		}
	}
	if _, err := alerts.New(alerts.Config{URL: "http://alerts.example.com/", Secret: webhook.NewSecret()}); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("New with a plain http URL: %v", err)
	}
}
