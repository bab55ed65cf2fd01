package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/inference"
	"tollgate/jobs"
	"tollgate/limits"
	"tollgate/metering"
	"tollgate/storage"
	"tollgate/storage/postgres"
)

// lastUsedEvery is how often keys' last-used times are written.
const lastUsedEvery = 30 * time.Second

// handlerExitWait bounds the wait, after the drain period, for handlers whose
// connections were closed to return, beyond the wait for a usage record's
// commit (--record-timeout).
const handlerExitWait = 5 * time.Second

// jobLeaseSlack is added to --record-timeout for the margin of a job run's
// lease beyond --job-timeout: it covers the reads between the claim and
// the start of the run's deadline.
const jobLeaseSlack = 5 * time.Second

type serveFlags struct {
	common
	addr     string
	maxBody  int64
	logLevel string
	drain    time.Duration
	inFlight int
	wait     time.Duration
	perKey   int
	health   time.Duration
	cooldown time.Duration
	record   time.Duration
	journal  string

	jobWorkers   int
	jobTimeout   time.Duration
	jobRetention time.Duration
	callbackNets string
	alert        alertFlags

	metricsAddr string
	debugAddr   string
	proxies     string
	redis       redisFlags
	billing     billingFlags
	tlsCert     string
	tlsKey      string
}

const serveUsage = `usage: tollgate serve [flags]

Runs the gateway until SIGINT or SIGTERM, then drains. SIGHUP re-reads the
catalog (as POST /admin/reload does): a broken file keeps the running one. A
flag whose line names an environment variable takes its default from it.
OLLAMA_HOST (host, host:port or URL) replaces the first backend's URL from
the catalog.
`

