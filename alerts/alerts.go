// Package alerts posts budget alerts (gateway.BudgetAlert) to the
// operator's webhook, signed per Standard Webhooks (package webhook).
//
// Delivery never delays a request: Alert only queues (a bounded queue; an
// alert that does not fit is dropped, logged and counted). One goroutine
// posts the queue in order of due time; an attempt that fails (no 2xx, a
// timeout, a refused connection) is tried again after a back-off, with
// the same webhook-id and the same body, until Attempts is reached. The
// webhook-id is derived from the budget, the month and the threshold, so
// the same alert sent again (by another replica, or after a restart) has
// the same id and the receiver can drop it. The queue lives in memory: an
// alert still waiting when the process stops gets one last attempt during
// Stop, and is dropped if that fails.
package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"tollgate"
	"tollgate/gateway"
	"tollgate/webhook"
)

// EventBudgetThreshold is the type of a budget alert's payload.
const EventBudgetThreshold = "budget.threshold_reached"

// Outcomes, for Config.OnOutcome.
const (
	OutcomeDelivered = "delivered" // a 2xx answered
	OutcomeRetry     = "retry"     // an attempt failed; it is tried again
	OutcomeGaveUp    = "gave_up"   // the last attempt failed
	OutcomeDropped   = "dropped"   // the queue was full, or the process stopped first
)

// Defaults for Config.
const (
	DefaultTimeout = 10 * time.Second
	DefaultQueue   = 1000
)

// DefaultRetry is the schedule of attempts: 10 s after the first failed
// one, doubling up to 10 min between two, 10 attempts in all (the last
// about 40 minutes after the first).
var DefaultRetry = webhook.Backoff{First: 10 * time.Second, Max: 10 * time.Minute, Attempts: 10}

// Config holds what a Notifier needs; URL and Secret are required.
type Config struct {
	URL    string // where alerts are POSTed: see CheckURL
	Secret string // the whsec_ signing secret (webhook.ParseSecret)
	// Timeout bounds one attempt (0: DefaultTimeout).
	Timeout time.Duration
	// Client posts (nil: webhook.NewClient(Timeout, nil)).
	Client *http.Client
	// Queue is how many alerts may wait, retries included (0:
	// DefaultQueue).
	Queue int
	// Retry is the schedule of attempts (zero: DefaultRetry).
	Retry     webhook.Backoff
	Now       func() time.Time                     // nil: time.Now
	After     func(time.Duration) <-chan time.Time // nil: time.After; tests advance a clock instead
	Logger    *slog.Logger                         // nil: discard
	OnOutcome func(outcome string)                 // nil: none; see the Outcome constants
}

