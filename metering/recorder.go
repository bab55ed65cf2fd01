package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// BatchStore is where a Recorder commits events. Package storage satisfies
// it with SQLite.
type BatchStore interface {
	// InsertEvents stores events in one durable transaction: when it returns
	// nil, every event is committed or was already stored. An event whose
	// request id is already stored (or appears earlier in the same batch) is
	// skipped, not an error. inserted[i] reports whether events[i] was newly
	// stored; len(inserted) == len(events) when err is nil. On error nothing
	// of the batch is stored.
	//
	// claim decides what is stored. The store calls it exactly once, as
	// soon as it holds whatever lock makes the rest of the transaction
	// quick (for SQLite: after BEGIN IMMEDIATE succeeded, right before the
	// inserts), and reads events only after claim has returned, because
	// claim may rewrite elements of events in place (a Recorder turns each
	// event whose caller withdrew it into its unbilled form, see
	// ErrWithdrawn). A Recorder's claim is one quick pass that never blocks;
	// it may be called from any goroutine but must have returned before
	// InsertEvents does. A store that fails before it holds the lock returns
	// its error without calling claim; one that fails after claim stores
	// nothing, as always on error. Returning nil without having called claim
	// breaks the Recorder's billing guarantee (the Recorder reports it as a
	// failed attempt). Callers other than a Recorder may pass a nil claim:
	// events are then stored as given.
	InsertEvents(ctx context.Context, events []Event, claim func()) (inserted []bool, err error)
}

// ErrClosed is returned by Record after Close has been called.
var ErrClosed = errors.New("metering: recorder closed")

// ErrWithdrawn is returned (wrapped, together with the context's error) by
// Record when its context ended before the event was committed and the
// Recorder could still take the billing back: the event is then stored in
// its withdrawn form, with Status WithdrawnStatus, zero prompt and completion
// tokens and zero Cost (request id, key, endpoint, model, latency and time
// kept), so the row says the request happened and was not billed. That form
// is what OnCommit receives, and it counts no request, tokens or cost against
// the key. (If the batch then fails every attempt, the withdrawn event is
// logged as lost instead, like any other.) A caller that gets ErrWithdrawn
// must not release the response.
var ErrWithdrawn = errors.New("metering: usage record withdrawn, not billed")

// WithdrawnStatus is the status stored for a withdrawn event: the caller
// withholds the response and answers 503 Service Unavailable.
const WithdrawnStatus = 503

// withdrawnForm returns ev as stored when its caller withdrew it.
func withdrawnForm(ev Event) Event {
	ev.Status = WithdrawnStatus
	ev.PromptTokens, ev.CompletionTokens, ev.Cost = 0, 0, 0
	return ev
}

// RecorderOptions tune a Recorder. The zero value is usable.
type RecorderOptions struct {
	// MaxBatch is the most events committed in one transaction
	// (default 512).
	MaxBatch int
	// OnCommit, if set, is called by the writer goroutine after each
	// successful commit with the events that were newly stored: events
	// whose request id was already stored are left out, so feeding quota
	// counters from here never counts a request twice. It runs before the
	// waiting Record calls return, so a quota check after a response sees
	// that response's usage. Withdrawn events come in their withdrawn form
	// (see ErrWithdrawn), which counts nothing. It must be quick and must
	// not call Record. The slice is only valid during the call.
	OnCommit func([]Event)
	// OnBatch, if set, is called by the writer goroutine after each batch
	// with its size, the time spent committing it (retries included) and
	// the final error, for metrics. It must be quick.
	OnBatch func(size int, took time.Duration, err error)
	// Logger receives retry warnings and, as a last resort, every event
	// that could not be committed, at error level, so that no usage is
	// silently lost (default slog.Default()).
	Logger *slog.Logger
	// Attempts is how many times a batch is tried before its events fail
	// (default 4).
	Attempts int
	// Backoff is the wait after the first failed attempt; it doubles after
	// each further one (default 25ms).
	Backoff time.Duration
	// CommitTimeout bounds one attempt to commit a batch (default 10s): it
	// is the context deadline passed to the store, which counts from the
	// start of the attempt, wait for the store's write lock included (a
	// store may overrun it while waiting for its lock if that wait ignores
	// the context, as SQLite's busy wait does; callers withdraw meanwhile).
	// It also bounds how long a Record whose context ended waits past it for
	// the outcome of the attempt that had already claimed its event.
	CommitTimeout time.Duration
}