// serve runs the gateway until ctx is cancelled (SIGINT/SIGTERM), then
// stops accepting, lets in-flight requests finish within the drain period
// and closes the database.
func serve(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	fs := newFlags("serve", serveUsage, stderr)
	var f serveFlags
	f.register(fs, getenv)
	fs.StringVar(&f.addr, "addr", envOr(getenv, "TOLLGATE_ADDR", "127.0.0.1:8080"), "listen address (env TOLLGATE_ADDR); use :8080 to listen on all interfaces")
	fs.Int64Var(&f.maxBody, "max-body", handlers.DefaultMaxBodyBytes, "largest request body in bytes; larger is 413")
	fs.StringVar(&f.logLevel, "log-level", envOr(getenv, "TOLLGATE_LOG_LEVEL", "info"), "debug, info, warn or error (env TOLLGATE_LOG_LEVEL)")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "how long in-flight requests may run after SIGTERM")
	fs.StringVar(&f.metricsAddr, "metrics-addr", getenv("TOLLGATE_METRICS_ADDR"), "serve /metrics on this address instead of the API's (env TOLLGATE_METRICS_ADDR)")
	fs.StringVar(&f.debugAddr, "debug-addr", getenv("TOLLGATE_DEBUG_ADDR"), "serve Go's profiler (/debug/pprof/) on this address, for operators only (env TOLLGATE_DEBUG_ADDR; default off)")
	fs.StringVar(&f.proxies, "trusted-proxies", getenv("TOLLGATE_TRUSTED_PROXIES"), "comma list of reverse-proxy IPs/CIDRs whose X-Forwarded-For is believed (env TOLLGATE_TRUSTED_PROXIES; default none)")
	fs.IntVar(&f.inFlight, "max-inflight", inference.DefaultMaxParallel, "requests one Ollama backend runs at once when its max_parallel in the catalog is not set")
	fs.DurationVar(&f.wait, "queue-wait", inference.DefaultQueueWait, "how long a request waits in the fair queue for a backend slot before 503")
	fs.IntVar(&f.perKey, "queue-per-key", inference.DefaultQueuePerKey, "requests one key may have waiting for a backend slot; more are 429")
	fs.DurationVar(&f.health, "health-interval", 5*time.Second, "how often each Ollama backend is checked (GET /api/version and /api/ps)")
	fs.DurationVar(&f.cooldown, "eject-cooldown", inference.DefaultCooldown, "how long a backend that failed a request stays out of routing before a health check may bring it back")
	fs.DurationVar(&f.record, "record-timeout", gateway.DefaultRecordTimeout, "bounds one journal load into the database; with --usage-journal off, how long an answer waits for its record's commit before it is withheld (503, not billed)")
	registerJournal(fs, &f.journal, getenv)
	fs.IntVar(&f.jobWorkers, "job-workers", jobs.DefaultWorkers, "async jobs run at once (as many goroutines deliver callbacks)")
	fs.DurationVar(&f.jobTimeout, "job-timeout", jobs.DefaultJobTimeout, "the longest one async job may run")
	fs.DurationVar(&f.jobRetention, "job-retention", jobs.DefaultRetention, "finished async jobs and their results are deleted this long after they end")
	fs.StringVar(&f.callbackNets, "callback-allow-net", getenv("TOLLGATE_CALLBACK_ALLOW_NET"), "comma list of CIDRs job callbacks may reach although private or loopback, also over plain http:// (env TOLLGATE_CALLBACK_ALLOW_NET; default none)")
	f.alert.register(fs, getenv)
	fs.StringVar(&f.tlsCert, "tls-cert", getenv("TOLLGATE_TLS_CERT"), "PEM certificate (chain) file: serve HTTPS; needs --tls-key (env TOLLGATE_TLS_CERT)")
	f.redis.register(fs, getenv)
	f.billing.register(fs, getenv)
	fs.StringVar(&f.tlsKey, "tls-key", getenv("TOLLGATE_TLS_KEY"), "PEM private key file for --tls-cert (env TOLLGATE_TLS_KEY)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if f.journal != journalOff {
		f.journal = journalDir(f.db, f.journal, getenv)
	}
	tlsConf, err := loadTLS(f.tlsCert, f.tlsKey)
	if err != nil {
		return err
	}
	if err := handlers.CheckTrustedProxies(splitList(f.proxies)); err != nil {
		return &usageError{"--trusted-proxies: " + err.Error()}
	}
	if _, err := jobs.ParseNets(f.callbackNets); err != nil {
		return &usageError{"--callback-allow-net: " + err.Error()}
	}
	if err := f.alert.load(getenv); err != nil {
		return err
	}
	log, err := newLogger(stdout, f.logLevel)
	if err != nil {
		return err
	}
	if f.inFlight <= 0 || f.perKey <= 0 || f.wait <= 0 || f.health <= 0 || f.cooldown <= 0 {
		return &usageError{"--max-inflight, --queue-per-key, --queue-wait, --health-interval and --eject-cooldown must be positive"}
	}
	explicitModels := explicitFlag(fs, "models", "TOLLGATE_MODELS", getenv)
	cat, from, err := loadCatalog(f.models, explicitModels, getenv)
	if err != nil {
		return err
	}
	db, err := openStore(ctx, f.db)
	if err != nil {
		return err
	}
	defer db.Close()

	inf := newInferenceClient(cat, getenv, inference.WithQueue(f.wait, f.perKey), inference.WithDefaultParallel(f.inFlight),
		inference.WithCooldown(f.cooldown), inference.WithClock(now), inference.WithLogger(log))
	rl := &reloader{path: f.models, explicit: explicitModels, getenv: getenv, inf: inf, log: log}
	handler, stop, err := wire(ctx, inf, rl, db, log, now, f)
	if err != nil {
		return err
	}
	defer stop()
	healthCtx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go inf.Run(healthCtx, f.health)
	stopHUP := rl.onSIGHUP(ctx)
	defer stopHUP()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.addr, err)
	}
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
		ln = tls.NewListener(ln, tlsConf)
	}
	log.Info("tollgate listening", "scheme", scheme, "addr", ln.Addr().String(), "db", dbName(f.db), "catalog", from, "ollama", backendURLs(cat), "version", version)
	h, err := inf.Ping(ctx)
	if err != nil {
		log.Warn("ollama not reachable yet; /readyz reports it until it is", "error", err.Error())
	}
	for _, d := range h.Down {
		log.Warn("ollama backend not reachable yet; requests go to the others until it is", "backend", d.Backend.Name, "error", d.Err.Error())
	}
	if len(h.Missing) > 0 {
		missing := make([]string, len(h.Missing))
		for i, m := range h.Missing {
			missing[i] = m.Name + " (" + m.Ollama + ")"
		}
		log.Warn("models not installed in Ollama; requests for them fail with model_not_installed until they are pulled",
			"models", missing, "run", h.Pulls())
	}
	return serveHTTP(ctx, ln, handler, f.drain, f.record+handlerExitWait, log)
}