// CheckURL checks the operator's alert URL: the shape of every webhook
// URL (webhook.ParseURL), and https, except to a loopback host (127.0.0.0/8,
// ::1, localhost), where plain http is allowed too. Private addresses are
// allowed: the operator chooses them, unlike a job's callback_url.
func CheckURL(raw string) error {
	u, err := webhook.ParseURL(raw)
	if err != nil {
		return err
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return errors.New("must be https:// (plain http:// only to a loopback host such as 127.0.0.1 or localhost)")
	}
	return nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Notifier queues and posts budget alerts. Start starts its goroutine;
// Stop ends it.
type Notifier struct {
	cfg    Config
	host   string // the URL's host, for logs (the path or query may hold a token)
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	queue   []*message
	started bool
	stopped bool
}

// message is one alert on its way.
type message struct {
	id       string
	body     []byte
	alert    gateway.BudgetAlert
	attempts int
	due      time.Time
}

// New returns a Notifier for cfg, or an error saying what is wrong with its
// URL or secret (never repeating the secret).
func New(cfg Config) (*Notifier, error) {
	if err := CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("alert webhook URL: %w", err)
	}
	if err := webhook.ParseSecret(cfg.Secret); err != nil {
		return nil, fmt.Errorf("alert webhook secret: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Client == nil {
		cfg.Client = webhook.NewClient(cfg.Timeout, nil)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Retry == (webhook.Backoff{}) {
		cfg.Retry = DefaultRetry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.OnOutcome == nil {
		cfg.OnOutcome = func(string) {}
	}
	u, _ := webhook.ParseURL(cfg.URL)
	n := &Notifier{cfg: cfg, host: u.Host, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// Host is the host alerts go to (for a start-up log line: the URL's path
// and query may hold a token and are never logged).
func (n *Notifier) Host() string { return n.host }

// Payload is a budget alert's JSON body (Standard Webhooks' type,
// timestamp, data).
type Payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Budget    `json:"data"`
}

// Budget is a budget alert's data.
type Budget struct {
	Scope     string         `json:"scope"` // "key" or "account"
	ID        string         `json:"id"`
	AccountID string         `json:"account_id,omitempty"` // a key's account
	Percent   int            `json:"percent"`              // 50, 80 or 100
	Spent     tollgate.Money `json:"spent"`
	Budget    tollgate.Money `json:"budget"`
	Currency  string         `json:"currency,omitempty"`
	Month     string         `json:"month"`     // "2026-12" (UTC)
	ResetsAt  time.Time      `json:"resets_at"` // the first instant of the next UTC month
}

// PayloadOf is the body an alert is posted with.
func PayloadOf(a gateway.BudgetAlert) Payload {
	m := a.Month.UTC()
	return Payload{Type: EventBudgetThreshold, Timestamp: a.At.UTC(), Data: Budget{
		Scope: a.Scope, ID: a.ID, AccountID: a.AccountID, Percent: a.Percent, Spent: a.Spent, Budget: a.Budget,
		Currency: a.Currency, Month: m.Format("2006-01"), ResetsAt: m.AddDate(0, 1, 0)}}
}

// MessageID is an alert's webhook-id: the same for the same budget, month
// and threshold wherever and however often it is sent.
func MessageID(a gateway.BudgetAlert) string {
	sum := sha256.Sum256([]byte(a.Scope + "\x00" + a.ID + "\x00" + a.Month.UTC().Format("2006-01") + "\x00" + strconv.Itoa(a.Percent)))
	return "msg_budget_" + hex.EncodeToString(sum[:12])
}

// Alert queues a; it never blocks. It fits gateway.Config.OnBudgetAlert.
func (n *Notifier) Alert(a gateway.BudgetAlert) {
	body, err := json.Marshal(PayloadOf(a))
	if err != nil { // cannot happen: plain fields
		n.cfg.Logger.Error("budget alert webhook: encode", "error", err.Error())
		return
	}
	m := &message{id: MessageID(a), body: body, alert: a, due: n.cfg.Now()}
	n.mu.Lock()
	full, stopped := len(n.queue) >= n.cfg.Queue, n.stopped
	if !full && !stopped {
		n.queue = append(n.queue, m)
	}
	n.mu.Unlock()
	if full || stopped {
		why := "shutting down"
		if full {
			why = "the queue is full"
		}
		n.cfg.OnOutcome(OutcomeDropped)
		n.cfg.Logger.Warn("budget alert webhook dropped: "+why, n.attrs(m, "queue", n.cfg.Queue)...)
		return
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// attrs are a message's log attributes, then more.
func (n *Notifier) attrs(m *message, more ...any) []any {
	return append([]any{"webhook_id", m.id, "host", n.host, "scope", m.alert.Scope, "id", m.alert.ID, "percent", m.alert.Percent}, more...)
}

// Start starts posting. Call it once.
func (n *Notifier) Start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.stopped {
		return
	}
	n.started = true
	go n.run()
}

// Stop stops taking alerts, makes one last attempt for each one still
// queued, and returns when done or when ctx ends (then attempts under way
// are cancelled). What is not delivered is dropped, logged and counted.
func (n *Notifier) Stop(ctx context.Context) {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	started := n.started
	n.mu.Unlock()
	close(n.quit)
	if !started {
		go n.run() // only the last attempts
	}
	select {
	case <-n.done:
	case <-ctx.Done():
		n.cancel()
		<-n.done
	}
	n.cancel()
}

func (n *Notifier) run() {
	defer close(n.done)
	for {
		select {
		case <-n.quit:
			n.flush()
			return
		default:
		}
		m, wait := n.next()
		switch {
		case m == nil:
			select {
			case <-n.wake:
			case <-n.quit:
			}
		case wait > 0:
			select {
			case <-n.cfg.After(wait):
			case <-n.wake:
			case <-n.quit:
			}
		default:
			n.deliver(m, false)
		}
	}
}

// next is the queued message due first, and how long until it is due.
func (n *Notifier) next() (*message, time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var first *message
	for _, m := range n.queue {
		if first == nil || m.due.Before(first.due) {
			first = m
		}
	}
	if first == nil {
		return nil, 0
	}
	return first, first.due.Sub(n.cfg.Now())
}

// flush makes one last attempt for each queued message.
func (n *Notifier) flush() {
	n.mu.Lock()
	left := append([]*message(nil), n.queue...)
	n.mu.Unlock()
	for _, m := range left {
		n.deliver(m, true)
	}
}

// deliver makes one attempt for m and, unless it is delivered, schedules
// the next or gives up (last: there is no next).
func (n *Notifier) deliver(m *message, last bool) {
	status, err := webhook.Post(n.ctx, n.cfg.Client, n.cfg.URL, n.cfg.Secret, m.id, n.cfg.Now(), m.body)
	n.mu.Lock()
	m.attempts++
	ok := err == nil && status >= 200 && status < 300
	giveUp := !ok && (last || m.attempts >= n.cfg.Retry.Attempts)
	var retryIn time.Duration
	if ok || giveUp {
		for i, q := range n.queue {
			if q == m {
				n.queue = append(n.queue[:i], n.queue[i+1:]...)
				break
			}
		}
	} else {
		retryIn = n.cfg.Retry.After(m.attempts)
		m.due = n.cfg.Now().Add(retryIn)
	}
	n.mu.Unlock()
	if ok {
		n.cfg.OnOutcome(OutcomeDelivered)
		return
	}
	why := "status"
	var reason any = status
	if err != nil {
		why, reason = "error", err.Error()
	}
	switch {
	case giveUp && last && m.attempts < n.cfg.Retry.Attempts:
		n.cfg.OnOutcome(OutcomeDropped)
		n.cfg.Logger.Error("budget alert webhook not delivered before shutdown; dropped", n.attrs(m, "attempt", m.attempts, why, reason)...)
	case giveUp:
		n.cfg.OnOutcome(OutcomeGaveUp)
		n.cfg.Logger.Error("budget alert webhook not delivered; giving up", n.attrs(m, "attempt", m.attempts, why, reason)...)
	default:
		n.cfg.OnOutcome(OutcomeRetry)
		n.cfg.Logger.Warn("budget alert webhook attempt failed; retrying", n.attrs(m, "attempt", m.attempts, why, reason, "retry_in", retryIn.String())...)
	}
}
