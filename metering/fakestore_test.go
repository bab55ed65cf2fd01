package metering

import (
	"context"
	"errors"
	"sync"
	"time"
)

// fakeStore is an in-memory BatchStore. It skips request ids it has seen,
// can fail a number of attempts, and can hold a batch until released.
type fakeStore struct {
	mu      sync.Mutex
	seen    map[string]Event
	batches [][]Event
	failN   int           // fail this many attempts before succeeding
	hold    chan struct{} // when set, each InsertEvents waits for a value
	entered chan int      // when set, receives each batch's size on entry
}

var errFake = errors.New("fake: disk on fire")

func newFakeStore() *fakeStore { return &fakeStore{seen: map[string]Event{}} }

// newHeldStore returns a fakeStore whose batches wait for a value on hold
// and announce their size on entered (buffered for n batches).
func newHeldStore(n int) *fakeStore {
	f := newFakeStore()
	f.hold, f.entered = make(chan struct{}), make(chan int, n)
	return f
}

func (f *fakeStore) InsertEvents(ctx context.Context, events []Event) ([]bool, error) {
	if f.entered != nil {
		f.entered <- len(events)
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failN > 0 {
		f.failN--
		return nil, errFake
	}
	inserted := make([]bool, len(events))
	for i, e := range events {
		if _, dup := f.seen[e.RequestID]; !dup {
			f.seen[e.RequestID] = e
			inserted[i] = true
		}
	}
	f.batches = append(f.batches, append([]Event(nil), events...))
	return inserted, nil
}

func (f *fakeStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

// testEvent returns a valid event with the given request id.
func testEvent(id string) Event {
	return Event{
		RequestID: id, KeyID: "key1", Endpoint: EndpointGenerate, Model: "llama3.2",
		PromptTokens: 10, CompletionTokens: 20, Status: 200, Latency: 1500 * time.Microsecond,
		Cost: 14, Time: time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC),
	}
}