// loadTLS reads the certificate and key named by --tls-cert and --tls-key
// (both or neither; neither means plain HTTP and a nil config). The pair is
// loaded once, at start-up, so a bad file stops start-up with its path and
// the reason; a renewed certificate is picked up by a restart. The config
// offers HTTP/2 and HTTP/1.1 and refuses anything older than TLS 1.2.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case keyFile == "":
		return nil, &usageError{"--tls-cert needs --tls-key (env TOLLGATE_TLS_KEY): give both to serve HTTPS, or neither"}
	case certFile == "":
		return nil, &usageError{"--tls-key needs --tls-cert (env TOLLGATE_TLS_CERT): give both to serve HTTPS, or neither"}
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// serveHTTP serves until ctx ends, then shuts down gracefully. Timeouts: a
// client must send its headers within 10 s and is dropped after 2 minutes
// idle; there is no read or write timeout on the whole request, which would
// cut a healthy stream (bodies are bounded by the handlers).
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, drain, exitWait time.Duration, log *slog.Logger) error {
	var running atomic.Int64 // handlers still running, waited for after a forced close
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			running.Add(1)
			defer running.Add(-1)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "drain", drain.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("drain period over; closing remaining connections", "error", err.Error())
		srv.Close()
		// Close does not wait for handlers. Those it cut still meter what
		// they delivered (a stream's pieces) on their way out, so wait for
		// them before the caller closes the usage recorder and the database.
		for deadline := time.Now().Add(exitWait); running.Load() > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				log.Error("handlers still running after the drain; their usage may not be recorded", "handlers", running.Load())
				break
			}
		}
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, &usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// wire builds the handler and its background parts (last-used flusher,
// usage recorder). stop drains them; call it after the HTTP server has
// finished its in-flight requests and before the database closes.
func wire(ctx context.Context, inf *inference.Client, rl handlers.Reloader, db storage.Store, log *slog.Logger, now func() time.Time, f serveFlags) (http.Handler, func(), error) {
	counters := metering.NewCounters(now)
	metrics := handlers.NewMetrics()
	// The journal first: it loads what an earlier process left behind, so
	// the month totals read next include it.
	usage, closeUsage, err := openUsage(ctx, db, counters, metrics, log, f)
	if err != nil {
		return nil, nil, err
	}
	month := metering.MonthStart(now())
	totals, err := db.MonthTotals(ctx, month)
	if err != nil {
		closeUsage(ctx)
		return nil, nil, fmt.Errorf("seed quota counters: %w", err)
	}
	counters.Seed(month, totals)
	accountTotals, err := monthTotalsBy(ctx, db, month, metering.GroupAccount)
	if err != nil {
		closeUsage(ctx)
		return nil, nil, fmt.Errorf("seed account quota counters: %w", err)
	}
	counters.SeedAccounts(month, accountTotals)
	accountCache := auth.NewAccountCache(db, now)
	verifier := auth.NewVerifier(db, auth.VerifierOptions{LastUsed: db, Now: now, OnFlushError: func(err error) {
		log.Warn("could not record keys' last-used times; will retry", "error", err.Error())
	}})
	var limiter gateway.Admitter = limits.New(counters, 0)
	var ledger gateway.Ledger = counters
	keys := auth.NewKeys(db, verifier, now)
	var sharedHealth handlers.SharedHealth
	var failures handlers.FailureThrottle
	stopRedis := func() {}
	if f.redis.url != "" {
		rs, err := startRedis(ctx, f.redis, dbSeeder{db: usage.reports, accounts: db, flush: usage.flush}, counters, verifier, metrics, log)
		if err != nil {
			closeUsage(ctx)
			return nil, nil, err
		}
		limiter, sharedHealth, stopRedis = rs.limiter, shared{rs.limiter, rs.bus}, rs.stop
		ledger = quotaLedger{counters: counters, limiter: rs.limiter, now: now}
		failures = rs.failures
		keys.NotifyChanges(rs.bus)
	}
	budget, err := newBudgetHook(f.alert, metrics, log, now)
	if err != nil {
		stopRedis()
		closeUsage(ctx)
		return nil, nil, err
	}
	gw := gateway.New(gateway.Config{Inference: inf, Recorder: usage.recorder, Limiter: limiter,
		Ledger: ledger, Usage: usage.reports, Accounts: accountCache, RecordTimeout: f.record,
		Now: now, Logger: log, InFlight: metrics.InFlight, OnBudgetAlert: budget.alert})
	allow, err := jobs.ParseNets(f.callbackNets)
	if err != nil {
		stopRedis()
		closeUsage(ctx)
		return nil, nil, &usageError{"--callback-allow-net: " + err.Error()}
	}
	jobMgr := jobs.New(jobs.Config{Store: db, Keys: db, Run: handlers.JobRunner(gw), Workers: f.jobWorkers, FlushUsage: usage.flush,
		JobTimeout: f.jobTimeout, LeaseMargin: f.record + jobLeaseSlack, Retention: f.jobRetention,
		Guard: jobs.NewGuard(allow), Now: now, Logger: log})
	exp, err := startBilling(ctx, db, usage.flush, metrics, log, now, f)
	if err != nil {
		stopRedis()
		closeUsage(ctx)
		return nil, nil, err
	}
	var billingStatus handlers.BillingStatus // a nil *billing.Exporter would be a non-nil interface
	stopBilling := func() {}
	if exp != nil {
		billingStatus, stopBilling = exp.exp, exp.stop
	}
	handler := handlers.NewServer(handlers.Config{
		Gateway: gw, Ollama: inf, DB: db, Verifier: verifier, Keys: keys, Audit: db, Usage: usage.reports, Jobs: jobMgr,
		Metrics: metrics, MetricsRoute: f.metricsAddr == "", TrustedProxies: splitList(f.proxies),
		Logger: log, MaxBodyBytes: f.maxBody, Now: now, Idempotency: db, Reloader: rl, Shared: sharedHealth, AuthFailures: failures, Journal: usage.backlog,
		Sessions: auth.NewSessions(db, verifier, auth.SessionOptions{Now: now}),
		Accounts: auth.NewAccounts(db, accountCache, now),
		Billing:  billingStatus,
	})
	if f.metricsAddr != "" {
		if err := serveMetrics(ctx, f.metricsAddr, metrics, log); err != nil {
			stopBilling()
			stopRedis()
			closeUsage(ctx)
			return nil, nil, err
		}
	}
	if f.debugAddr != "" {
		if err := serveDebug(ctx, f.debugAddr, log); err != nil {
			stopBilling()
			stopRedis()
			closeUsage(ctx)
			return nil, nil, err
		}
	}
	flushDone := make(chan struct{})
	flushCtx, stopFlush := context.WithCancel(context.WithoutCancel(ctx))
	go func() { defer close(flushDone); _ = verifier.Run(flushCtx, lastUsedEvery) }()
	feedDone := make(chan struct{})
	if feed := keyChangeFeed(db, log); feed != nil {
		go func() { defer close(feedDone); _ = feed.Run(flushCtx, verifier) }()
	} else {
		close(feedDone)
	}
	jobMgr.Start()
	budget.start()
	// The job workers stop taking work the moment shutdown begins and drain
	// during the HTTP drain, within the same --drain, not after it: a run
	// still going when the drain ends is cut and queued again.
	stopJobs := sync.OnceFunc(func() {
		jctx, jcancel := context.WithTimeout(context.WithoutCancel(ctx), f.drain)
		jobMgr.Stop(jctx)
		jcancel()
	})
	stopping := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopping:
		}
		stopJobs()
	}()
	stop := func() {
		close(stopping)
		stopBilling()    // gives the export lease up, for a replica or a restart
		stopJobs()       // waits for a drain already under way
		budget.stop(ctx) // what requests and jobs alerted gets a last attempt
		closeUsage(ctx)  // last: jobs and handlers meter through it
		stopFlush()      // Run flushes last-used times once more on its way out
		<-flushDone
		<-feedDone
		stopRedis() // after the usage journal: its leases are settled
	}
	return handler, stop, nil
}

