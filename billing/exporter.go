package billing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Meters are the event names to send, one per quantity ("" = not sent).
type Meters struct {
	// Tokens: prompt plus completion tokens (default "tollgate_tokens").
	Tokens string
	// Requests: requests charged to a request quota (status below 500).
	Requests string
	// Cost: what the requests cost, in micro-units of the catalog's
	// currency (a whole number, as meter values are).
	Cost string
}

// Config configures an Exporter. Store and Sender are required.
type Config struct {
	// Name keys the exporter's state in the store ("" = "stripe").
	Name   string
	Store  Store
	Sender Sender
	Meters Meters
	// Interval is the width of the intervals usage is summed over, and
	// how often a batch is sent (0 = one minute).
	Interval time.Duration
	// Delay is how long after an interval ends it is sent, so that records
	// still on their way to the database arrive first (0 = 10 s).
	// Records later still are sent in a later batch, never lost.
	Delay time.Duration
	// Since is where the very first export starts (zero: the interval the
	// exporter first runs in; older usage is not sent). Only the first run
	// reads it: after that the cursor decides.
	Since time.Time
	// Flush, if set, is called before each batch is planned: it should
	// return once usage recorded so far is in the database (the journal's
	// Flush).
	Flush func(context.Context) error
	// Owner names this process for the export lease; replicas of one
	// database must differ, a restarted process should keep its own
	// ("" = random).
	Owner string
	// Lease is how long the lease lasts unless renewed, so how long a dead
	// exporter keeps the others waiting (0 = 2 * max(Interval, MaxBackoff)).
	Lease time.Duration
	// MaxBackoff caps the wait between failed attempts (0 = 5 min).
	MaxBackoff time.Duration
	// Parallel is how many events are sent at once (0 = 4).
	Parallel int
	// OnEvents, if set, counts events by outcome: "accepted", "failed",
	// or "no_customer" (an account's usage without a Stripe customer id).
	OnEvents func(outcome string, n int)
	Now      func() time.Time // nil = time.Now
	Logger   *slog.Logger     // nil = discard
}

// maxIntervalsPerBatch bounds a batch when the cursor is far behind (after
// downtime, or a Since long ago): catching up takes several batches.
const maxIntervalsPerBatch = 60

// Exporter sends committed usage to a Sender exactly once; see the package
// documentation. Its methods are safe for concurrent use.
type Exporter struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	leader   bool
	planKey  Cursor          // the To of the plan accepted belongs to
	accepted map[string]bool // identifiers of planKey's batch already accepted
	noCust   map[string]bool // accounts already logged as having no customer id
	cursor   Cursor          // last known cursor, for Lag
	next     time.Time       // when Run tries again
	failures int             // consecutive failed steps
}

// New checks cfg and returns an Exporter; Run starts it.
func New(cfg Config) (*Exporter, error) {
	if cfg.Store == nil || cfg.Sender == nil {
		return nil, errors.New("billing: an exporter needs a store and a sender")
	}
	if cfg.Meters == (Meters{}) {
		return nil, errors.New("billing: no meter to send (tokens, requests and cost event names are all empty)")
	}
	if cfg.Interval < 0 || cfg.Delay < 0 {
		return nil, errors.New("billing: the interval and delay cannot be negative")
	}
	if cfg.Name == "" {
		cfg.Name = "stripe"
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Delay == 0 {
		cfg.Delay = 10 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * max(cfg.Interval, cfg.MaxBackoff)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Owner == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Owner = "exporter-" + hex.EncodeToString(b[:])
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Exporter{cfg: cfg, log: log, noCust: make(map[string]bool)}, nil
}

// Identifier is the identifier of the event for one account, interval and
// event name in the batch ending at to: the same on every resend of that
// batch, different in any other batch.
func Identifier(exporter, eventName, accountID string, start time.Time, to Cursor) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d\x00%d\x00%d",
		exporter, eventName, accountID, start.UnixNano(), to.Before.UnixNano(), to.Seq))
	return "tg_" + hex.EncodeToString(h[:16])
}

