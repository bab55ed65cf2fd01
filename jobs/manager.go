package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/metering"
	"tollgate/webhook"
)

// Defaults for Config.
const (
	DefaultWorkers    = 4
	DefaultPoll       = time.Second
	DefaultJobTimeout = 10 * time.Minute
	DefaultRetention  = 7 * 24 * time.Hour
	DefaultMaxRetries = 8
	// DefaultLeaseMargin is Config.LeaseMargin's default.
	DefaultLeaseMargin = 2 * time.Minute
)

// Backoff is an exponential schedule (webhook.Backoff).
type Backoff = webhook.Backoff

// DefaultDelivery is the callback schedule: 13 attempts, the second 30 s
// after the first, then doubling up to 6 h between two: the last about 20
// hours after the first.
var DefaultDelivery = Backoff{First: 30 * time.Second, Max: 6 * time.Hour, Attempts: 13}

// DefaultAdmission is the schedule for runs that admission refused (429,
// 503): 1 s, doubling up to a minute, at most DefaultMaxRetries retries.
var DefaultAdmission = Backoff{First: time.Second, Max: time.Minute, Attempts: DefaultMaxRetries}

// Config holds what a Manager depends on; Store, Keys and Run are required.
type Config struct {
	Store Store
	Keys  KeyStore
	Run   Runner
	// Workers run jobs (0: DefaultWorkers); as many deliver callbacks.
	Workers    int
	Poll       time.Duration // how often idle workers look for work (0: DefaultPoll)
	JobTimeout time.Duration // a run's deadline (0: DefaultJobTimeout)
	// LeaseMargin is added to JobTimeout for a run's lease (0:
	// DefaultLeaseMargin). A run's usage row commits at most the gateway's
	// record timeout after its deadline, so the margin must exceed that:
	// a lease that ends first lets Recover run (and bill) the job again.
	LeaseMargin time.Duration
	// FlushUsage, if set, moves usage that is recorded but not yet in the
	// store (the usage journal, metering.Journal.Flush) into it: after a
	// successful run, before its result is stored (so that another
	// instance never finds a run whose result is lost but whose usage is
	// still in this one's journal), and before Recover asks Store.Billed.
	// Recover skips a lookup it cannot trust: the run is looked at again at
	// the next poll.
	FlushUsage func(context.Context) error
	Retention  time.Duration // final jobs are deleted this long after they end (0: DefaultRetention)
	Admission  Backoff       // zero: DefaultAdmission
	Delivery   Backoff       // zero: DefaultDelivery
	Guard      *Guard        // callback URL policy (nil: NewGuard(nil))
	// Client posts callbacks (nil: Guard.Client(10 s)); tests may give
	// their own, but then the Guard's connect-time check is theirs to keep.
	Client *http.Client
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Manager accepts, runs and delivers jobs. Start starts its goroutines;
// Stop drains them.
type Manager struct {
	cfg      Config
	now      func() time.Time
	log      *slog.Logger
	wakeRun  chan struct{} // a job was queued
	wakeSend chan struct{} // a callback is due
	quit     chan struct{}
	wg       sync.WaitGroup
	runCtx   context.Context
	stopRuns context.CancelFunc

	mu      sync.Mutex
	running map[string]*run // by job id
	started bool
	stopped bool
}

type run struct {
	cancel    context.CancelFunc
	cancelled bool // by DELETE
}

// New returns a Manager for cfg.
func New(cfg Config) *Manager {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = DefaultJobTimeout
	}
	if cfg.LeaseMargin <= 0 {
		cfg.LeaseMargin = DefaultLeaseMargin
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Admission == (Backoff{}) {
		cfg.Admission = DefaultAdmission
	}
	if cfg.Delivery == (Backoff{}) {
		cfg.Delivery = DefaultDelivery
	}
	if cfg.Guard == nil {
		cfg.Guard = NewGuard(nil)
	}
	if cfg.Client == nil {
		cfg.Client = cfg.Guard.Client(10 * time.Second)
	}
	m := &Manager{cfg: cfg, now: cfg.Now, log: cfg.Logger, wakeRun: make(chan struct{}, 1), wakeSend: make(chan struct{}, 1),
		quit: make(chan struct{}), running: map[string]*run{}}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m.runCtx, m.stopRuns = context.WithCancel(context.Background())
	return m
}

// Guard returns the callback URL policy.
func (m *Manager) Guard() *Guard { return m.cfg.Guard }

// Submit validates and stores a job for key: endpoint is one of Endpoints,
// request the endpoint's body (the caller has checked its shape),
// callbackURL "" or a URL the Guard allows. The job is queued.
func (m *Manager) Submit(ctx context.Context, key auth.Key, endpoint string, request json.RawMessage, callbackURL string) (Job, error) {
	if !slices.Contains(Endpoints, endpoint) {
		return Job{}, withParam(tollgate.Errorf(tollgate.CodeInvalidRequest, "field \"endpoint\" must be generate, embed or predict"), "endpoint")
	}
	now := m.now().UTC()
	j := Job{ID: newID("job_"), KeyID: key.ID, Endpoint: endpoint, Request: request, Status: Queued,
		RunAfter: now, CreatedAt: now}
	if callbackURL != "" {
		if err := m.cfg.Guard.CheckURL(callbackURL); err != nil {
			return Job{}, withParam(tollgate.Errorf(tollgate.CodeInvalidRequest, "field \"callback_url\": %s", err.Error()), "callback_url")
		}
		secret, err := m.cfg.Store.WebhookSecret(ctx, key.ID)
		if err != nil {
			return Job{}, err
		}
		if secret == "" {
			return Job{}, withParam(tollgate.Errorf(tollgate.CodeInvalidRequest,
				"field \"callback_url\": this key has no webhook signing secret yet; get one with POST /keys/self/webhook-secret/rotate"), "callback_url")
		}
		j.CallbackURL, j.Delivery = callbackURL, DeliveryWaiting
	}
	if err := m.cfg.Store.InsertJob(ctx, j); err != nil {
		return Job{}, err
	}
	poke(m.wakeRun)
	return j, nil
}

func withParam(e *tollgate.Error, p string) *tollgate.Error { e.Param = p; return e }

// poke wakes an idle loop waiting on wake.
func poke(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// Get returns job id if key may see it: its own, or any with the admin
// scope. Otherwise ErrNotFound.
func (m *Manager) Get(ctx context.Context, key auth.Key, id string) (Job, error) {
	j, err := m.cfg.Store.Job(ctx, id)
	if err != nil {
		return Job{}, err
	}
	if j.KeyID != key.ID && !key.HasScope(auth.ScopeAdmin) {
		return Job{}, ErrNotFound
	}
	return j, nil
}

// ErrFinished: the job has already ended and cannot be cancelled.
var ErrFinished = errors.New("jobs: the job has already finished")

// Cancel cancels job id for key: a queued job never runs; a running one
// has its context cancelled (and is billed what the gateway bills for
// it: what was delivered, for a job nothing). ErrFinished if it has ended.
func (m *Manager) Cancel(ctx context.Context, key auth.Key, id string) (Job, error) {
	j, err := m.Get(ctx, key, id)
	if err != nil {
		return Job{}, err
	}
	if j.Status.Final() {
		return j, ErrFinished
	}
	j, err = m.cfg.Store.CancelJob(ctx, id, m.now().UTC())
	if err != nil {
		return Job{}, err
	}
	if j.Status == Running {
		m.mu.Lock()
		if r := m.running[id]; r != nil {
			r.cancelled = true
			r.cancel()
		}
		m.mu.Unlock()
	}
	if j.Status == Cancelled && j.CallbackURL != "" {
		poke(m.wakeSend)
	}
	return j, nil
}

// RotateWebhookSecret gives keyID a new signing secret and returns it; the
// old one signs nothing from now on.
func (m *Manager) RotateWebhookSecret(ctx context.Context, keyID string) (string, error) {
	s := webhook.NewSecret()
	if err := m.cfg.Store.SetWebhookSecret(ctx, keyID, s, m.now().UTC()); err != nil {
		return "", err
	}
	return s, nil
}

// Start starts the workers, the callback senders and the housekeeping
// (recovery of interrupted runs, purging). Call it once.
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return
	}
	m.started = true
	for range m.cfg.Workers {
		m.loop(m.runOne, m.wakeRun)
		m.loop(m.deliverOne, m.wakeSend)
	}
	m.loop(m.housekeep, nil)
}

