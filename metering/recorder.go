package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
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
	InsertEvents(ctx context.Context, events []Event) (inserted []bool, err error)
}

// ErrClosed is returned by Record after Close has been called.
var ErrClosed = errors.New("metering: recorder closed")

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
	// that response's usage. It must be quick and must not call Record. The
	// slice is only valid during the call.
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
	// CommitTimeout bounds one attempt to commit a batch (default 10s).
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
type Recorder struct {
	store BatchStore
	opts  RecorderOptions
	queue chan *pending
	done  chan struct{} // closed when the writer has drained and exited

	mu     sync.RWMutex // guards closed against sends on a closed queue
	closed bool
}

// pending is one queued event and where its result goes.
type pending struct {
	ev     Event
	result chan error // buffered: the writer never blocks on a gone caller
}

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
// could be lost. ev.Time is stored in UTC. Recording a request id that is
// already stored succeeds without counting it again.
//
// Pass a context detached from the client's request, with a timeout of its
// own, for example
//
//	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
//	defer cancel()
//	err := rec.Record(ctx, ev)
//
// so that a client hanging up does not abandon its own usage record. If ctx
// ends first, Record returns ctx's error; an event already queued is still
// committed (and passed to OnCommit), only the wait is given up.
//
// Record returns ErrClosed after Close, a validation error for a malformed
// event, or the store's error when the batch failed every attempt (the event
// is then also logged at error level).
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
		pendingPool.Put(p)
		return ctx.Err()
	}

	select {
	case err := <-p.result:
		p.ev = Event{}
		pendingPool.Put(p) // only reused once its result was taken
		return err
	case <-ctx.Done():
		return ctx.Err() // p stays with the writer; the GC takes it
	}
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
		inserted, err := r.commit(events)
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
			p.result <- err
			batch[i] = nil
		}
		clear(events)
	}
}

// commit tries to store events up to Attempts times with doubling backoff.
// When every attempt fails, it logs each event at error level.
func (r *Recorder) commit(events []Event) ([]bool, error) {
	wait := r.opts.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var inserted []bool
		inserted, err = r.insert(events)
		if err == nil {
			return inserted, nil
		}
		if attempt >= r.opts.Attempts {
			break
		}
		r.opts.Logger.Warn("metering: usage batch not committed, retrying",
			"attempt", attempt, "events", len(events), "retry_in", wait, "err", err)
		time.Sleep(wait)
		wait *= 2
	}
	err = fmt.Errorf("metering: usage batch of %d not committed after %d attempts: %w", len(events), r.opts.Attempts, err)
	for _, ev := range events {
		r.opts.Logger.Error("metering: usage record lost", "event", ev, "err", err)
	}
	return nil, err
}

// insert makes one attempt with its own timeout, independent of any caller.
func (r *Recorder) insert(events []Event) ([]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.CommitTimeout)
	defer cancel()
	inserted, err := r.store.InsertEvents(ctx, events)
	if err == nil && len(inserted) != len(events) {
		err = fmt.Errorf("store reported %d results for %d events", len(inserted), len(events))
	}
	return inserted, err
}