// Step does one round: it takes (or renews) the lease, plans a batch unless
// one is pending, sends its events and moves the cursor. It reports whether
// more usage is already due (the batch was capped), and returns
// ErrNotLeader when another process exports. A failed send leaves the
// batch pending, to be sent again identically.
func (e *Exporter) Step(ctx context.Context) (more bool, err error) {
	st, plan, more, err := e.plan(ctx)
	if err != nil || plan == nil {
		return false, err
	}
	n, err := e.send(ctx, *plan)
	if err != nil {
		if ctx.Err() == nil { // a shutdown cutting a send short is no failure to show
			e.recordError(ctx, err)
		}
		return false, err
	}
	st, err = e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != e.cfg.Owner {
			return ErrNotLeader
		}
		if s.Pending == nil || !s.Pending.Equal(*plan) {
			return fmt.Errorf("billing: the pending batch changed while it was sent")
		}
		s.Cursor, s.Pending = plan.To, nil
		s.LastExport, s.LastError, s.LastErrorAt = e.cfg.Now().UTC(), "", time.Time{}
		s.EventsSent += int64(n)
		s.Batches++
		return nil
	})
	if err != nil {
		e.setLeader(!errors.Is(err, ErrNotLeader))
		return false, fmt.Errorf("billing: advance the cursor: %w", err)
	}
	e.mu.Lock()
	e.cursor, e.accepted = st.Cursor, nil
	e.mu.Unlock()
	e.log.Info("billing: batch exported", "exporter", e.cfg.Name, "events", n,
		"before", st.Cursor.Before.Format(time.RFC3339), "seq", st.Cursor.Seq)
	return more, nil
}

// plan claims the lease and returns the batch to send: the pending one, or
// a new one (stored as pending first); nil when nothing is due.
func (e *Exporter) plan(ctx context.Context) (State, *Plan, bool, error) {
	if e.cfg.Flush != nil {
		if err := e.cfg.Flush(ctx); err != nil {
			e.log.Warn("billing: usage journal not flushed; planning with what is in the database", "error", err.Error())
		}
	}
	horizon, err := e.cfg.Store.UsageHorizon(ctx)
	if err != nil {
		return State{}, nil, false, fmt.Errorf("billing: usage horizon: %w", err)
	}
	now := e.cfg.Now().UTC()
	due := Floor(now.Add(-e.cfg.Delay), e.cfg.Interval)
	var more bool
	st, err := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != "" && s.Owner != e.cfg.Owner && now.Before(s.LeaseUntil) {
			return ErrNotLeader
		}
		s.Owner, s.LeaseUntil = e.cfg.Owner, now.Add(e.cfg.Lease)
		if s.Cursor.Equal(Cursor{}) { // the first run
			start := e.cfg.Since.UTC()
			if start.IsZero() || start.After(due) {
				start = due
			}
			s.Cursor = Cursor{Before: start, Seq: horizon}
		}
		if s.Pending != nil {
			return nil
		}
		if horizon < s.Cursor.Seq {
			// Only after tollgate migrate: transactions older than the
			// copy may still commit rows the cursor already counts as
			// past. Wait until they have ended.
			return nil
		}
		to := Cursor{Before: due, Seq: horizon}
		if limit := s.Cursor.Before.Add(maxIntervalsPerBatch * e.cfg.Interval); to.Before.After(limit) {
			to.Before, more = limit, true
		}
		if to.Before.Before(s.Cursor.Before) {
			to.Before = s.Cursor.Before
		}
		if to.Equal(s.Cursor) {
			return nil
		}
		s.Pending = &Plan{From: s.Cursor, To: to, Interval: e.cfg.Interval}
		return nil
	})
	e.setLeader(err == nil)
	if err != nil {
		if !errors.Is(err, ErrNotLeader) {
			err = fmt.Errorf("billing: plan a batch: %w", err)
		}
		return st, nil, false, err
	}
	e.mu.Lock()
	e.cursor = st.Cursor
	e.mu.Unlock()
	return st, st.Pending, more, nil
}

