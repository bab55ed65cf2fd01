package inference

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/inference/ollamatest"
)

// twoBackends is a catalog of backends a and b (max_parallel each) serving
// model "tiny" (Ollama's "tiny").
func twoBackends(t *testing.T, a, b string, parallel int) *Catalog {
	t.Helper()
	cat, err := Parse("fleet.yaml", []byte(fmt.Sprintf(`backends:
  - {name: a, url: %s, max_parallel: %d}
  - {name: b, url: %s, max_parallel: %d}
models:
  tiny: {ollama: tiny, endpoints: [generate, embed]}
`, a, parallel, b, parallel)))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func state(c *Client, name string) BackendStatus {
	for _, b := range c.Backends() {
		if b.Name == name {
			return b
		}
	}
	return BackendStatus{}
}

// waitQueued waits until n calls wait in the queue.
func waitQueued(t *testing.T, c *Client, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.Queued() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", c.Queued(), n)
		}
	}
}

// With both backends saturated, key A queues 100 calls, then key B 5.
// Slots then free one at a time: B's calls are served every other turn, so
// all five are through within the first ten, not after A's hundred.
func TestAcquireServesKeysInFairTurn(t *testing.T) {
	c := NewClient(twoBackends(t, "http://127.0.0.1:1", "http://127.0.0.1:2", 1), WithQueue(time.Minute, 200))
	m := c.Catalog().Models["tiny"]
	ctx := testContext(t)
	held := make([]*Slot, 2)
	for i := range held {
		s, err := c.Acquire(ctx, Ticket{Key: "warm", Model: m})
		if err != nil {
			t.Fatal(err)
		}
		held[i] = s
	}
	if a, b := state(c, "a").InFlight, state(c, "b").InFlight; a != 1 || b != 1 {
		t.Fatalf("in flight a=%d b=%d, want 1 each (least loaded first)", a, b)
	}
	type served struct {
		key  string
		slot *Slot
	}
	out := make(chan served)
	var wg sync.WaitGroup
	enqueue := func(key string, n int) {
		for range n {
			before := c.Queued()
			wg.Go(func() {
				s, err := c.Acquire(ctx, Ticket{Key: key, Weight: 1, Model: m})
				if err != nil {
					t.Error(err)
					return
				}
				out <- served{key, s}
			})
			waitQueued(t, c, before+1) // arrival order is the order of the calls
		}
	}
	enqueue("A", 100)
	enqueue("B", 5)
	if q := state(c, "a").Queued; q != 105 {
		t.Errorf("backend a reports %d queued, want 105", q)
	}
	held[0].Release() // one slot goes round; the other stays taken
	var order []string
	for range 105 {
		s := <-out
		order = append(order, s.key)
		s.slot.Release()
	}
	wg.Wait()
	held[1].Release()
	if got, want := strings.Join(order[:11], ""), "ABABABABABA"; got != want {
		t.Errorf("first 11 served: %s, want %s", got, want)
	}
	if n := strings.Count(strings.Join(order[11:], ""), "B"); n != 0 {
		t.Errorf("%d of B's calls served after the first 11", n)
	}
	if a, b := state(c, "a").InFlight, state(c, "b").InFlight; a != 0 || b != 0 {
		t.Errorf("in flight after all released: a=%d b=%d", a, b)
	}
}

// A key may have only so many calls waiting (429), and a call waits only
// the queue wait (503).
func TestAcquireQueueLimits(t *testing.T) {
	c := NewClient(twoBackends(t, "http://127.0.0.1:1", "http://127.0.0.1:2", 1), WithQueue(50*time.Millisecond, 1))
	m := c.Catalog().Models["tiny"]
	ctx := testContext(t)
	for range 2 {
		s, err := c.Acquire(ctx, Ticket{Key: "k", Model: m})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Release()
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Acquire(ctx, Ticket{Key: "k", Model: m}); errc <- err }()
	waitQueued(t, c, 1)
	if _, err := c.Acquire(ctx, Ticket{Key: "k", Model: m}); !errors.Is(err, ErrQueueFull) || tollgate.ErrorCode(err).Status() != 429 {
		t.Errorf("second waiting call of one key: %v, want ErrQueueFull (429)", err)
	}
	if err := <-errc; !errors.Is(err, ErrQueueTimeout) || tollgate.ErrorCode(err).Status() != 503 {
		t.Errorf("call that waited the queue wait: %v, want ErrQueueTimeout (503)", err)
	}
	if n := c.Queued(); n != 0 {
		t.Errorf("%d still queued", n)
	}
}