// usageSink is where the gateway records usage and reads reports.
type usageSink struct {
	recorder gateway.Recorder
	flush    func(context.Context) error // the journal's Flush; nil without one
	backlog  handlers.JournalHealth      // the journal's Backlog; nil without one
	reports  interface {
		gateway.UsageStore
		handlers.UsageExporter
	}
}

// openUsage opens the usage journal in front of db (or, with
// --usage-journal off, a recorder that commits each record before its
// answer is released), feeding counters as records are taken. The returned
// func drains it: the journal loads what is left (or leaves it on disk for
// the next start), the recorder commits what is queued, each within what
// one commit may take plus a margin.
func openUsage(ctx context.Context, db storage.Store, counters *metering.Counters, metrics *handlers.Metrics, log *slog.Logger, f serveFlags) (usageSink, func(context.Context), error) {
	closeWithin := f.record + 10*time.Second
	if f.journal == journalOff {
		rec := metering.NewRecorder(db, metering.RecorderOptions{OnCommit: counters.AddAll, OnBatch: metrics.ObserveBatch, Logger: log})
		return usageSink{recorder: rec, reports: db}, func(ctx context.Context) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeWithin)
			defer cancel()
			if err := rec.Close(rctx); err != nil {
				log.Error("usage recorder did not drain", "error", err.Error())
			}
		}, nil
	}
	dir := f.journal // resolved by serve (journalDir)
	j, err := metering.OpenJournal(ctx, dir, metering.JournalOptions{Store: db, Database: journalIdentity(f.db), OnRecord: counters.Add,
		OnLoad: metrics.ObserveBatch, CommitTimeout: f.record, Logger: log})
	if err != nil {
		return usageSink{}, nil, err
	}
	log.Info("usage journal open", "dir", absPath(dir))
	metrics.WatchJournal(j.Backlog)
	return usageSink{recorder: j, flush: j.Flush, backlog: j.Backlog, reports: j.Reports(db)}, func(ctx context.Context) {
		jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeWithin)
		defer cancel()
		if err := j.Close(jctx); err != nil {
			log.Error("usage journal not fully loaded at shutdown", "error", err.Error())
		}
	}, nil
}