// loop calls step until Stop; step reports whether it did something (then
// it is called again at once), else the loop waits for a poke on wake (nil:
// none) or the poll. A poke wakes one idle loop; one that finds work pokes
// the next (see runOne), so a burst of jobs wakes every worker.
func (m *Manager) loop(step func() bool, wake chan struct{}) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.Poll)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			default:
			}
			if step() {
				continue
			}
			select {
			case <-m.quit:
				return
			case <-wake:
			case <-t.C:
			}
		}
	}()
}

// Stop stops claiming work and waits for runs and deliveries in progress
// until ctx ends; then cancels them. A run cut by Stop is queued again
// (under a new request id; its cut run is billed what the gateway billed).
func (m *Manager) Stop(ctx context.Context) {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.stopped = true
	close(m.quit)
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.stopRuns()
		<-done
	}
	m.stopRuns()
}

// bg is a context for store calls that must finish even while stopping.
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// runOne claims and runs one due job.
func (m *Manager) runOne() bool {
	ctx, cancel := bg()
	defer cancel()
	now := m.now().UTC()
	owner := newID("run_")
	j, ok, err := m.cfg.Store.ClaimJob(ctx, now, owner, now.Add(m.cfg.JobTimeout+m.cfg.LeaseMargin))
	if err != nil {
		m.log.Error("jobs: claim", "error", err.Error())
		return false
	}
	if !ok {
		return false
	}
	poke(m.wakeRun) // there may be more
	m.execute(ctx, j, owner)
	return true
}