// A backend that has the model loaded (its /api/ps) gets the calls while it
// has a free slot; the other one gets them when it has none.
func TestRoutePrefersLoadedModel(t *testing.T) {
	a := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(a.Close)
	b := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(b.Close)
	b.SetLoaded("tiny")
	c := NewClient(twoBackends(t, a.URL, b.URL, 1))
	ctx := testContext(t)
	c.Check(ctx, time.Second)
	if st := state(c, "b"); len(st.Loaded) != 1 || st.Loaded[0].Name != "tiny:latest" || st.State != StateUp {
		t.Fatalf("backend b: %+v, want up with tiny:latest loaded", st)
	}
	m := c.Catalog().Models["tiny"]
	for range 3 {
		if _, err := c.Generate(ctx, m, GenerateRequest{Prompt: "x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if na, nb := a.Stats().Requests, b.Stats().Requests; na != 2 || nb != 5 { // version + ps each, b also 3 calls
		t.Errorf("a got %d requests, b %d; want 2 (the health check) and 5", na, nb)
	}
	s, err := c.Acquire(ctx, Ticket{Key: "k", Model: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if s.Backend() != "b" {
		t.Errorf("first slot on %s, want b (model loaded)", s.Backend())
	}
	s2, err := c.Acquire(ctx, Ticket{Key: "k", Model: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Release()
	if s2.Backend() != "a" {
		t.Errorf("second slot on %s, want a (b is full)", s2.Backend())
	}
}

// A refused connection fails over to the other backend at once, and the
// refusing one is down (and skipped) until a health check finds it back
// after its cool-down.
func TestFailoverAndCooldown(t *testing.T) {
	b := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(b.Close)
	a := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	aURL := a.URL
	a.Close()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := NewClient(twoBackends(t, aURL, b.URL, 4), WithCooldown(10*time.Second), WithClock(clock))
	m := c.Catalog().Models["tiny"]
	ctx := testContext(t)
	for range 3 {
		if _, err := c.Generate(ctx, m, GenerateRequest{Prompt: "x"}, nil); err != nil {
			t.Fatalf("Generate with a down: %v", err)
		}
		if _, err := c.Embed(ctx, m, []string{"x"}, nil); err != nil {
			t.Fatalf("Embed with a down: %v", err)
		}
	}
	st := state(c, "a")
	if st.State != StateDown || !strings.Contains(st.Why, "not reachable") || st.Failures != 1 || st.Ejections != 1 || !st.Since.Equal(now) {
		t.Errorf("backend a: %+v, want down since now, not reachable, 1 failure", st)
	}
	if n := b.Stats().Requests; n != 6 {
		t.Errorf("b got %d requests, want 6", n)
	}
	if st := state(c, "a"); st.InFlight != 0 || state(c, "b").InFlight != 0 {
		t.Errorf("slots still held: %+v", c.Backends())
	}

	// Both down: the call is still tried, and says why it failed.
	b.SetFault(ollamatest.StatusFault(500, ""))
	var ue *UnreachableError
	if _, err := c.Generate(ctx, m, GenerateRequest{Prompt: "x"}, nil); !errors.As(err, &ue) && !strings.Contains(fmt.Sprint(err), "500") {
		t.Errorf("Generate with both failing: %v", err)
	}
	b.SetFault(ollamatest.Fault{})

	// a comes back; health checks bring it up only after the cool-down.
	a2 := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(a2.Close)
	c.Reload(twoBackends(t, a2.URL, b.URL, 4)) // a new URL is a new backend: up
	if st := state(c, "a"); st.State != StateUp {
		t.Fatalf("new backend a: %+v, want up", st)
	}
	a2.SetFault(ollamatest.StatusFault(500, ""))
	if _, err := c.Generate(ctx, m, GenerateRequest{Prompt: "x"}, nil); err != nil {
		t.Fatalf("Generate with a failing 500: %v", err)
	}
	if st := state(c, "a"); st.State != StateDown || !strings.Contains(st.Why, "500") {
		t.Fatalf("a after a 500: %+v, want down", st)
	}
	a2.SetFault(ollamatest.Fault{})
	c.Check(ctx, time.Second)
	if st := state(c, "a"); st.State != StateDown {
		t.Errorf("a up during its cool-down: %+v", st)
	}
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	c.Check(ctx, time.Second)
	if st := state(c, "a"); st.State != StateUp || st.Why != "" || !st.Since.Equal(clock()) {
		t.Errorf("a after its cool-down and a good check: %+v, want up since now", st)
	}
}

// A stream cut after its first piece reached the caller is not retried
// elsewhere: the caller has part of an answer.
func TestNoFailoverAfterFirstPiece(t *testing.T) {
	a := ollamatest.NewServer(ollamatest.WithModels("tiny"), ollamatest.WithFault(ollamatest.Fault{Stream: ollamatest.Cut, After: 2}))
	t.Cleanup(a.Close)
	b := ollamatest.NewServer(ollamatest.WithModels("tiny"))
	t.Cleanup(b.Close)
	c := NewClient(twoBackends(t, a.URL, b.URL, 4))
	m := c.Catalog().Models["tiny"]
	var pieces int
	_, err := c.Generate(testContext(t), m, GenerateRequest{Prompt: "x"}, func(string) error { pieces++; return nil })
	if err == nil || pieces != 2 {
		t.Errorf("Generate: %v after %d pieces, want an error after 2", err, pieces)
	}
	if n := b.Stats().Requests; n != 0 {
		t.Errorf("b got %d requests, want none (no retry after output)", n)
	}
	if st := state(c, "a"); st.State != StateDown {
		t.Errorf("a after a broken stream: %+v, want down", st)
	}
}

// Reload adds a backend that takes calls at once, keeps the state and calls
// of one whose URL stays, and lets calls on a removed one finish.
func TestReloadKeepsCalls(t *testing.T) {
	c := NewClient(twoBackends(t, "http://127.0.0.1:1", "http://127.0.0.1:2", 1), WithQueue(time.Minute, 0))
	m := c.Catalog().Models["tiny"]
	ctx := testContext(t)
	s1, _ := c.Acquire(ctx, Ticket{Key: "k", Model: m})
	s2, _ := c.Acquire(ctx, Ticket{Key: "k", Model: m})
	got := make(chan *Slot, 1)
	go func() {
		s, err := c.Acquire(ctx, Ticket{Key: "k", Model: m})
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	waitQueued(t, c, 1)
	cat, err := Parse("fleet.yaml", []byte(`backends:
  - {name: b, url: "http://127.0.0.1:2", max_parallel: 1}
  - {name: c, url: "http://127.0.0.1:3", max_parallel: 1}
models:
  tiny: {ollama: tiny, endpoints: [generate, embed]}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Reload(cat)
	s3 := <-got // the new backend serves the waiting call at once
	if s3.Backend() != "c" {
		t.Errorf("waiting call placed on %s, want c", s3.Backend())
	}
	var names []string
	for _, b := range c.Backends() {
		names = append(names, fmt.Sprintf("%s:%d", b.Name, b.InFlight))
	}
	if got := strings.Join(names, " "); got != "b:1 c:1" {
		t.Errorf("backends after reload %s, want b:1 c:1", got)
	}
	s1.Release() // on a, which is gone
	s2.Release()
	s3.Release()
	if b, cc := state(c, "b").InFlight, state(c, "c").InFlight; b != 0 || cc != 0 {
		t.Errorf("in flight b=%d c=%d after release", b, cc)
	}
	if c.Catalog() != cat {
		t.Error("Catalog is not the reloaded one")
	}
}

// BenchmarkAcquireRelease is the cost of routing one call and giving its
// slot back, from many goroutines at once, with slots to spare.
func BenchmarkAcquireRelease(b *testing.B) {
	cat, err := Parse("fleet.yaml", []byte(`backends:
  - {name: a, url: "http://127.0.0.1:1", max_parallel: 64}
  - {name: b, url: "http://127.0.0.1:2", max_parallel: 64}
models:
  tiny: {ollama: tiny, endpoints: [generate]}
`))
	if err != nil {
		b.Fatal(err)
	}
	c := NewClient(cat)
	m := cat.Models["tiny"]
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, err := c.Acquire(b.Context(), Ticket{Key: "k", Model: m})
			if err != nil {
				b.Error(err)
				return
			}
			s.Release()
		}
	})
}
