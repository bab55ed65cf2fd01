// Package gateway is Tollgate's one metered call. Every surface (the native
// API, OpenAI- and Ollama-compatible routes, async jobs, the dashboard)
// hands it a verified key and a decoded request, and it does the rest in
// one order: authorize (scope and model) -> validate -> admit (quotas,
// concurrency, tokens per minute, request rate: reservations) -> take a GPU
// slot -> call Ollama -> settle what the client got -> commit the usage
// record -> release. It imports neither Gin nor net/http: a call needs no
// HTTP request at all.
//
// Billing rule: a request is billed exactly what its client received. A
// non-streamed answer is billed Ollama's counts if it is delivered and
// nothing otherwise; a stream is billed the pieces delivered; a request
// whose usage record cannot be committed in time is withheld (503) and not
// billed. Admission refusals leave no usage record.
package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/inference"
	"tollgate/limits"
	"tollgate/metering"
)

// Inferencer runs models; *inference.Client satisfies it.
type Inferencer interface {
	Catalog() *inference.Catalog
	Generate(ctx context.Context, m inference.Model, req inference.GenerateRequest, onText func(string) error) (inference.Result, error)
	Embed(ctx context.Context, m inference.Model, inputs []string, keepAlive *time.Duration) (inference.EmbedResult, error)
	Predict(ctx context.Context, m inference.Model, req inference.PredictRequest) (inference.PredictResult, error)
}

// Scheduler hands out places on the GPUs: a backend slot for a call,
// waiting in a fair per-key queue when every backend serving the model is
// busy; *inference.Client satisfies it.
type Scheduler interface {
	Acquire(ctx context.Context, t inference.Ticket) (*inference.Slot, error)
}

// Recorder commits usage events; *metering.Recorder satisfies it. Record
// returns nil only once the event is committed as given; on any error the
// event is not billed (metering.ErrWithdrawn) or was lost.
type Recorder interface {
	Record(ctx context.Context, ev metering.Event) error
}

// Admitter admits requests against per-key limits; *limits.Limiter
// satisfies it.
type Admitter interface {
	Admit(ctx context.Context, r limits.Request) (limits.Lease, error)
	State(keyID string, lim tollgate.Limits, now time.Time) limits.State
}

// Ledger is this month's committed usage per key and per account, in
// memory; *metering.Counters satisfies it.
type Ledger interface {
	Month(keyID string) metering.Totals
	AccountMonth(accountID string) metering.Totals
}

// Accounts looks up the account owning a key; *auth.AccountCache satisfies
// it. It returns auth.ErrAccountNotFound for an unknown id.
type Accounts interface {
	Account(ctx context.Context, id string) (auth.Account, error)
}

// UsageStore answers usage reports; *sqlite.DB and *postgres.DB (package storage) satisfy it.
type UsageStore interface {
	Summary(ctx context.Context, q metering.Query) ([]metering.Row, error)
}

// Defaults for Config.
const (
	DefaultRecordTimeout = 15 * time.Second
)

// Config holds what a Gateway depends on. Inference, Recorder, Limiter,
// Ledger and Usage are required.
type Config struct {
	Inference Inferencer
	Recorder  Recorder
	Limiter   Admitter
	Ledger    Ledger
	Usage     UsageStore
	// Accounts, if set, gives the accounts owning keys, whose monthly
	// quotas are shared by all their keys. nil: keys' accounts are ignored.
	Accounts Accounts
	// Scheduler is the GPU shield: each admitted call takes a backend
	// slot from it (per-backend max_parallel, a fair queue, overloaded or
	// too_many_concurrent when it cannot). nil: Inference when it is a
	// Scheduler (*inference.Client is), else no shield.
	Scheduler Scheduler
	// RecordTimeout bounds the wait for a usage record's commit (0:
	// DefaultRecordTimeout). The wait runs on a context detached from the
	// caller's, so a client hanging up cannot stop its own billing.
	RecordTimeout time.Duration
	Now           func() time.Time // nil: time.Now
	Logger        *slog.Logger     // nil: discard
	// OnBudgetAlert, if set, is told when a committed request takes a
	// key's or an account's spending this month to or past 50, 80 or 100
	// percent of its monthly budget, once per budget, threshold and month
	// on this instance. It is called with a lock held and must not block.
	// The gateway also logs it.
	OnBudgetAlert func(BudgetAlert)
	// InFlight, if set, is told +1 when a call takes a GPU slot and -1
	// when it gives it back (a metrics gauge).
	InFlight func(delta int)
}

// Gateway runs metered calls. It is safe for concurrent use and starts no
// goroutines.
type Gateway struct {
	inf           Inferencer
	recorder      Recorder
	limiter       Admitter
	ledger        Ledger
	usage         UsageStore
	accounts      Accounts
	sched         Scheduler
	recordTimeout time.Duration
	now           func() time.Time
	log           *slog.Logger
	inFlight      func(int)
	onBudget      func(BudgetAlert)

	alertMu sync.Mutex
	alerted map[string]budgetAlerted // scope+" "+id -> the highest threshold alerted this month
}

// budgetAlerted is the highest threshold alerted for one budget, and in
// which month.
type budgetAlerted struct {
	month time.Time
	pct   int
}