// execute runs claimed job j and stores how it ended.
func (m *Manager) execute(ctx context.Context, j Job, owner string) {
	key, err := m.cfg.Keys.KeyByID(ctx, j.KeyID)
	if err == nil {
		err = key.Usable(m.now())
	}
	if err != nil {
		info := &ErrorInfo{Code: tollgate.CodeKeyRevoked, Message: "the key that created this job is revoked, expired or gone; the job was not run"}
		if !errors.Is(err, auth.ErrRevoked) && !errors.Is(err, auth.ErrExpired) && !errors.Is(err, auth.ErrNotFound) {
			m.log.Error("jobs: read key", "job", j.ID, "error", err.Error())
			_, _ = m.cfg.Store.RequeueJob(ctx, j.ID, owner, m.now().UTC().Add(m.cfg.Admission.After(1)), j.Retries, j.Recovered)
			return
		}
		m.finish(ctx, j, owner, Finish{Status: Failed, Error: info})
		return
	}
	rctx, cancel := context.WithTimeout(m.runCtx, m.cfg.JobTimeout)
	r := &run{cancel: cancel}
	m.mu.Lock()
	m.running[j.ID] = r
	m.mu.Unlock()
	// A DELETE between the claim and the registration above: the store
	// has it (re-read now that a later DELETE finds the run registered).
	if cur, err := m.cfg.Store.Job(ctx, j.ID); err == nil && cur.CancelRequested {
		m.mu.Lock()
		r.cancelled = true
		m.mu.Unlock()
		cancel()
	}
	arrived := m.now()
	body, err := m.cfg.Run(rctx, gateway.Caller{Key: key, RequestID: j.RequestID, Arrived: arrived, Surface: metering.SurfaceNative}, j.Endpoint, j.Request)
	// The run may have outlasted ctx's timeout: store its outcome afresh.
	ctx, cancelStore := bg()
	defer cancelStore()
	m.mu.Lock()
	delete(m.running, j.ID)
	cancelled := r.cancelled
	m.mu.Unlock()
	cancel()
	if err == nil && m.cfg.FlushUsage != nil {
		// The run's usage into the shared database before its result: a
		// process that dies between the two leaves a run that another
		// instance's Recover sees as billed, not one it runs again.
		if ferr := m.cfg.FlushUsage(ctx); ferr != nil {
			m.log.Warn("jobs: the run's usage is journaled but not yet in the database", "job", j.ID, "error", ferr.Error())
		}
	}
	switch {
	case err == nil:
		m.finish(ctx, j, owner, Finish{Status: Succeeded, Result: body})
	case cancelled:
		m.finish(ctx, j, owner, Finish{Status: Cancelled, Error: &ErrorInfo{Code: tollgate.CodeClientClosed,
			Message: "the job was cancelled while it ran", RequestID: j.RequestID}})
	case m.runCtx.Err() != nil:
		// Stopped: run it again after the restart.
		_, _ = m.cfg.Store.RequeueJob(ctx, j.ID, owner, m.now().UTC(), j.Retries, j.Recovered)
	case retryable(err) && j.Retries < m.cfg.Admission.Attempts:
		wait := max(m.cfg.Admission.After(j.Retries+1), tollgate.RetryAfter(err))
		_, _ = m.cfg.Store.RequeueJob(ctx, j.ID, owner, m.now().UTC().Add(wait), j.Retries+1, j.Recovered)
	default:
		m.finish(ctx, j, owner, Finish{Status: Failed, Error: errorInfo(err, j.RequestID)})
	}
}