func (o *RecorderOptions) defaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 25 * time.Millisecond
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
}

// Recorder commits usage events durably with group commit. Record blocks
// until the transaction holding its event has committed; while one
// transaction commits, the next requests queue up and all of them go into the
// following transaction, so the cost of a commit is shared without any timer
// delaying a lone request. A Recorder is safe for concurrent use.
//
// Whether an event is billed is decided once, atomically, per event: either
// the writer claims it for a transaction that already holds the store's
// write lock (it is then stored as recorded, and Record returns nil once that
// transaction has committed), or its caller withdraws it first (it is then
// stored unbilled, and Record returns ErrWithdrawn). No event is ever both
// billed and reported to its caller as an error.
type Recorder struct {
	store BatchStore
	opts  RecorderOptions
	queue chan *pending
	done  chan struct{} // closed when the writer has drained and exited

	mu     sync.RWMutex // guards closed against sends on a closed queue
	closed bool
}

// States of a pending. The writer and the caller change them only by
// compare-and-swap, so each transition is decided once:
//
//	queued    --claim (writer, store holds the write lock)-->  claimed
//	queued    --ctx ends (caller)---------------------------->  withdrawn
//	claimed   --ctx ends (caller, will wait for the attempt)->  late
//	claimed   --attempt failed, will retry (writer)---------->  queued
//	late      --attempt failed, will retry (writer)---------->  withdrawn, caller told at once
//	any but withdrawn --batch over (writer)------------------>  done, caller gets the result
//
// withdrawn and done are final. A withdrawn event is stored in its withdrawn
// form; a done one as recorded if the batch committed, not at all otherwise.
const (
	stateQueued int32 = iota
	stateClaimed
	stateLate
	stateWithdrawn
	stateDone
)

// pending is one queued event and where its result goes.
type pending struct {
	ev    Event
	state atomic.Int32
	// result receives exactly one value per queueing, never more, so the
	// writer never blocks on it: the batch's error once the pending is done,
	// or the failed attempt's error when the writer withdrew it for its late
	// caller. A pending its caller withdrew itself receives nothing.
	result chan error
}

// pendingPool recycles pendings. A pending goes back only from a caller
// that received its final result (state done): by then the writer has
// stopped touching it. A withdrawn pending is left to the GC, since the
// writer may still read its state until its batch is over.
var pendingPool = sync.Pool{New: func() any { return &pending{result: make(chan error, 1)} }}

// NewRecorder starts a Recorder writing to store. Call Close to stop it.
func NewRecorder(store BatchStore, opts RecorderOptions) *Recorder {
	opts.defaults()
	r := &Recorder{
		store: store,
		opts:  opts,
		queue: make(chan *pending, opts.MaxBatch),
		done:  make(chan struct{}),
	}
	go r.run()
	return r
}

