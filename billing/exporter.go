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
	// still on their way to the database arrive first (0: at once).
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
	// or "no_customer" (an account's interval of usage without a Stripe
	// customer id, counted once its batch is done).
	OnEvents func(outcome string, n int)
	Now      func() time.Time // nil = time.Now
	Logger   *slog.Logger     // nil = discard
}

// maxIntervalsPerBatch bounds a batch when the cursor is far behind (after
// downtime, or a Since long ago): catching up takes several batches, sent
// one after the other.
const maxIntervalsPerBatch = 60

// Exporter sends committed usage to a Sender exactly once; see the package
// documentation. Its methods are safe for concurrent use.
type Exporter struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	leader   bool
	noCust   map[string]bool // accounts already logged as having no customer id
	cursor   Cursor          // last known cursor, for Lag
	oldest   time.Time       // oldest usage not yet sent, as last read
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
		cfg.Owner = "exporter-" + randomHex(8)
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
// event name in the batch ending at to, for an exporter and epoch: the same
// on every resend of that batch, different in any other batch.
func Identifier(exporter, epoch, eventName, accountID string, start time.Time, to Cursor) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%d\x00%d\x00%d",
		exporter, epoch, eventName, accountID, start.UnixNano(), to.Before.UnixNano(), to.Seq))
	return "tg_" + hex.EncodeToString(h[:16])
}

// Step does one round: it takes (or renews) the lease, plans a batch unless
// one is pending, sends its events and moves the cursor. It reports whether
// more usage is already due (the batch was capped, or a pending batch was
// finished), and returns ErrNotLeader when another process exports. A
// failed send leaves the batch pending, to be sent again identically,
// without the events already accepted.
func (e *Exporter) Step(ctx context.Context) (more bool, err error) {
	st, plan, err := e.plan(ctx)
	if err != nil || plan == nil {
		return false, err
	}
	n, noCust, err := e.send(ctx, st, *plan)
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
	if noCust > 0 && e.cfg.OnEvents != nil {
		e.cfg.OnEvents("no_customer", noCust)
	}
	e.observe(ctx, st.Cursor)
	e.log.Info("billing: batch exported", "exporter", e.cfg.Name, "events", n,
		"before", st.Cursor.Before.Format(time.RFC3339), "seq", st.Cursor.Seq)
	return st.Cursor.Before.Before(e.due()), nil
}

// due is where the cursor's time should be now: the end of the last
// interval that ended Delay ago.
func (e *Exporter) due() time.Time {
	return Floor(e.cfg.Now().UTC().Add(-e.cfg.Delay), e.cfg.Interval)
}

// observe keeps the cursor and the oldest usage not yet sent, for Lag.
func (e *Exporter) observe(ctx context.Context, c Cursor) {
	oldest, err := e.cfg.Store.OldestUnexported(ctx, c.Seq)
	if err != nil {
		e.log.Warn("billing: read the oldest usage not yet sent", "error", err.Error())
	}
	e.mu.Lock()
	e.cursor = c
	if err == nil {
		e.oldest = oldest
	}
	e.mu.Unlock()
}

// plan claims the lease and returns the state and the batch to send: the
// pending one, or a new one (stored as pending first); nil when nothing is
// due.
func (e *Exporter) plan(ctx context.Context) (State, *Plan, error) {
	if e.cfg.Flush != nil {
		if err := e.cfg.Flush(ctx); err != nil {
			e.log.Warn("billing: usage journal not flushed; planning with what is in the database", "error", err.Error())
		}
	}
	horizon, err := e.cfg.Store.UsageHorizon(ctx)
	if err != nil {
		return State{}, nil, fmt.Errorf("billing: usage horizon: %w", err)
	}
	now := e.cfg.Now().UTC()
	due := e.due()
	st, err := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != "" && s.Owner != e.cfg.Owner && now.Before(s.LeaseUntil) {
			return ErrNotLeader
		}
		s.Owner, s.LeaseUntil = e.cfg.Owner, now.Add(e.cfg.Lease)
		if s.Epoch == "" {
			s.Epoch = randomHex(8)
		}
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
			to.Before = limit
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
		return st, nil, err
	}
	if st.Pending == nil {
		e.observe(ctx, st.Cursor)
	}
	return st, st.Pending, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// events turns a batch's groups into meter events, and counts the groups
