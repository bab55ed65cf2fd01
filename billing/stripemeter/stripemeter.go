// Package stripemeter sends billing meter events to Stripe with its Go
// client (github.com/stripe/stripe-go), for the usage exporter in package
// billing: the one place that knows Stripe's API.
package stripemeter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"

	"tollgate/billing"
)

// Config configures a Sender.
type Config struct {
	// Key is the Stripe secret key (or a restricted key allowed to write
	// meter events). It is sent to Stripe only, never logged or shown.
	Key string
	// URL is Stripe's API base URL ("" = https://api.stripe.com); tests
	// point it at stripe-mock.
	URL string
	// Timeout bounds each call (0 = 30 s).
	Timeout time.Duration
	// Transport, if set, carries the calls (tests, proxies).
	Transport http.RoundTripper
}

// Sender sends meter events to Stripe. It is safe for concurrent use.
type Sender struct {
	client *stripe.Client
	key    string
}

var _ billing.Sender = (*Sender)(nil)

// New returns a Sender, or an error when cfg has no key.
func New(cfg Config) (*Sender, error) {
	cfg.Key = strings.TrimSpace(cfg.Key) // a key file's trailing newline would make every call fail
	if cfg.Key == "" {
		return nil, errors.New("stripemeter: no Stripe secret key (STRIPE_SECRET_KEY)")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Timeout: cfg.Timeout, Transport: cfg.Transport},
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull}, // errors reach our log, redacted
		MaxNetworkRetries: stripe.Int64(0),                                // the exporter retries, with back-off
		EnableTelemetry:   stripe.Bool(false),
	}
	if cfg.URL != "" {
		bc.URL = stripe.String(strings.TrimRight(cfg.URL, "/"))
	}
	return &Sender{client: stripe.NewClient(cfg.Key, stripe.WithBackends(stripe.NewBackendsWithConfig(bc))), key: cfg.Key}, nil
}

// Send creates one meter event: event name, the customer as
// payload[stripe_customer_id], the value as payload[value], the identifier
// and the timestamp. An identifier Stripe already holds counts as sent.
// Other failures are *billing.SendError; a refusal that a resend cannot
// fix (a bad key, an unknown meter) is Permanent.
func (s *Sender) Send(ctx context.Context, ev billing.Event) error {
	_, err := s.client.V1BillingMeterEvents.Create(ctx, &stripe.BillingMeterEventCreateParams{
		EventName:  stripe.String(ev.EventName),
		Identifier: stripe.String(ev.Identifier),
		Timestamp:  stripe.Int64(ev.Timestamp.Unix()),
		Payload: map[string]string{
			"stripe_customer_id": ev.CustomerID,
			"value":              strconv.FormatInt(ev.Value, 10),
		},
	})
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		return &billing.SendError{Message: "stripe: " + s.redact(err.Error())}
	}
	if Duplicate(se.HTTPStatusCode, string(se.Code), se.Msg) {
		return nil
	}
	st := se.HTTPStatusCode
	msg := fmt.Sprintf("stripe: %d %s: %s", st, se.Type, s.redact(se.Msg))
	if st == http.StatusBadRequest && strings.Contains(strings.ToLower(se.Msg), "identifier") {
		// Perhaps a duplicate worded in a way Duplicate does not know: the
		// batch would stay pending for good. Say so plainly.
		msg += " (if this says the identifier was already used, the event is in Stripe: report this message to the Tollgate developers)"
	}
	return &billing.SendError{
		Status: st,
		// 409 (a concurrent request with the same idempotency key) and 429
		// (rate limited) pass; other 4xx stay until the operator acts.
		Permanent: st >= 400 && st < 500 && st != http.StatusConflict && st != http.StatusTooManyRequests,
		Message:   msg,
	}
}

// Duplicate reports whether Stripe's error says the event's identifier was
// already used: the event is in Stripe, so sending it again is done.
func Duplicate(status int, code, msg string) bool {
	if status != http.StatusBadRequest {
		return false
	}
	m := strings.ToLower(msg)
	return code == "duplicate_meter_event" || code == "resource_already_exists" ||
		(strings.Contains(m, "identifier") && strings.Contains(m, "already exists"))
}

var secretKey = regexp.MustCompile(`\b([sr]k_(?:live|test)_)[A-Za-z0-9*]+`)

// redact blanks the key, and anything that looks like a Stripe key, in a
// message (a server may echo what it was sent).
func (s *Sender) redact(msg string) string {
	msg = strings.ReplaceAll(msg, s.key, "[redacted]")
	return secretKey.ReplaceAllString(msg, "${1}[redacted]")
}
