package inference

// fairQueue holds the requests waiting for a GPU: one FIFO queue per key,
// served by deficit round robin. Each request costs 1; a key's quantum is
// its plan's weight, so while several keys wait, a key of weight w is
// served w requests per turn and a key flooding the queue delays a key with
// one request by at most one turn. Keys take their turns in the order they
// started waiting. It is not safe for concurrent use (the Client's mutex
// guards it) and has no clock: what it decides depends only on the order
// of calls.
type fairQueue struct {
	keys   map[string]*keyQueue
	ring   []*keyQueue // keys with waiters, in turn order
	cursor int         // the key whose turn it is
	n      int         // waiters in all
}

type keyQueue struct {
	key     string
	weight  int
	deficit int
	items   []*waiter
}

// waiter is one request in the queue. granted is set (under the Client's
// mutex) when a backend slot is handed to it, and done is closed then.
type waiter struct {
	key     string
	model   Model
	granted *backend
	done    chan struct{}
}

// push adds w at the end of its key's queue; weight (at least 1) is the
// key's quantum from now on.
func (q *fairQueue) push(w *waiter, weight int) {
	if q.keys == nil {
		q.keys = map[string]*keyQueue{}
	}
	kq, ok := q.keys[w.key]
	if !ok {
		kq = &keyQueue{key: w.key}
		q.keys[w.key] = kq
		q.ring = append(q.ring, kq)
	}
	kq.weight = max(1, weight)
	kq.items = append(kq.items, w)
	q.n++
}

// queued returns how many requests of key wait.
func (q *fairQueue) queued(key string) int {
	if kq, ok := q.keys[key]; ok {
		return len(kq.items)
	}
	return 0
}

// remove takes w out of the queue (it gave up); false if it is not there.
func (q *fairQueue) remove(w *waiter) bool {
	kq, ok := q.keys[w.key]
	if !ok {
		return false
	}
	for i, x := range kq.items {
		if x == w {
			kq.items = append(kq.items[:i], kq.items[i+1:]...)
			q.n--
			if len(kq.items) == 0 {
				q.drop(kq)
			}
			return true
		}
	}
	return false
}

// drop removes the empty queue kq from the turn order.
func (q *fairQueue) drop(kq *keyQueue) {
	delete(q.keys, kq.key)
	for i, x := range q.ring {
		if x == kq {
			q.ring = append(q.ring[:i], q.ring[i+1:]...)
			if i < q.cursor {
				q.cursor--
			}
			break
		}
	}
	if q.cursor >= len(q.ring) {
		q.cursor = 0
	}
}

// next takes the request to serve now: the head of the queue of the key
// whose turn it is, among those for which can is true (a backend serving
// its model has a free slot). A key whose head cannot be placed is passed
// over for this turn without losing its place. nil when none can be served.
func (q *fairQueue) next(can func(*waiter) bool) *waiter {
	for misses := 0; len(q.ring) > 0 && misses < len(q.ring); {
		if q.cursor >= len(q.ring) {
			q.cursor = 0
		}
		kq := q.ring[q.cursor]
		if kq.deficit < 1 {
			kq.deficit += kq.weight
		}
		head := kq.items[0]
		if !can(head) {
			misses++
			q.cursor++
			continue
		}
		kq.items = kq.items[1:]
		kq.deficit--
		q.n--
		switch {
		case len(kq.items) == 0:
			kq.deficit = 0
			q.drop(kq) // the cursor now points at the next key
		case kq.deficit < 1:
			q.cursor++
		}
		return head
	}
	return nil
}
