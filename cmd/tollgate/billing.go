package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"tollgate/alerts"
	"tollgate/billing"
	"tollgate/billing/stripemeter"
	"tollgate/handlers"
	"tollgate/storage"
)

// billingFlags configure the Stripe usage export. The secret key comes from
// the environment only (STRIPE_SECRET_KEY), never from a flag, so it is in
// no process listing and no shell history.
type billingFlags struct {
	key           string
	apiURL        string
	interval      time.Duration
	delay         time.Duration
	since         string
	tokensEvent   string
	requestsEvent string
	costEvent     string
}

func (b *billingFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	b.key = getenv("STRIPE_SECRET_KEY")
	fs.StringVar(&b.apiURL, "stripe-api-url", getenv("TOLLGATE_STRIPE_API_URL"), "Stripe's API base URL (env TOLLGATE_STRIPE_API_URL; default https://api.stripe.com; tests point it at stripe-mock)")
	fs.DurationVar(&b.interval, "stripe-interval", time.Minute, "with STRIPE_SECRET_KEY: usage is summed per account over intervals this long and sent as one meter event per account, interval and meter")
	fs.DurationVar(&b.delay, "stripe-delay", 10*time.Second, "how long after an interval ends it is sent, so usage still on its way to the database arrives first (later usage goes in a later event, never lost; 0: at once)")
	fs.StringVar(&b.since, "stripe-since", "", "the first export also sends usage since this time (RFC 3339 or YYYY-MM-DD, at most 35 days ago; default: from the first export on); ignored once the exporter has run")
	fs.StringVar(&b.tokensEvent, "stripe-tokens-event", "tollgate_tokens", "meter event name for tokens (prompt + completion); empty: not sent")
	fs.StringVar(&b.requestsEvent, "stripe-requests-event", "", "meter event name for charged requests (status below 500); empty: not sent")
	fs.StringVar(&b.costEvent, "stripe-cost-event", "", "meter event name for cost in micro-units of the catalog's currency (1 USD = 1000000); empty: not sent")
}

// check validates the flags (the key is only checked for presence).
func (b *billingFlags) check(now time.Time) (time.Time, error) {
	if b.interval < time.Second || b.delay < 0 {
		return time.Time{}, &usageError{"--stripe-interval must be at least 1s and --stripe-delay not negative"}
	}
	for _, name := range []string{b.tokensEvent, b.requestsEvent, b.costEvent} {
		if strings.ContainsAny(name, " \t\n") || len(name) > 100 {
			return time.Time{}, &usageError{fmt.Sprintf("--stripe-*-event %q: an event name has no spaces and at most 100 characters, as in the meter you created in Stripe", name)}
		}
	}
	if b.tokensEvent == "" && b.requestsEvent == "" && b.costEvent == "" {
		return time.Time{}, &usageError{"--stripe-tokens-event, --stripe-requests-event and --stripe-cost-event are all empty: nothing to send"}
	}
	if b.apiURL != "" {
		// The same rule as the operator's alert webhook: https, or plain
		// http to a loopback host only (the key would travel in clear).
		if err := alerts.CheckURL(b.apiURL); err != nil {
			return time.Time{}, &usageError{fmt.Sprintf("--stripe-api-url %q: %v", b.apiURL, err)}
		}
	}
	if b.since == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, b.since)
	if err != nil {
		if t, err = time.Parse(time.DateOnly, b.since); err != nil {
			return time.Time{}, &usageError{fmt.Sprintf("--stripe-since %q: want RFC 3339 (2026-12-01T00:00:00Z) or a date (2026-12-01)", b.since)}
		}
	}
	if now.Sub(t) > 35*24*time.Hour {
		return time.Time{}, &usageError{fmt.Sprintf("--stripe-since %s: Stripe takes meter events at most 35 days old", b.since)}
	}
	return t, nil
}

// exporter is the running Stripe export, or nil when STRIPE_SECRET_KEY is
// not set.
type exporter struct {
	exp  *billing.Exporter
	stop func()
}

// startBilling starts the Stripe usage export when STRIPE_SECRET_KEY is set.
// flush is the usage journal's Flush (nil without one). The returned stop
// ends it and gives its lease up.
func startBilling(ctx context.Context, db storage.Store, flush func(context.Context) error, metrics *handlers.Metrics,
	log *slog.Logger, now func() time.Time, f serveFlags) (*exporter, error) {
	b := f.billing
	if strings.TrimSpace(b.key) == "" {
		log.Info("usage is not sent to Stripe (STRIPE_SECRET_KEY not set)")
		return nil, nil
	}
	since, err := b.check(now())
	if err != nil {
		return nil, err
	}
	sender, err := stripemeter.New(stripemeter.Config{Key: b.key, URL: b.apiURL})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	exp, err := billing.New(billing.Config{Store: db, Sender: sender,
		Meters:   billing.Meters{Tokens: b.tokensEvent, Requests: b.requestsEvent, Cost: b.costEvent},
		Interval: b.interval, Delay: b.delay, Since: since, Flush: flush, Owner: host + "/" + f.addr,
		OnEvents: metrics.BillingEvents, Now: now, Logger: log})
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	metrics.WatchBilling(exp.Lag)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); exp.Run(runCtx) }()
	log.Info("sending usage to Stripe meter events", "api", apiOrDefault(b.apiURL), "interval", b.interval.String(),
		"tokens_event", b.tokensEvent, "requests_event", b.requestsEvent, "cost_event", b.costEvent)
	return &exporter{exp: exp, stop: sync.OnceFunc(func() { cancel(); <-done })}, nil
}

func apiOrDefault(u string) string {
	if u == "" {
		return "https://api.stripe.com"
	}
	return u
}
