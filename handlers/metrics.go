package handlers

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"tollgate/gateway"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the gateway's Prometheus series, all prefixed tollgate_, in a
// registry of their own (no global state). Labels are bounded: routes come
// from the router, models from the catalog, reasons and codes from fixed
// lists; never a key. Safe for concurrent use.
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	firstToken *prometheus.HistogramVec
	tokens     *prometheus.CounterVec
	rejections *prometheus.CounterVec
	inFlight   prometheus.Gauge
	degraded   prometheus.Gauge
	batchSize  prometheus.Histogram
	commit     prometheus.Histogram
	batchFails prometheus.Counter
	upstream   *prometheus.CounterVec
	budget     *prometheus.CounterVec
	alertHooks *prometheus.CounterVec

	billingEvents *prometheus.CounterVec
	// caches of children, see observeRequest
	reqSeries        sync.Map // reqSeriesKey -> *reqSeries
	tokenSeries      sync.Map // model -> *tokenSeries
	firstTokenSeries sync.Map // model -> prometheus.Observer
	fleetOnce        sync.Once
}

// Rejection reasons for tollgate_rejections_total.
const (
	rejectAuth     = "auth"
	rejectRate     = "rate"
	rejectTokens   = "tokens"
	rejectConc     = "concurrency"
	rejectQuota    = "quota"
	rejectBudget   = "budget"
	rejectOverload = "overload"
)

// NewMetrics returns the gateway's metrics, with Go runtime and process
// collectors registered beside them.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_requests_total",
		Help: "HTTP requests by route, status, public model and API surface (native, openai, ollama)."}, []string{"route", "status", "model", "surface"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tollgate_request_duration_seconds",
		Help: "Time from request to last byte, by route.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"route"})
	m.firstToken = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tollgate_upstream_first_token_seconds",
		Help: "Time from calling Ollama to its first token, by model.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"model"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_tokens_total",
		Help: "Tokens as Ollama counted them, by model and kind (prompt, completion)."}, []string{"model", "kind"})
	m.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_rejections_total",
		Help: "Requests refused before inference, by reason (auth, rate, tokens, concurrency, quota, overload)."}, []string{"reason"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tollgate_inflight_requests",
		Help: "Inference requests holding a slot in front of Ollama."})
	m.degraded = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tollgate_limits_degraded",
		Help: "1 while Redis is unreachable and this replica enforces its share of every limit on its own, else 0."})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_metering_batch_size",
		Help: "Usage records committed per transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 11)})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_metering_commit_seconds",
		Help: "Time to commit one batch of usage records.", Buckets: prometheus.ExponentialBuckets(.0001, 2.5, 12)})
	m.batchFails = prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_metering_batch_failures_total",
		Help: "Usage batches whose commit attempt failed."})
	m.upstream = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_ollama_errors_total",
		Help: "Failed Ollama calls by error code."}, []string{"code"})
	m.billingEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_billing_events_total",
		Help: "Stripe meter events by outcome: accepted (now or before), failed (sent again later), no_customer (an account's usage without a Stripe customer id, not sent)."}, []string{"outcome"})
	m.budget = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_budget_alerts_total",
		Help: "Monthly money budgets whose spending reached a threshold (50, 80, 100 percent), by key or account."}, []string{"scope", "threshold"})
	m.alertHooks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_budget_alert_webhooks_total",
		Help: "Budget alert webhook deliveries by outcome: delivered, retry (an attempt failed; it is tried again), gave_up, dropped (queue full or shutdown)."}, []string{"outcome"})
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.firstToken, m.tokens, m.rejections, m.inFlight, m.degraded,
		m.batchSize, m.commit, m.batchFails, m.upstream, m.budget, m.alertHooks, m.billingEvents, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	for _, r := range []string{rejectAuth, rejectRate, rejectTokens, rejectConc, rejectQuota, rejectBudget, rejectOverload} {
		m.rejections.WithLabelValues(r) // export zeros so rates work from the start
	}
	return m
}

