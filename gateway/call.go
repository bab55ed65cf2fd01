package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"tollgate"
	"tollgate/inference"
	"tollgate/limits"
	"tollgate/metering"
)

// errNotMetered: the answer was ready but its usage could not be committed
// in time; it is withheld rather than given away, and not billed.
var errNotMetered = &tollgate.Error{Code: tollgate.CodeMeteringUnavailable, RetryAfter: time.Second,
	Message: "the answer could not be recorded for billing, so it was not sent and not billed; retry shortly"}

// Authorize reports whether c may use capability cp on the public model
// called name, and returns the model as c's plan restricts it, for a
// surface that answers without a call (nothing is admitted or recorded).
// Errors as for model.
func (g *Gateway) Authorize(c Caller, cp tollgate.Capability, name string) (inference.Model, error) {
	return g.model(c, cp, name)
}

// model authorizes c for capability cp on the public model called name and
// returns the model with its GPU-costly limits lowered to the key's plan.
// Errors: insufficient_scope, model_not_found, invalid_request (the model
// does not serve cp), model_not_allowed.
func (g *Gateway) model(c Caller, cp tollgate.Capability, name string) (inference.Model, error) {
	if err := scope(c, cp); err != nil {
		return inference.Model{}, err
	}
	m, err := g.inf.Catalog().ModelFor(name, cp)
	if err != nil {
		return m, err
	}
	return g.allow(c, m)
}

func scope(c Caller, cp tollgate.Capability) error {
	if !c.Key.HasScope(cp) {
		return tollgate.Errorf(tollgate.CodeInsufficientScope, "this key does not have the %s scope", cp)
	}
	return nil
}

// allow checks that c's key may use m and applies its plan's caps. A key
// whose plan has left the catalog is refused: its limits are unknown, and
// failing open would make it unlimited.
func (g *Gateway) allow(c Caller, m inference.Model) (inference.Model, error) {
	if !c.Key.AllowsModel(m.Name) {
		return m, tollgate.Errorf(tollgate.CodeModelNotAllowed, "this key may not use model %s", strconv.Quote(m.Name))
	}
	if c.Key.Plan == "" {
		return m, nil
	}
	plan, ok := g.inf.Catalog().Plans[c.Key.Plan]
	if !ok {
		return m, tollgate.Errorf(tollgate.CodePlanNotFound,
			"this key's plan %s is not in the catalog, so its limits are unknown; ask the operator to restore the plan or move the key to another", strconv.Quote(c.Key.Plan))
	}
	return plan.Restrict(m), nil
}

// budget is what a request may use: the tokens its prompt can take, the
// most output tokens it may generate, and the least output worth running.
type budget struct {
	prompt, output, minOutput int64
}

// call is one admitted request: it holds a lease on the key's limits and a
// GPU slot until finish.
type call struct {
	g      *Gateway
	caller Caller
	cp     tollgate.Capability
	model  inference.Model
	lease  limits.Lease
	slot   *inference.Slot // nil without a Scheduler
	freed  bool            // the GPU slot was given back
	// accountBudget is the monthly budget of the key's account at
	// admission (0: none), for the alerts.
	accountBudget tollgate.Money
}

// free gives the GPU slot back, once.
func (cl *call) free() {
	if !cl.freed {
		cl.freed = true
		if cl.slot != nil {
			cl.slot.Release()
		}
		cl.g.inFlight(-1)
	}
}

// on returns ctx carrying the call's GPU slot, for the inference call.
func (cl *call) on(ctx context.Context) context.Context {
	if cl.slot == nil {
		return ctx
	}
	return inference.WithSlot(ctx, cl.slot)
}

// releaseOnPanic, deferred right after admit, gives back what the call
// holds when a panic (in Ollama's client, or in a caller's onPiece) skips
// finish: the slot, and the lease settled to nothing (the lease settles
// once, so after finish this changes nothing). Nothing is recorded: the
// client gets a 500. The panic goes on.
func (cl *call) releaseOnPanic(ctx context.Context) {
	if p := recover(); p != nil {
		cl.free()
		_ = cl.lease.Settle(context.WithoutCancel(ctx), limits.Settlement{Now: cl.g.now()})
		panic(p)
	}
}

// admit reserves b against the key's limits, then takes a GPU slot from
// the Scheduler, waiting in the key's fair queue at most the queue wait.
// On error nothing is held and no usage is recorded.
func (g *Gateway) admit(ctx context.Context, c Caller, cp tollgate.Capability, m inference.Model, b budget) (*call, error) {
	_, acct, err := g.AccountLimits(ctx, c.Key)
	if err != nil {
		return nil, err
	}
	lease, err := g.limiter.Admit(ctx, limits.Request{KeyID: c.Key.ID, Limits: g.Limits(c.Key),
		AccountID: c.Key.AccountID, Account: acct, Price: m.Price,
		Prompt: b.prompt, Output: b.output, MinOutput: b.minOutput, Now: g.now()})
	if err != nil {
		return nil, err
	}
	var slot *inference.Slot
	if g.sched != nil {
		slot, err = g.sched.Acquire(ctx, inference.Ticket{Key: c.Key.ID, Weight: g.weight(c.Key.Plan), Model: m})
		if err != nil {
			_ = lease.Settle(context.WithoutCancel(ctx), limits.Settlement{Now: g.now()})
			return nil, err
		}
	}
	g.inFlight(1)
	return &call{g: g, caller: c, cp: cp, model: m, lease: lease, slot: slot, accountBudget: acct.MonthlyBudget}, nil
}