// keyChangeFeed returns the feed that tells this replica's verifier about
// key changes made elsewhere: PostgreSQL's LISTEN/NOTIFY when the store is
// PostgreSQL; nil for SQLite (one node: its own changes invalidate the
// cache directly, and another process on the same file is seen within the
// cache lifetime).
func keyChangeFeed(db storage.Store, log *slog.Logger) auth.KeyChangeFeed {
	pg, ok := db.(*postgres.DB)
	if !ok {
		return nil
	}
	return pg.KeyFeed(postgres.KeyFeedOptions{OnChange: func(up bool, err error) {
		if up {
			log.Info("listening for key changes", "db", "PostgreSQL at "+pg.Addr())
			return
		}
		log.Warn("key change notifications lost: cache dropped, keys re-checked every second until they are back", "error", err.Error())
	}})
}

// serveMetrics serves /metrics on its own address until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *handlers.Metrics, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// monthTotalsBy returns the totals of the UTC month of month in db, grouped
// by groupBy (a metering.Group*).
func monthTotalsBy(ctx context.Context, db storage.Store, month time.Time, groupBy string) (map[string]metering.Totals, error) {
	rows, err := db.Summary(ctx, metering.Query{From: metering.MonthStart(month), To: metering.NextMonthStart(month), GroupBy: groupBy})
	if err != nil {
		return nil, err
	}
	return metering.TotalsOf(rows), nil
}
