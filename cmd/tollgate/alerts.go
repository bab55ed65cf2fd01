package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"tollgate/alerts"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/webhook"
)

// alertSecretEnv holds the budget alert webhook's signing secret: from the
// environment only, never a flag (a flag shows in ps and shell history).
const alertSecretEnv = "TOLLGATE_ALERT_WEBHOOK_SECRET"

// alertStopWait bounds, at shutdown, the last attempts for budget alerts
// still queued.
const alertStopWait = 5 * time.Second

// alertFlags configure the budget alert webhook (serve and check-config).
type alertFlags struct {
	url    string
	secret string // from alertSecretEnv, by load
}

func (a *alertFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&a.url, "alert-webhook-url", getenv("TOLLGATE_ALERT_WEBHOOK_URL"),
		"POST budget alerts (a monthly budget at 50, 80, 100 %) here, signed per Standard Webhooks with "+alertSecretEnv+
			"; https://, or http:// to a loopback host (env TOLLGATE_ALERT_WEBHOOK_URL; default off)")
}

// load reads the secret and checks the pair: a URL needs a secret, and
// both must be well formed. The errors never repeat the secret, nor the
// URL (whose path or query may hold a token).
func (a *alertFlags) load(getenv func(string) string) error {
	a.secret = getenv(alertSecretEnv)
	if a.url == "" {
		return nil
	}
	if err := alerts.CheckURL(a.url); err != nil {
		return &usageError{"--alert-webhook-url (env TOLLGATE_ALERT_WEBHOOK_URL): " + err.Error()}
	}
	if a.secret == "" {
		return &usageError{"--alert-webhook-url needs its signing secret in the environment variable " + alertSecretEnv +
			` (a Standard Webhooks secret: whsec_ and the base64 of 24 to 64 random bytes; make one with: echo "whsec_$(openssl rand -base64 32)")`}
	}
	if err := webhook.ParseSecret(a.secret); err != nil {
		return &usageError{alertSecretEnv + ": " + err.Error()}
	}
	return nil
}

// describe says what load found, for check-config and the start-up log.
func (a *alertFlags) describe() string {
	switch {
	case a.url != "":
		u, _ := webhook.ParseURL(a.url)
		return "budget alert webhook: posts to " + u.Scheme + "://" + u.Host + " (path not shown), signed with " + alertSecretEnv
	case a.secret != "":
		return "budget alert webhook: off (" + alertSecretEnv + " is set but --alert-webhook-url is not)"
	}
	return "budget alert webhook: off"
}

// budgetHook is what the gateway calls on a budget alert: the metric and,
// with --alert-webhook-url, the webhook's queue (n).
type budgetHook struct {
	metrics *handlers.Metrics
	n       *alerts.Notifier // nil: no webhook
}

// newBudgetHook returns the hook for a (the flags as load left them). Its
// webhook posts nothing before start.
func newBudgetHook(a alertFlags, metrics *handlers.Metrics, log *slog.Logger, now func() time.Time) (*budgetHook, error) {
	h := &budgetHook{metrics: metrics}
	if a.url == "" {
		if a.secret != "" {
			log.Warn(a.describe())
		}
		return h, nil
	}
	n, err := alerts.New(alerts.Config{URL: a.url, Secret: a.secret, Now: now, Logger: log, OnOutcome: metrics.AlertWebhook})
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	h.n = n
	log.Info("budget alerts are posted to a webhook", "host", n.Host())
	return h, nil
}

// alert fits gateway.Config.OnBudgetAlert.
func (h *budgetHook) alert(b gateway.BudgetAlert) {
	h.metrics.BudgetAlert(b)
	if h.n != nil {
		h.n.Alert(b)
	}
}

func (h *budgetHook) start() {
	if h.n != nil {
		h.n.Start()
	}
}

// stop gives the alerts still queued a last attempt, within alertStopWait;
// call it after the requests and jobs that may alert have finished.
func (h *budgetHook) stop(ctx context.Context) {
	if h.n == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), alertStopWait)
	defer cancel()
	h.n.Stop(sctx)
}

// printAlerts is check-config's part: the budget alert webhook's settings.
func printAlerts(a *alertFlags, getenv func(string) string, stdout io.Writer) error {
	if err := a.load(getenv); err != nil {
		return err
	}
	fmt.Fprintln(stdout, a.describe())
	return nil
}