// weight is the fair queue's weight of a key on plan: the plan's (1 when
// it has none or the key has no plan).
func (g *Gateway) weight(plan string) int {
	if p, ok := g.inf.Catalog().Plans[plan]; ok && p.Weight > 0 {
		return p.Weight
	}
	return 1
}

// finish commits the usage record of a call that ended with status,
// billing billed, then settles the lease and gives the GPU slot back, in
// that order: the quota counters include the record before the reservation
// is released, and nothing is released before the record is committed. It
// returns the result and the error the caller must report: callErr, or, if
// the record could not be committed, errNotMetered (the answer must then be
// withheld: it was not billed).
func (cl *call) finish(ctx context.Context, status int, billed inference.Usage, callErr error) (Result, error) {
	g := cl.g
	defer cl.free()
	res := Result{Model: cl.model.Name, Status: status, Usage: billed}
	now := g.now()
	ev := metering.Event{
		RequestID:        cl.caller.RequestID,
		KeyID:            cl.caller.Key.ID,
		AccountID:        cl.caller.Key.AccountID,
		Endpoint:         cl.cp,
		Model:            cl.model.Name,
		Surface:          cl.caller.Surface,
		PromptTokens:     int64(billed.PromptTokens),
		CompletionTokens: int64(billed.CompletionTokens),
		Status:           status,
		Latency:          max(0, now.Sub(cl.caller.Arrived)),
		Cost:             cl.model.Price.Cost(int64(billed.PromptTokens), int64(billed.CompletionTokens)),
		Time:             cl.caller.Arrived.UTC(),
	}
	detached := context.WithoutCancel(ctx)
	rctx, cancel := context.WithTimeout(detached, g.recordTimeout)
	err := g.recorder.Record(rctx, ev)
	cancel()
	if err != nil {
		g.log.Error("usage not recorded: the answer was withheld and the request not billed",
			"request_id", ev.RequestID, "key_id", ev.KeyID, "status", status,
			"withdrawn", errors.Is(err, metering.ErrWithdrawn), "error", err.Error())
		res.Usage, res.Status = inference.Usage{}, tollgate.CodeMeteringUnavailable.Status()
		if callErr == nil {
			callErr = errNotMetered
		}
	}
	_ = cl.lease.Settle(detached, limits.Settlement{Tokens: int64(res.Usage.Total()), Now: g.now(),
		Charged: err == nil && res.Status < 500,
		Cost:    cl.model.Price.Cost(int64(res.Usage.PromptTokens), int64(res.Usage.CompletionTokens))})
	if err == nil && ev.Cost > 0 {
		cl.alert(ev)
	}
	return res, callErr
}

// alert checks the budgets of the call's key and account against what
// their spending became with ev (the counters already hold it).
func (cl *call) alert(ev metering.Event) {
	g := cl.g
	if b := g.Limits(cl.caller.Key).MonthlyBudget; b > 0 {
		g.budgetAlerts(BudgetAlert{Scope: "key", ID: ev.KeyID, AccountID: ev.AccountID, Budget: b, Spent: g.ledger.Month(ev.KeyID).Cost})
	}
	if cl.accountBudget > 0 {
		g.budgetAlerts(BudgetAlert{Scope: "account", ID: ev.AccountID, Budget: cl.accountBudget, Spent: g.ledger.AccountMonth(ev.AccountID).Cost})
	}
}

// finishWhole finishes a call whose answer is delivered whole or not at
// all: billed Ollama's counts (used) when it succeeded, nothing when it
// failed. promptBound is what admission reserved for the prompt.
func (cl *call) finishWhole(ctx context.Context, promptBound int64, used inference.Usage, callErr error) (Result, error) {
	if callErr != nil {
		return cl.finish(ctx, statusOf(callErr), inference.Usage{}, callErr)
	}
	cl.g.checkBound(cl.model, promptBound, used.PromptTokens)
	return cl.finish(ctx, 200, used, nil)
}

// checkBound warns when Ollama counted more prompt tokens than admission
// reserved for them: the quota guarantee rests on that bound, so the
// operator must raise the model's prompt_overhead or prompt_tokens_per_byte.
func (g *Gateway) checkBound(m inference.Model, bound int64, counted int) {
	if int64(counted) > bound {
		g.log.Warn("a prompt took more tokens than admission reserved for it: raise the model's limits.prompt_overhead or limits.prompt_tokens_per_byte in models.yaml",
			"model", m.Name, "prompt_tokens", counted, "reserved", bound)
	}
}

// clientGone wraps the error of a caller's onPiece: the client could not be
// written to, so it is gone.
type clientGone struct{ err error }

func (e clientGone) Error() string { return "the client went away: " + e.err.Error() }
func (e clientGone) Unwrap() error { return e.err }

// ErrorCode is tollgate.CodeClientClosed.
func (e clientGone) ErrorCode() tollgate.Code { return tollgate.CodeClientClosed }

// statusOf is the status a failed call's client gets (or would have got).
func statusOf(err error) int {
	var gone clientGone
	if errors.As(err, &gone) {
		return tollgate.StatusClientClosed
	}
	return tollgate.ErrorCode(err).Status()
}