// retryable: admission refusals that waiting fixes.
func retryable(err error) bool {
	switch tollgate.ErrorCode(err) {
	case tollgate.CodeRateLimited, tollgate.CodeTokensPerMinute, tollgate.CodeTooManyConcurrent, tollgate.CodeOverloaded:
		return true
	}
	return false
}

func (m *Manager) finish(ctx context.Context, j Job, owner string, f Finish) {
	f.At = m.now().UTC()
	if j.CallbackURL != "" {
		f.Delivery = DeliveryPending
	}
	ok, err := m.cfg.Store.FinishJob(ctx, j.ID, owner, f)
	if err != nil {
		m.log.Error("jobs: finish", "job", j.ID, "error", err.Error())
	} else if !ok {
		m.log.Warn("jobs: a run outlived its lease; its successor's outcome stands", "job", j.ID)
	}
	if f.Delivery != "" {
		poke(m.wakeSend)
	}
}

// housekeep recovers runs whose lease ended (their process died) and
// purges old jobs, at most once a poll.
func (m *Manager) housekeep() bool {
	ctx, cancel := bg()
	defer cancel()
	now := m.now().UTC()
	m.Recover(ctx, now)
	if _, err := m.cfg.Store.PurgeJobs(ctx, now.Add(-m.cfg.Retention)); err != nil {
		m.log.Error("jobs: purge", "error", err.Error())
	}
	return false
}

// Recover deals with runs whose lease ended before now: a run whose usage
// row says it succeeded was done and billed, its result lost in the crash:
// the job fails ("interrupted after billing") and is not run again. Other
// runs are queued again, once; a job interrupted twice fails.
func (m *Manager) Recover(ctx context.Context, now time.Time) {
	expired, err := m.cfg.Store.Expired(ctx, now)
	if err != nil {
		m.log.Error("jobs: recover", "error", err.Error())
		return
	}
	if len(expired) > 0 && m.cfg.FlushUsage != nil {
		if err := m.cfg.FlushUsage(ctx); err != nil {
			m.log.Warn("jobs: recover waits: recorded usage not in the database yet", "error", err.Error())
			return
		}
	}
	for _, j := range expired {
		billed, err := m.cfg.Store.Billed(ctx, j.RequestID)
		if err != nil {
			m.log.Error("jobs: recover", "job", j.ID, "error", err.Error())
			continue
		}
		switch {
		case billed:
			m.finish(ctx, j, j.Owner, Finish{Status: Failed, Error: &ErrorInfo{Code: tollgate.CodeInternal, RequestID: j.RequestID,
				Message: "interrupted after billing: the answer was produced and billed (request " + j.RequestID + "), but the server stopped before storing it; it is not run again"}})
		case j.Recovered:
			m.finish(ctx, j, j.Owner, Finish{Status: Failed, Error: &ErrorInfo{Code: tollgate.CodeInternal, RequestID: j.RequestID,
				Message: "interrupted twice (attempt " + strconv.Itoa(j.Attempt) + "): the server stopped while it ran; not billed"}})
		default:
			if ok, _ := m.cfg.Store.RequeueJob(ctx, j.ID, j.Owner, now, j.Retries, true); ok {
				m.log.Warn("jobs: a run was interrupted; running it again", "job", j.ID, "request_id", j.RequestID)
				poke(m.wakeRun)
			}
		}
	}
}