// New returns a Gateway for cfg.
func New(cfg Config) *Gateway {
	g := &Gateway{inf: cfg.Inference, recorder: cfg.Recorder, limiter: cfg.Limiter, ledger: cfg.Ledger,
		usage: cfg.Usage, accounts: cfg.Accounts, sched: cfg.Scheduler, recordTimeout: cfg.RecordTimeout,
		now: cfg.Now, log: cfg.Logger, inFlight: cfg.InFlight, onBudget: cfg.OnBudgetAlert}
	if s, ok := cfg.Inference.(Scheduler); ok && g.sched == nil {
		g.sched = s
	}
	if g.recordTimeout <= 0 {
		g.recordTimeout = DefaultRecordTimeout
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if g.inFlight == nil {
		g.inFlight = func(int) {}
	}
	if g.onBudget == nil {
		g.onBudget = func(BudgetAlert) {}
	}
	return g
}

// Caller is who makes a call: a verified key, the request's id (the usage
// record's unique id) and when the request arrived (for its latency and the
// month it is billed in).
type Caller struct {
	Key       auth.Key
	RequestID string
	Arrived   time.Time
	// Surface is the API the call came through (metering.SurfaceNative,
	// SurfaceOpenAI, SurfaceOllama), recorded on its usage row.
	Surface string
}

// Catalog returns the model catalog calls are resolved against.
func (g *Gateway) Catalog() *inference.Catalog { return g.inf.Catalog() }

// Limits returns key's effective limits: its own, with each unset field
// taken from its plan (none if the plan is not in the catalog: calls for
// such a key are refused with plan_not_found, see plan).
func (g *Gateway) Limits(key auth.Key) tollgate.Limits {
	if p, ok := g.inf.Catalog().Plans[key.Plan]; ok {
		return key.Limits.Over(p.Limits)
	}
	return key.Limits
}

// AccountLimits returns the monthly quotas of the account owning key,
// shared by all its keys: the account's own, each unset one taken from the
// account's plan. A key without an account (or a Gateway without Accounts)
// gives a zero Account and no limits. An account whose plan has left the
// catalog is refused with plan_not_found, as a key's is.
func (g *Gateway) AccountLimits(ctx context.Context, key auth.Key) (auth.Account, tollgate.Limits, error) {
	if key.AccountID == "" || g.accounts == nil {
		return auth.Account{}, tollgate.Limits{}, nil
	}
	a, err := g.accounts.Account(ctx, key.AccountID)
	if err != nil {
		return auth.Account{}, tollgate.Limits{}, err
	}
	lim := a.Limits
	if a.Plan != "" {
		p, ok := g.inf.Catalog().Plans[a.Plan]
		if !ok {
			return a, lim, tollgate.Errorf(tollgate.CodePlanNotFound,
				"this key's account's plan %q is not in the catalog, so its limits are unknown; ask the operator to restore the plan or move the account to another", a.Plan)
		}
		lim = lim.Over(p.Limits)
	}
	return a, tollgate.Limits{MonthlyTokens: lim.MonthlyTokens, MonthlyRequests: lim.MonthlyRequests, MonthlyBudget: lim.MonthlyBudget}, nil
}

// BudgetAlert says that a committed request took a monthly budget's
// spending to or past one of its thresholds.
type BudgetAlert struct {
	Scope     string // "key" or "account"
	ID        string // the key's or the account's id
	AccountID string // with Scope "key": the key's account, if it has one
	Percent   int    // 50, 80 or 100
	Spent     tollgate.Money
	Budget    tollgate.Money
	Currency  string    // the catalog's currency code ("" when unset)
	Month     time.Time // the first instant of the UTC month; the budget resets a month later
	At        time.Time // when the threshold was reached
}

// budgetAlerts alerts, once a month per budget and threshold on this
// instance, for each threshold (50, 80, 100 %) of a.Budget that a.Spent
// has reached.
func (g *Gateway) budgetAlerts(a BudgetAlert) {
	if a.Budget <= 0 {
		return
	}
	a.At = g.now().UTC()
	a.Month = metering.MonthStart(a.At)
	a.Currency = g.inf.Catalog().Currency
	g.alertMu.Lock()
	defer g.alertMu.Unlock()
	k := a.Scope + " " + a.ID
	done := g.alerted[k]
	if !done.month.Equal(a.Month) {
		done = budgetAlerted{month: a.Month}
	}
	for _, pct := range [...]int{50, 80, 100} {
		line := tollgate.Money((int64(a.Budget)*int64(pct) + 99) / 100) // rounded up: 100 % is the budget itself
		if pct > done.pct && a.Spent >= line {
			done.pct, a.Percent = pct, pct
			g.log.Warn("monthly budget threshold reached", "scope", a.Scope, "id", a.ID, "percent", pct,
				"spent", a.Spent.String(), "budget", a.Budget.String())
			g.onBudget(a)
		}
	}
	if g.alerted == nil {
		g.alerted = make(map[string]budgetAlerted)
	}
	g.alerted[k] = done
}

// LimitState reports key's rate and tokens-per-minute standing now, for
// response headers.
func (g *Gateway) LimitState(key auth.Key) limits.State {
	return g.limiter.State(key.ID, g.Limits(key), g.now())
}

// Result is what every call reports, also when it fails after admission:
// the public model, the status its usage record carries, what was billed,
// and Ollama's time to first token.
type Result struct {
	Model      string
	Status     int
	Usage      inference.Usage
	FirstToken time.Duration
}
