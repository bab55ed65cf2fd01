package metering

import (
	"context"
	"errors"
	"sync"
	"time"
)

// fakeStore is an in-memory BatchStore. It skips request ids it has seen,
// can fail a number of attempts, and can hold a batch until released, either
// before claiming it (like a transaction waiting for the write lock) or after
// (like a slow insert or commit).
type fakeStore struct {
	mu      sync.Mutex
	seen    map[string]Event
	batches [][]Event
	failN   int           // fail this many attempts, after claiming, before succeeding
	hold    chan struct{} // when set, each InsertEvents waits for a value before claiming
	entered chan int      // when set, receives each batch's size on entry
	// holdClaimed, when set, makes each InsertEvents wait for a value after
	// claiming; claimed, when set, receives each batch's size after claiming.
	holdClaimed chan struct{}
	claimed     chan int
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

func (f *fakeStore) InsertEvents(ctx context.Context, events []Event, claim func()) ([]bool, error) {
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
	if claim != nil {
		claim()
	}
	if f.claimed != nil {
		f.claimed <- len(events)
	}
	if f.holdClaimed != nil {
		select {
		case <-f.holdClaimed:
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

func (f *fakeStore) stored(id string) (Event, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.seen[id]
	return e, ok
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