// Record queues ev and waits until it is committed, so a handler that calls
// Record before releasing its response never delivers a response whose usage
// could be lost, nor withholds one that was billed. ev.Time is stored in UTC.
// Recording a request id that is already stored succeeds without counting it
// again.
//
// Pass a context detached from the client's request, with a timeout of its
// own, and release the response only when Record returns nil, for example
//
//	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 15*time.Second)
//	defer cancel()
//	if err := rec.Record(ctx, ev); err != nil {
//		// Not billed (errors.Is(err, metering.ErrWithdrawn): stored as
//		// withdrawn; otherwise not stored): withhold the response, answer 503.
//	}
//
// so that a client hanging up does not abandon its own usage record.
//
// If ctx ends before the event is claimed by a transaction (for example
// while another writer holds the database's write lock), Record withdraws
// the event and returns an error that wraps both ErrWithdrawn and ctx's
// error; the event is still stored, in its withdrawn form (see
// ErrWithdrawn). If ctx ends after the event was claimed, the commit is
// already under way: Record waits for that attempt's outcome, at most
// CommitTimeout (provided the store honours its context), and returns nil
// if it committed — the event is billed, so the response must be released.
// If that attempt failed and the batch will be retried, the event is
// withdrawn before the retry and Record returns ErrWithdrawn at once. If ctx
// ends before the event could even be queued, Record returns ctx's error and
// nothing is stored.
//
// Record also returns ErrClosed after Close, a validation error for a
// malformed event, or the store's error when the batch failed every attempt
// (the event is then not stored, and it is logged at error level).
//
// Whatever Record returns, the event is billed (stored as recorded, and
// passed so to OnCommit) if and only if Record returned nil; a request id
// stored before keeps its first row whatever Record returns for it again.
func (r *Recorder) Record(ctx context.Context, ev Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ev.Time = ev.Time.UTC()
	p := pendingPool.Get().(*pending)
	p.ev = ev
	p.state.Store(stateQueued)

	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		pendingPool.Put(p)
		return ErrClosed
	}
	select {
	case r.queue <- p:
		r.mu.RUnlock()
	case <-ctx.Done():
		r.mu.RUnlock()
		pendingPool.Put(p) // never queued: nobody else has seen it
		return ctx.Err()
	}

	select {
	case err := <-p.result:
		// Only a late caller is ever told of a withdrawal, so this is
		// the final result and the writer is done with p.
		recycle(p)
		return err
	case <-ctx.Done():
	}
	for {
		switch p.state.Load() {
		case stateQueued:
			if p.state.CompareAndSwap(stateQueued, stateWithdrawn) {
				// The writer stores it unbilled; p stays with it and
				// the GC takes it.
				return fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
			}
		case stateClaimed:
			if p.state.CompareAndSwap(stateClaimed, stateLate) {
				return r.waitLate(ctx, p)
			}
		default: // done: the final result is on its way
			return r.waitLate(ctx, p)
		}
	}
}

// waitLate waits, past the caller's deadline, for the outcome of the
// attempt that claimed p: its final result, or the writer's word that it
// withdrew p after the attempt failed.
func (r *Recorder) waitLate(ctx context.Context, p *pending) error {
	err := <-p.result
	if p.state.Load() == stateWithdrawn {
		// The writer still holds p in its batch: not recycled.
		return fmt.Errorf("%w after a failed commit attempt (%v): %w", ErrWithdrawn, err, ctx.Err())
	}
	recycle(p)
	return err
}

// recycle returns a pending whose final result its caller has taken.
func recycle(p *pending) {
	p.ev = Event{}
	pendingPool.Put(p)
}

// Close stops accepting events (Record then returns ErrClosed), waits until
// every queued event is committed or has failed, and returns. If ctx ends
// first, Close returns ctx's error and the writer goes on draining in the
// background. Close may be called more than once.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.mu.Unlock()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("metering: close: %d events still queued: %w", len(r.queue), ctx.Err())
	}
}

