package inference

import (
	"fmt"
	"strings"
	"testing"
)

// drain serves the queue one request at a time, as slots free up one by
// one, and returns the keys in the order they were served.
func drain(q *fairQueue) []string {
	var order []string
	for w := q.next(func(*waiter) bool { return true }); w != nil; w = q.next(func(*waiter) bool { return true }) {
		order = append(order, w.key)
	}
	return order
}

func push(q *fairQueue, key string, weight, n int) {
	for range n {
		q.push(&waiter{key: key}, weight)
	}
}

// Key A floods the queue with 100 requests, then B queues 5: B is served
// every other turn, so its last request leaves within the first 10, not
// after A's 100.
func TestFairQueueFloodDoesNotStarve(t *testing.T) {
	var q fairQueue
	push(&q, "A", 1, 100)
	push(&q, "B", 1, 5)
	order := drain(&q)
	if len(order) != 105 || q.n != 0 {
		t.Fatalf("served %d, %d left; want 105, 0", len(order), q.n)
	}
	if got, want := strings.Join(order[:11], ""), "ABABABABABA"; got != want {
		t.Errorf("first 11 served: %s, want %s", got, want)
	}
	for i, k := range order[11:] {
		if k != "A" {
			t.Fatalf("served %s at %d after B's five", k, i+11)
		}
	}
}

// A key of weight 3 is served three requests for each one of a key of
// weight 1 while both wait.
func TestFairQueueWeights(t *testing.T) {
	var q fairQueue
	push(&q, "free", 1, 4)
	push(&q, "pro", 3, 9)
	order := strings.Join(drain(&q), " ")
	if want := "free pro pro pro free pro pro pro free pro pro pro free"; order != want {
		t.Errorf("order %s\nwant  %s", order, want)
	}
}

// A key whose next request cannot be placed (no free slot for its model)
// is passed over without losing its place; one that gives up leaves.
func TestFairQueueSkipAndRemove(t *testing.T) {
	var q fairQueue
	a1, a2 := &waiter{key: "A", model: Model{Name: "big"}}, &waiter{key: "A", model: Model{Name: "big"}}
	b1 := &waiter{key: "B", model: Model{Name: "small"}}
	c1 := &waiter{key: "C", model: Model{Name: "small"}}
	for _, w := range []*waiter{a1, a2, b1, c1} {
		q.push(w, 1)
	}
	small := func(w *waiter) bool { return w.model.Name == "small" }
	if w := q.next(small); w != b1 {
		t.Fatalf("first served %v, want B's", w)
	}
	if !q.remove(c1) || q.remove(c1) {
		t.Fatal("remove: want true once, then false")
	}
	if w := q.next(small); w != nil {
		t.Fatalf("served %v with no small request left", w)
	}
	if got := fmt.Sprint(q.queued("A"), q.queued("B"), q.queued("C"), q.n); got != "2 0 0 2" {
		t.Errorf("queued A B C all: %s, want 2 0 0 2", got)
	}
	if drain(&q); q.n != 0 || len(q.ring) != 0 || len(q.keys) != 0 {
		t.Errorf("queue not empty after drain: %+v", q)
	}
}