// without a customer.
func (e *Exporter) events(groups []Group, st State, p Plan) ([]Event, int) {
	now := e.cfg.Now().UTC()
	oldest := now.Add(-35*24*time.Hour + time.Hour) // Stripe takes timestamps up to 35 days old
	var out []Event
	noCust := 0
	for _, g := range groups {
		if g.CustomerID == "" {
			e.noCustomer(g)
			noCust++
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
				Identifier: Identifier(e.cfg.Name, st.Epoch, m.name, g.AccountID, g.Start, p.To),
				EventName:  m.name, CustomerID: g.CustomerID, Value: m.value, Timestamp: ts,
			})
		}
	}
	return out, noCust
}

// noCustomer logs, once per account and process, usage that has no Stripe
// customer to go to.
func (e *Exporter) noCustomer(g Group) {
	e.mu.Lock()
	seen := e.noCust[g.AccountID]
	e.noCust[g.AccountID] = true
	e.mu.Unlock()
	if !seen {
		e.log.Warn("billing: account has usage but no Stripe customer id; its usage is not sent (set one with tollgate accounts update --stripe-customer)",
			"account", g.AccountID)
	}
}

// send sends every event of p that the billing system has not accepted
// yet, Parallel at a time, storing each acceptance, and renewing the lease
// as it goes. It returns how many events the batch has and how many of its
// groups have no customer, or the first failure.
func (e *Exporter) send(ctx context.Context, st State, p Plan) (events, noCust int, err error) {
	groups, err := e.cfg.Store.BillingGroups(ctx, p)
	if err != nil {
		return 0, 0, fmt.Errorf("billing: sum usage: %w", err)
	}
	evs, noCust := e.events(groups, st, p)
	done, err := e.cfg.Store.AcceptedEvents(ctx, e.cfg.Name)
	if err != nil {
		return 0, 0, fmt.Errorf("billing: read accepted events: %w", err)
	}
	accepted := make(map[string]bool, len(done))
	for _, id := range done {
		accepted[id] = true
	}
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		first   error
		sem     = make(chan struct{}, e.cfg.Parallel)
		renewed = e.cfg.Now()
	)
	fail := func(err error) {
		errMu.Lock()
		if first == nil {
			first = err
		}
		errMu.Unlock()
	}
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return first != nil
	}
	for _, ev := range evs {
		if accepted[ev.Identifier] {
			continue
		}
		if e.cfg.Now().Sub(renewed) > e.cfg.Lease/3 {
			if err := e.renew(ctx); err != nil {
				fail(err)
				break
			}
			renewed = e.cfg.Now()
		}
		sem <- struct{}{}
		if failed() { // stop at the first failure: the batch is sent again anyway
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := e.cfg.Sender.Send(ctx, ev); err != nil {
				fail(err)
				if e.cfg.OnEvents != nil {
					e.cfg.OnEvents("failed", 1)
				}
				return
			}
			if e.cfg.OnEvents != nil {
				e.cfg.OnEvents("accepted", 1)
			}
			if err := e.cfg.Store.MarkAccepted(ctx, e.cfg.Name, ev.Identifier); err != nil {
				// Sent again later; within its deduplication window the
				// billing system refuses it as a duplicate.
				e.log.Warn("billing: store an accepted event", "identifier", ev.Identifier, "error", err.Error())
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, 0, fmt.Errorf("billing: send meter events: %w", first)
	}
	return len(evs), noCust, nil
}

// renew extends this process's lease, or returns ErrNotLeader if another
// process holds it now.
func (e *Exporter) renew(ctx context.Context) error {
	_, err := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != e.cfg.Owner {
			return ErrNotLeader
		}
		s.LeaseUntil = e.cfg.Now().UTC().Add(e.cfg.Lease)
		return nil
	})
	if err != nil {
		e.setLeader(!errors.Is(err, ErrNotLeader))
	}
	return err
}

// recordError stores the failure for GET /admin/billing and logs it.
func (e *Exporter) recordError(ctx context.Context, err error) {
	e.log.Error("billing: export failed; the batch stays pending and is sent again", "exporter", e.cfg.Name, "error", err.Error())
	_, uerr := e.cfg.Store.UpdateBilling(ctx, e.cfg.Name, func(s *State) error {
		if s.Owner != e.cfg.Owner { // a newer leader's state is not this process's to change
			return ErrNotLeader
		}
		s.LastError, s.LastErrorAt = err.Error(), e.cfg.Now().UTC()
		return nil
	})
	if uerr != nil && !errors.Is(uerr, ErrNotLeader) {
		e.log.Error("billing: store the export error", "error", uerr.Error())
	}
}

func (e *Exporter) setLeader(b bool) {
	e.mu.Lock()
	e.leader = b
	e.mu.Unlock()
}