// run is the writer goroutine: it takes whatever is queued, up to MaxBatch,
// commits it as one batch, and answers the waiting callers.
func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]*pending, 0, r.opts.MaxBatch)
	events := make([]Event, 0, r.opts.MaxBatch)
	committed := make([]Event, 0, r.opts.MaxBatch)
	for {
		p, ok := <-r.queue
		if !ok {
			return
		}
		batch = append(batch[:0], p)
		// Callers just released by the previous commit are runnable but
		// may not have queued yet; let them, so they share this commit
		// instead of each paying for one. This costs no timer.
		runtime.Gosched()
	fill:
		for len(batch) < r.opts.MaxBatch {
			select {
			case p, ok := <-r.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		events = events[:0]
		for _, p := range batch {
			events = append(events, p.ev)
		}
		start := time.Now()
		inserted, err := r.commit(batch, events)
		settle(batch, events)
		if err != nil {
			for _, ev := range events {
				r.opts.Logger.Error("metering: usage record lost", "event", ev, "err", err)
			}
		}
		if r.opts.OnBatch != nil {
			r.opts.OnBatch(len(events), time.Since(start), err)
		}
		if err == nil && r.opts.OnCommit != nil {
			committed = committed[:0]
			for i, ev := range events {
				if inserted[i] {
					committed = append(committed, ev)
				}
			}
			if len(committed) > 0 {
				r.opts.OnCommit(committed)
			}
		}
		for i, p := range batch {
			if p.state.Load() == stateDone {
				p.result <- err // p may be recycled from here on
			}
			batch[i] = nil
		}
		clear(events)
	}
}

// settle ends the batch's decisions: every pending not withdrawn becomes
// done, so its caller waits for the result rather than withdrawing it, and
// every withdrawn event is put in its withdrawn form (for the log of a
// failed batch; a committed batch has them so already).
func settle(batch []*pending, events []Event) {
	for i, p := range batch {
		for {
			s := p.state.Load()
			if s == stateWithdrawn {
				events[i] = withdrawnForm(events[i])
				break
			}
			if p.state.CompareAndSwap(s, stateDone) {
				break
			}
		}
	}
}

// commit tries to store events up to Attempts times with doubling backoff.
// After a failed attempt that will be retried, every claimed event goes back
// to queued, so that its caller may still withdraw it, and every event whose
// caller's context ended while its attempt was in flight is withdrawn and its
// caller told at once.
func (r *Recorder) commit(batch []*pending, events []Event) ([]bool, error) {
	wait := r.opts.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var inserted []bool
		inserted, err = r.insert(batch, events)
		if err == nil {
			return inserted, nil
		}
		if attempt >= r.opts.Attempts {
			break
		}
		unclaim(batch, err)
		r.opts.Logger.Warn("metering: usage batch not committed, retrying",
			"attempt", attempt, "events", len(events), "retry_in", wait, "err", err)
		time.Sleep(wait)
		wait *= 2
	}
	return nil, fmt.Errorf("metering: usage batch of %d not committed after %d attempts: %w", len(events), r.opts.Attempts, err)
}

// unclaim releases the claims of a failed attempt before a retry.
func unclaim(batch []*pending, err error) {
	for _, p := range batch {
		if p.state.CompareAndSwap(stateClaimed, stateQueued) {
			continue
		}
		// Only the writer moves a pending out of late, so this cannot
		// race; the caller did not see claimed -> queued.
		if p.state.CompareAndSwap(stateLate, stateWithdrawn) {
			p.result <- err
		}
	}
}

// insert makes one attempt with its own timeout, independent of any caller.
// The store calls back claim once it holds the write lock: each event still
// queued is claimed for this attempt, each withdrawn one is rewritten in
// place to its withdrawn form. One pass of compare-and-swap, no locks.
func (r *Recorder) insert(batch []*pending, events []Event) ([]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.CommitTimeout)
	defer cancel()
	claimed := false
	claim := func() {
		if claimed {
			return
		}
		claimed = true
		for i, p := range batch {
			if !p.state.CompareAndSwap(stateQueued, stateClaimed) {
				events[i] = withdrawnForm(events[i]) // the only other state here
			}
		}
	}
	inserted, err := r.store.InsertEvents(ctx, events, claim)
	switch {
	case err != nil:
	case !claimed:
		err = errors.New("store returned without calling claim")
	case len(inserted) != len(events):
		err = fmt.Errorf("store reported %d results for %d events", len(inserted), len(events))
	}
	return inserted, err
}