// WatchFleet exports the state of f's backends with the metrics (once per
// Metrics; later calls do nothing).
func (m *Metrics) WatchFleet(f Fleet) {
	m.fleetOnce.Do(func() { m.reg.MustRegister(newFleetCollector(f)) })
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveBatch records one metering commit; it fits
// metering.RecorderOptions.OnBatch.
func (m *Metrics) ObserveBatch(size int, took time.Duration, err error) {
	if err != nil {
		m.batchFails.Inc()
		return
	}
	m.batchSize.Observe(float64(size))
	m.commit.Observe(took.Seconds())
}

// WatchJournal exports the usage journal's backlog, read from backlog at
// each scrape: tollgate_usage_journal_backlog_bytes (journaled, not yet in
// the database) and tollgate_usage_journal_stalled (1 while loading fails).
// Call it once.
func (m *Metrics) WatchJournal(backlog func() (int64, error)) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_usage_journal_backlog_bytes",
		Help: "Usage journal bytes not loaded into the database yet."}, func() float64 {
		n, _ := backlog()
		return float64(n)
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_usage_journal_stalled",
		Help: "1 while the usage journal cannot load into the database (answers go on; their usage waits in the journal)."}, func() float64 {
		if _, err := backlog(); err != nil {
			return 1
		}
		return 0
	}))
}

// BillingEvents counts meter events by outcome (accepted, failed,
// no_customer); it fits billing.Config.OnEvents.
func (m *Metrics) BillingEvents(outcome string, n int) {
	m.billingEvents.WithLabelValues(outcome).Add(float64(n))
}

// WatchBilling exports the usage exporter's lag, read at each scrape:
// tollgate_billing_lag_seconds. Call it once.
func (m *Metrics) WatchBilling(lag func() time.Duration) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_billing_lag_seconds",
		Help: "How far the Stripe usage export's cursor is behind now (0 before the first export)."}, func() float64 {
		return lag().Seconds()
	}))
}

// LimitsDegraded sets tollgate_limits_degraded; it fits
// limits.RedisOptions.OnDegraded.
func (m *Metrics) LimitsDegraded(d bool) {
	if d {
		m.degraded.Set(1)
	} else {
		m.degraded.Set(0)
	}
}

func (m *Metrics) reject(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// BudgetAlert counts a monthly budget (scope "key" or "account") whose
// spending reached a threshold; it fits gateway.Config.OnBudgetAlert.
func (m *Metrics) BudgetAlert(a gateway.BudgetAlert) {
	m.budget.WithLabelValues(a.Scope, strconv.Itoa(a.Percent)).Inc()
}

// AlertWebhook counts one budget alert webhook outcome; it fits
// alerts.Config.OnOutcome.
func (m *Metrics) AlertWebhook(outcome string) { m.alertHooks.WithLabelValues(outcome).Inc() }

// InFlight moves the gauge of inference calls holding a GPU slot; it fits
// gateway.Config.InFlight.
func (m *Metrics) InFlight(delta int) { m.inFlight.Add(float64(delta)) }

// observe counts every request once it is done.
func (s *server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		ri := info(c)
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		if ri.status != 0 {
			status = ri.status
		}
		s.metrics.observeRequest(route, status, ri)
		if ri.upstreamErr != "" {
			s.metrics.upstream.WithLabelValues(ri.upstreamErr).Inc()
		}
	}
}

// The children a finished request updates, cached: WithLabelValues hashes
// and validates its labels on every call. Each is created when it is first
// updated, as before, so no series appears in /metrics any earlier.
type reqSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

type reqSeriesKey struct {
	route  string
	status int
	model  string
}

type tokenSeries struct{ prompt, completion prometheus.Counter }

func (m *Metrics) observeRequest(route string, status int, ri *reqInfo) {
	k := reqSeriesKey{route, status, ri.model}
	v, ok := m.reqSeries.Load(k)
	if !ok {
		v, _ = m.reqSeries.LoadOrStore(k, &reqSeries{
			requests: m.requests.WithLabelValues(route, strconv.Itoa(status), ri.model, surfaceOf(route)),
			duration: m.duration.WithLabelValues(route),
		})
	}
	rs := v.(*reqSeries)
	rs.requests.Inc()
	rs.duration.Observe(time.Since(ri.start).Seconds())
	if ri.model != "" && ri.usage.TotalTokens > 0 {
		v, ok := m.tokenSeries.Load(ri.model)
		if !ok {
			v, _ = m.tokenSeries.LoadOrStore(ri.model, &tokenSeries{
				prompt:     m.tokens.WithLabelValues(ri.model, "prompt"),
				completion: m.tokens.WithLabelValues(ri.model, "completion"),
			})
		}
		ts := v.(*tokenSeries)
		ts.prompt.Add(float64(ri.usage.PromptTokens))
		ts.completion.Add(float64(ri.usage.CompletionTokens))
	}
	if ri.firstToken > 0 {
		v, ok := m.firstTokenSeries.Load(ri.model)
		if !ok {
			v, _ = m.firstTokenSeries.LoadOrStore(ri.model, m.firstToken.WithLabelValues(ri.model))
		}
		v.(prometheus.Observer).Observe(ri.firstToken.Seconds())
	}
}
