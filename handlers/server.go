// Package handlers is Tollgate's HTTP surface: the routes, the middleware
// chain (request id, access log, recovery, body limit, auth, limits), request
// and response types, and the one function that turns errors into the error
// envelope. It is the only package that imports Gin.
package handlers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/idempotency"
	"tollgate/inference"
	"tollgate/jobs"
)

// Pinger reports whether a dependency (the database) is usable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// OllamaChecker reports whether every Ollama backend answers and which
// catalog models they lack; *inference.Client satisfies it.
type OllamaChecker interface {
	Ping(ctx context.Context) (inference.Health, error)
}

// DefaultMaxBodyBytes bounds request bodies when Config leaves it zero.
const DefaultMaxBodyBytes = 1 << 20

// DefaultBodyTimeout is how long a client may take to send its body when
// Config leaves BodyTimeout zero.
const DefaultBodyTimeout = 30 * time.Second

// AuditLog lists admin actions; *sqlite.DB and *postgres.DB (package storage) satisfy it.
type AuditLog interface {
	Audit(ctx context.Context, keyID string) ([]auth.AuditEntry, error)
}

// Config holds everything the server depends on. All but the fields marked
// optional are required.
type Config struct {
	Gateway  *gateway.Gateway // the metered calls: inference, models, usage
	Ollama   OllamaChecker    // for /readyz
	DB       Pinger
	Verifier Verifier
	Keys     KeyManager
	// Accounts manages subscriber accounts (auth.NewAccounts). Optional:
	// nil answers the /admin/accounts routes with 404.
	Accounts AccountManager
	Audit    AuditLog
	Usage    UsageExporter // per-request usage export
	// Sessions keeps dashboard sign-ins (auth.NewSessions). Optional: nil
	// serves the dashboard's files but refuses sign-in.
	Sessions     *auth.Sessions
	Jobs         *jobs.Manager    // optional: async jobs (/jobs, Prefer: respond-async); nil: 404
	AuthFailures FailureThrottle  // optional: nil = DefaultAuthFailures
	Logger       *slog.Logger     // optional: nil discards
	MaxBodyBytes int64            // optional: 0 = DefaultMaxBodyBytes
	BodyTimeout  time.Duration    // optional: 0 = DefaultBodyTimeout, from the request's arrival
	Now          func() time.Time // optional: nil = time.Now
	Metrics      *Metrics         // optional: nil = NewMetrics(), served at /metrics
	// Idempotency keeps Idempotency-Key records (a storage.Store). Optional:
	// nil ignores the header (every retry runs again).
	Idempotency idempotency.Store
	// TrustedProxies lists the addresses or CIDRs of reverse proxies whose
	// X-Forwarded-For / X-Real-IP give the client address (see
	// CheckTrustedProxies). Optional: none trusted, the TCP peer is the client.
	TrustedProxies []string
	MetricsRoute   bool // serve /metrics on this handler (false when it has its own address)
	// Fleet shows the Ollama backends in GET /admin/backends, /readyz and
	// /metrics. Optional: nil takes Ollama when it is a Fleet
	// (*inference.Client is).
	Fleet Fleet
	// Reloader serves POST /admin/reload. Optional: nil answers 404.
	Reloader Reloader
	// Shared, when replicas share state through Redis, reports whether
	// that is degraded (/readyz says so). Optional.
	Shared SharedHealth
	// Journal, when usage goes through the usage journal, tells /readyz
	// whether it reaches the database. Optional.
	Journal JournalHealth
	// Billing is the usage exporter to Stripe, for GET /admin/billing.
	// Optional: without it the route says the export is off.
	Billing BillingStatus
}

// DefaultAuthFailures allows 20 failed authentication attempts per client
// address, then one more every 3 seconds.
func DefaultAuthFailures() FailureThrottle {
	return auth.NewThrottle(rate.Every(3*time.Second), 20, 0)
}

// server carries the dependencies the handlers close over.
type server struct {
	gw           *gateway.Gateway
	ollama       OllamaChecker
	db           Pinger
	verifier     Verifier
	keys         KeyManager
	accounts     AccountManager
	audit        AuditLog
	usage        UsageExporter
	jobs         *jobs.Manager
	failures     FailureThrottle
	metrics      *Metrics
	metricsRoute bool
	log          *slog.Logger
	maxBody      int64
	bodyTimeout  time.Duration
	now          func() time.Time
	idem         idempotency.Store
	fleet        Fleet
	reloader     Reloader
	sessions     *auth.Sessions
	shared       SharedHealth
	journal      JournalHealth
	billing      BillingStatus
}

// NewServer returns the HTTP handler for the whole API. It is safe for
// concurrent use; it starts no goroutines.
func NewServer(cfg Config) http.Handler {
	s := &server{gw: cfg.Gateway, ollama: cfg.Ollama, db: cfg.DB, verifier: cfg.Verifier, keys: cfg.Keys, accounts: cfg.Accounts, audit: cfg.Audit,
		usage: cfg.Usage, jobs: cfg.Jobs, failures: cfg.AuthFailures, log: cfg.Logger, maxBody: cfg.MaxBodyBytes, bodyTimeout: cfg.BodyTimeout, now: cfg.Now,
		idem: cfg.Idempotency, fleet: cfg.Fleet, reloader: cfg.Reloader, sessions: cfg.Sessions, shared: cfg.Shared, journal: cfg.Journal, billing: cfg.Billing}
	if f, ok := cfg.Ollama.(Fleet); ok && s.fleet == nil {
		s.fleet = f
	}
	s.metrics, s.metricsRoute = cfg.Metrics, cfg.MetricsRoute
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	if s.fleet != nil {
		s.metrics.WatchFleet(s.fleet)
	}
	if s.failures == nil {
		s.failures = DefaultAuthFailures()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = DefaultBodyTimeout
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// No redirects: "/models/" is a 404 in the envelope that names
	// "/models" (trailingSlash), not a 301 with an HTML body or a 307.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	// The client address is the TCP peer unless it is a configured proxy, so
	// nobody can pick their address (and dodge the per-address throttle) by
	// sending X-Forwarded-For.
	r.ForwardedByClientIP = len(cfg.TrustedProxies) > 0
	r.RemoteIPHeaders = []string{"X-Forwarded-For", "X-Real-IP"}
	if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		r.ForwardedByClientIP = false // fail closed; CheckTrustedProxies reports it at start-up
		_ = r.SetTrustedProxies(nil)
	}
	r.ContextWithFallback = false
	addRoutes(r, s)
	return r
}

// CheckTrustedProxies reports the first entry that is neither an IP address
// nor a CIDR prefix.
func CheckTrustedProxies(list []string) error {
	for _, p := range list {
		if _, err := netip.ParsePrefix(p); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(p); err != nil {
			return fmt.Errorf("trusted proxy %q is neither an IP address nor a CIDR like 10.0.0.0/8", p)
		}
	}
	return nil
}
