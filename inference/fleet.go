package inference

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"tollgate"

	"github.com/ollama/ollama/api"
)

// Backend states in BackendStatus.
const (
	StateUp   = "up"
	StateDown = "down"
)

// ollamaKeepAlive is how long Ollama keeps a model loaded after a call
// that sets no keep_alive: what the Client assumes after a call until the
// next health check reads /api/ps.
const ollamaKeepAlive = 5 * time.Minute

// ErrQueueTimeout is a call that waited its whole queue wait and found no
// backend slot free.
var ErrQueueTimeout = &tollgate.Error{Code: tollgate.CodeOverloaded, RetryAfter: time.Second,
	Message: "every GPU serving this model is busy with other requests; retry shortly"}

// ErrQueueFull is a call refused because its key already has as many calls
// waiting as a key may.
var ErrQueueFull = &tollgate.Error{Code: tollgate.CodeTooManyConcurrent, RetryAfter: time.Second,
	Message: "this key already has the most requests waiting for a GPU that one key may have; wait for some to finish"}

// Ticket is what Acquire needs to know about a call.
type Ticket struct {
	Key    string // the fair queue's unit: a key id
	Weight int    // the key's plan weight (0: 1)
	Model  Model
}

// Slot is a call's place on a backend, from Acquire until Release. Pass it
// to Generate, Embed or Predict with WithSlot; a failover moves it to
// another backend.
type Slot struct {
	c        *Client
	b        *backend // guarded by c.mu
	tried    []*backend
	released bool
}

// Backend returns the name of the backend the slot is on now.
func (s *Slot) Backend() string {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.b.name
}

// Release gives the slot back (once; later calls do nothing) and hands it
// to the next call in the fair queue that can use it.
func (s *Slot) Release() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	s.b.inflight--
	s.c.dispatch()
}

type slotKey struct{}

// WithSlot returns ctx carrying s: calls made with it run on s's backend.
func WithSlot(ctx context.Context, s *Slot) context.Context {
	return context.WithValue(ctx, slotKey{}, s)
}

func slotFrom(ctx context.Context) *Slot {
	s, _ := ctx.Value(slotKey{}).(*Slot)
	return s
}