// events turns a batch's groups into meter events.
func (e *Exporter) events(groups []Group, p Plan) []Event {
	now := e.cfg.Now().UTC()
	oldest := now.Add(-35*24*time.Hour + time.Hour) // Stripe takes timestamps up to 35 days old
	var out []Event
	for _, g := range groups {
		if g.CustomerID == "" {
			e.noCustomer(g)
			continue
		}
		ts := g.Start
		if ts.Before(oldest) {
			ts = oldest
		}
		if ts.After(now) {
			ts = now
		}
		for _, m := range [...]struct {
			name  string
			value int64
		}{{e.cfg.Meters.Tokens, g.Tokens}, {e.cfg.Meters.Requests, g.Requests}, {e.cfg.Meters.Cost, int64(g.Cost)}} {
			if m.name == "" || m.value <= 0 {
				continue
			}
			out = append(out, Event{
				Identifier: Identifier(e.cfg.Name, m.name, g.AccountID, g.Start, p.To),
				EventName:  m.name, CustomerID: g.CustomerID, Value: m.value, Timestamp: ts,
			})
		}
	}
	return out
}

// noCustomer logs, once per account and process, usage that has no Stripe
// customer to go to.
func (e *Exporter) noCustomer(g Group) {
	if e.cfg.OnEvents != nil {
		e.cfg.OnEvents("no_customer", 1)
	}
	e.mu.Lock()
	seen := e.noCust[g.AccountID]
	e.noCust[g.AccountID] = true
	e.mu.Unlock()
	if !seen {
		e.log.Warn("billing: account has usage but no Stripe customer id; its usage is not sent (set one with tollgate accounts update --stripe-customer)",
			"account", g.AccountID)
	}
}

// send sends every event of p not yet accepted, Parallel at a time, and
// returns how many events the batch has, or the first failure.
func (e *Exporter) send(ctx context.Context, p Plan) (int, error) {
	groups, err := e.cfg.Store.BillingGroups(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("billing: sum usage: %w", err)
	}
	evs := e.events(groups, p)
	e.mu.Lock()
	if !e.planKey.Equal(p.To) || e.accepted == nil {
		e.planKey, e.accepted = p.To, make(map[string]bool)
	}
	e.mu.Unlock()
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		sem   = make(chan struct{}, e.cfg.Parallel)
	)
	for _, ev := range evs {
		e.mu.Lock()
		done := e.accepted[ev.Identifier]
		e.mu.Unlock()
		if done {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := e.cfg.Sender.Send(ctx, ev)
			outcome := "accepted"
			if err != nil {
				outcome = "failed"
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
			} else {
				e.mu.Lock()
				e.accepted[ev.Identifier] = true
				e.mu.Unlock()
			}
			if e.cfg.OnEvents != nil {
				e.cfg.OnEvents(outcome, 1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, fmt.Errorf("billing: send meter events: %w", first)
	}
	return len(evs), nil
}

// recordError stores the failure for GET /admin/billing and logs it.
func (e *Exporter) recordError(ctx context.Context, err error) {
	e.log.Error("billing: export failed; the batch stays pending and is sent again", "exporter", e.cfg.Name, "error", err.Error())
	_, uerr := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		s.LastError, s.LastErrorAt = err.Error(), e.cfg.Now().UTC()
		return nil
	})
	if uerr != nil {
		e.log.Error("billing: store the export error", "error", uerr.Error())
	}
}

func (e *Exporter) setLeader(b bool) {
	e.mu.Lock()
	e.leader = b
	e.mu.Unlock()
}