// Acquire finds a backend for t's model with a free slot and takes it:
// among the backends that serve the model and are up (all of them when
// none is), those that have the model loaded first, then the least loaded
// relative to max_parallel, then the heaviest. When none has a free slot
// the call waits in t.Key's queue, served in turn with other keys' queues
// (deficit round robin weighted by t.Weight), for at most the queue wait.
//
// Errors: ErrQueueFull when t.Key already has the most calls waiting,
// ErrQueueTimeout when the wait ran out, ctx's error when it ended first.
func (c *Client) Acquire(ctx context.Context, t Ticket) (*Slot, error) {
	c.mu.Lock()
	if b := c.pick(t.Model, nil, false); b != nil {
		c.take(b)
		c.mu.Unlock()
		return &Slot{c: c, b: b}, nil
	}
	if len(c.serving(t.Model)) == 0 {
		c.mu.Unlock()
		return nil, &UpstreamError{Message: "no backend in the catalog serves model " + quote(t.Model.Name)}
	}
	if c.queue.queued(t.Key) >= c.cfg.perKey {
		c.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{key: t.Key, model: t.Model, done: make(chan struct{})}
	c.queue.push(w, t.Weight)
	c.mu.Unlock()

	timer := time.NewTimer(c.cfg.queueWait)
	defer timer.Stop()
	var err error
	select {
	case <-w.done:
		return &Slot{c: c, b: w.granted}, nil
	case <-timer.C:
		err = ErrQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	if c.queue.remove(w) {
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	// A slot was handed over as the wait ended.
	s := &Slot{c: c, b: w.granted}
	if ctx.Err() != nil {
		s.Release()
		return nil, ctx.Err()
	}
	return s, nil
}

// acquireNow takes a slot for m at once, over capacity if need be: for a
// call made without Acquire.
func (c *Client) acquireNow(m Model) *Slot {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.pick(m, nil, true)
	if b == nil {
		b = c.backends[0]
	}
	c.take(b)
	return &Slot{c: c, b: b}
}

func (c *Client) take(b *backend) {
	b.inflight++
	b.requests++
}

// serving returns the backends that serve m. Called with c.mu held.
func (c *Client) serving(m Model) []*backend {
	var out []*backend
	for _, b := range c.backends {
		if m.ServedBy(b.name) {
			out = append(out, b)
		}
	}
	return out
}

// pick chooses the backend for m, skipping those in exclude: among those
// up (all when none is up), with a free slot unless over, the one with m
// loaded, then the least loaded relative to its capacity, then the
// heaviest, then the first in the catalog. nil when none fits. Called with
// c.mu held.
func (c *Client) pick(m Model, exclude []*backend, over bool) *backend {
	now := c.cfg.now()
	var pool []*backend
	for _, b := range c.serving(m) {
		if b.up && !slices.Contains(exclude, b) {
			pool = append(pool, b)
		}
	}
	if len(pool) == 0 {
		for _, b := range c.serving(m) {
			if !slices.Contains(exclude, b) {
				pool = append(pool, b)
			}
		}
	}
	var best *backend
	bestLoaded := false
	for _, b := range pool {
		if !over && b.inflight >= b.capacity {
			continue
		}
		loaded := b.hasLoaded(m.Ollama, now)
		switch {
		case best == nil:
		case loaded != bestLoaded:
			if !loaded {
				continue
			}
		case b.inflight*best.capacity != best.inflight*b.capacity:
			if b.inflight*best.capacity > best.inflight*b.capacity {
				continue
			}
		case b.weight <= best.weight:
			continue
		}
		best, bestLoaded = b, loaded
	}
	return best
}

// hasLoaded reports whether the Ollama model called name is loaded on b
// now, as far as the Client knows. Called with c.mu held.
func (b *backend) hasLoaded(name string, now time.Time) bool {
	for have, until := range b.loaded {
		if until.After(now) && hasModel([]string{have}, name) {
			return true
		}
	}
	return false
}

// dispatch hands free slots to queued calls, in the fair queue's order.
// Called with c.mu held.
func (c *Client) dispatch() {
	for {
		w := c.queue.next(func(w *waiter) bool { return c.pick(w.model, nil, false) != nil })
		if w == nil {
			return
		}
		b := c.pick(w.model, nil, false)
		c.take(b)
		w.granted = b
		close(w.done)
	}
}

// reroute moves s to another backend serving m after its call failed
// there without a byte sent to the client: one with a free slot if there
// is one, else the least loaded (a failover does not wait in the queue).
// false when every backend serving m has been tried.
func (c *Client) reroute(s *Slot, m Model) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.tried = append(s.tried, s.b)
	nb := c.pick(m, s.tried, false)
	if nb == nil {
		nb = c.pick(m, s.tried, true)
	}
	if nb == nil {
		return false
	}
	s.b.inflight--
	c.take(nb)
	s.b = nb
	c.dispatch()
	return true
}

// run calls call on the backend of ctx's slot (one taken for the call when
// ctx has none) and, when it fails before anything was produced in a way
// another backend may not (refused connection, timeout, 5xx, broken
// connection, Ollama busy, model not installed), on the next backend, until
// one succeeds or every backend serving m was tried. call reports whether
// it produced anything (then it is never retried). Failures that say the
// backend is unwell eject it for the cool-down.
func (c *Client) run(ctx context.Context, m Model, call func(b *backend) (started bool, err error)) error {
	s := slotFrom(ctx)
	if s == nil {
		s = c.acquireNow(m)
		defer s.Release()
	}
	for {
		c.mu.Lock()
		b := s.b
		c.mu.Unlock()
		started, err := call(b)
		if err == nil {
			c.succeeded(b, m)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if ejects(err) {
			c.eject(b, err)
		}
		if started || !failsOver(err) || !c.reroute(s, m) {
			return err
		}
		c.cfg.log.Warn("failing over to another Ollama backend", "model", m.Name, "from", b.url, "to", s.Backend(), "error", err.Error())
	}
}

// ejects reports whether err says its backend is unwell.
func ejects(err error) bool {
	var ue *UnreachableError
	var te *TimeoutError
	var up *UpstreamError
	switch {
	case errors.As(err, &ue), errors.As(err, &te):
		return true
	case errors.As(err, &up):
		return up.Status >= 500 || up.broken
	}
	return false
}

// failsOver reports whether a call that failed with err before producing
// anything may be tried on another backend.
func failsOver(err error) bool {
	var mm *ModelMissingError
	return ejects(err) || errors.Is(err, ErrBusy) || errors.As(err, &mm)
}

// eject takes b out of routing for the cool-down after a failed call.
func (c *Client) eject(b *backend, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.now()
	b.failures++
	b.downUntil = now.Add(c.cfg.cooldown)
	c.down(b, now, err.Error())
}

// down marks b down for why. Called with c.mu held.
func (c *Client) down(b *backend, now time.Time, why string) {
	b.why = why
	if b.up {
		b.up, b.since = false, now
		b.ejections++
		c.cfg.log.Warn("Ollama backend down", "backend", b.name, "url", b.url, "why", why)
	}
}

// upAgain marks b up, unless it is cooling down. Called with c.mu held.
func (c *Client) upAgain(b *backend, now time.Time) {
	if b.up || now.Before(b.downUntil) {
		return
	}
	b.up, b.since, b.why = true, now, ""
	c.cfg.log.Info("Ollama backend up", "backend", b.name, "url", b.url)
	c.dispatch()
}

// succeeded notes that b answered a call for m: it is up (the call proves
// it) and has m loaded, for Ollama's default keep-alive or until the next
// health check says otherwise.
func (c *Client) succeeded(b *backend, m Model) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.now()
	if !b.hasLoaded(m.Ollama, now) {
		b.loaded[m.Ollama] = now.Add(ollamaKeepAlive)
	}
	if !b.up {
		b.downUntil = time.Time{}
		c.upAgain(b, now)
	}
}

// Run checks every backend's health now and then every interval until ctx
// ends: GET /api/version (it answers), then GET /api/ps (which models it
// has loaded, and until when). A backend that fails a check is down; one
// that passes is up again once its cool-down is over.
func (c *Client) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.Check(ctx, min(every, 5*time.Second))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check runs one health check of every backend at once, each bounded by
// timeout.
func (c *Client) Check(ctx context.Context, timeout time.Duration) {
	c.mu.Lock()
	backends := slices.Clone(c.backends)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range backends {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var status int
			_, err := b.api.Version(withStatus(cctx, &status))
			loaded := map[string]time.Time{}
			if err == nil {
				var ps *api.ProcessResponse
				if ps, err = b.api.ListRunning(withStatus(cctx, &status)); err == nil {
					for _, m := range ps.Models {
						loaded[m.Model] = m.ExpiresAt
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			now := c.cfg.now()
			if err != nil {
				c.down(b, now, "health check: "+b.classify(cctx, err, status, "").Error())
				return
			}
			b.loaded = loaded
			c.upAgain(b, now)
		})
	}
	wg.Wait()
}

// BackendStatus is what the Client knows about one backend.
type BackendStatus struct {
	Name        string
	URL         string
	State       string    // StateUp or StateDown
	Since       time.Time // when it entered State
	Why         string    // why it is down
	Loaded      []LoadedModel
	InFlight    int // calls running on it
	MaxParallel int
	Weight      int
	Queued      int    // calls waiting for a slot, for a model it serves
	Requests    uint64 // calls sent to it
	Failures    uint64 // calls that failed in a way that ejects it
	Ejections   uint64 // times it went down
}

// LoadedModel is an Ollama model a backend has loaded, until when.
type LoadedModel struct {
	Name  string
	Until time.Time
}

// Backends returns the state of every backend, in catalog order.
func (c *Client) Backends() []BackendStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.now()
	out := make([]BackendStatus, 0, len(c.backends))
	for _, b := range c.backends {
		st := BackendStatus{Name: b.name, URL: b.url, State: StateDown, Since: b.since, Why: b.why,
			InFlight: b.inflight, MaxParallel: b.capacity, Weight: b.weight,
			Requests: b.requests, Failures: b.failures, Ejections: b.ejections}
		if b.up {
			st.State = StateUp
		}
		for name, until := range b.loaded {
			if until.After(now) {
				st.Loaded = append(st.Loaded, LoadedModel{Name: name, Until: until})
			}
		}
		sort.Slice(st.Loaded, func(i, j int) bool { return st.Loaded[i].Name < st.Loaded[j].Name })
		for _, kq := range c.queue.keys {
			for _, w := range kq.items {
				if w.model.ServedBy(b.name) {
					st.Queued++
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// Queued returns how many calls wait for a slot.
func (c *Client) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queue.n
}

// Reload makes cat the catalog without dropping a call: a backend whose
// URL and timeouts are unchanged keeps its state, calls and loaded models
// (with its new name, weight and max_parallel); a new one starts up; a
// removed one takes no more calls, and those running on it finish.
func (c *Client) Reload(cat *Catalog) {
	c.install(cat)
}

func (c *Client) install(cat *Catalog) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := map[string]*backend{}
	for _, b := range c.backends {
		old[b.url] = b
	}
	list := make([]*backend, 0, len(cat.Backends))
	for _, cb := range cat.Backends {
		b, ok := old[cb.URL]
		if ok && b.connect == cb.ConnectTimeout && b.firstByte == cb.FirstByteTimeout {
			delete(old, cb.URL)
			b.name = cb.Name
		} else {
			b = c.newBackend(cb)
		}
		b.weight, b.capacity = max(1, cb.Weight), cb.MaxParallel
		if b.capacity <= 0 {
			b.capacity = c.cfg.parallel
		}
		list = append(list, b)
	}
	for _, b := range old {
		b.http.CloseIdleConnections() // running calls keep their connections
	}
	c.catalog.Store(cat)
	c.backends = list
	c.dispatch()
}
