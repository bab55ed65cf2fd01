// Package billingtest holds what tests of the usage exporter share: a Ledger
// that keeps meter events as Stripe does (one per identifier, a resend
// refused as a duplicate), an in-memory Sender into it that fails on
// demand, and an HTTP proxy in front of Stripe's mock server that records
// what it accepts into a Ledger and refuses or loses calls on demand.
package billingtest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"tollgate/billing"
)

// Ledger keeps accepted meter events by identifier. It is safe for
// concurrent use.
type Ledger struct {
	mu         sync.Mutex
	events     map[string]billing.Event
	forgotten  []billing.Event // kept before Forget: still billed, no longer deduplicated
	duplicates int
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger { return &Ledger{events: make(map[string]billing.Event)} }

// Accept keeps ev unless its identifier is already kept, and reports
// whether it was a duplicate.
func (l *Ledger) Accept(ev billing.Event) (duplicate bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.events[ev.Identifier]; ok {
		l.duplicates++
		return true
	}
	l.events[ev.Identifier] = ev
	return false
}

// Forget ends the deduplication window for every event kept so far, as
// Stripe's (at least 24 hours) ends: they stay billed, and the same
// identifier sent again is billed again.
func (l *Ledger) Forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		l.forgotten = append(l.forgotten, ev)
	}
	l.events = make(map[string]billing.Event)
}

// Duplicates counts the resends refused.
func (l *Ledger) Duplicates() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.duplicates
}

// Events returns the kept events (also those forgotten) ordered by
// customer, event name and time.
func (l *Ledger) Events() []billing.Event {
	l.mu.Lock()
	out := make([]billing.Event, 0, len(l.events)+len(l.forgotten))
	out = append(out, l.forgotten...)
	for _, ev := range l.events {
		out = append(out, ev)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.CustomerID != b.CustomerID {
			return a.CustomerID < b.CustomerID
		}
		if a.EventName != b.EventName {
			return a.EventName < b.EventName
		}
		return a.Timestamp.Before(b.Timestamp)
	})
	return out
}

// Totals sums the kept events' values by customer and event name
// ("cus_1/tollgate_tokens").
func (l *Ledger) Totals() map[string]int64 {
	out := make(map[string]int64)
	for _, ev := range l.Events() {
		out[ev.CustomerID+"/"+ev.EventName] += ev.Value
	}
	return out
}

// RepeatedIntervals lists the (customer, event name, timestamp) that more
// than one kept event carries: none when each interval was sent once.
func (l *Ledger) RepeatedIntervals() []string {
	seen := make(map[string]int)
	for _, ev := range l.Events() {
		seen[fmt.Sprintf("%s/%s@%s", ev.CustomerID, ev.EventName, ev.Timestamp.UTC().Format(time.RFC3339))]++
	}
	var out []string
	for k, n := range seen {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s x%d", k, n))
		}
	}
	sort.Strings(out)
	return out
}

// Sender is an in-memory billing.Sender into Ledger. Fail, when set, is
// asked before each send; an error it returns fails the send (after the
// event was kept when lost is true, as when a response is lost on the way
// back).
type Sender struct {
	*Ledger
	mu    sync.Mutex
	fail  func(ev billing.Event) (err error, lost bool)
	calls int
}

// NewSender returns a Sender into a new Ledger.
func NewSender() *Sender { return &Sender{Ledger: NewLedger()} }

// FailWith sets the failure rule (nil: every send succeeds).
func (s *Sender) FailWith(fn func(ev billing.Event) (err error, lost bool)) {
	s.mu.Lock()
	s.fail = fn
	s.mu.Unlock()
}

// Calls counts Send calls.
func (s *Sender) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Send keeps ev in the Ledger (a duplicate counts as accepted, as the real
// sender reports it) unless the failure rule says otherwise.
func (s *Sender) Send(_ context.Context, ev billing.Event) error {
	s.mu.Lock()
	s.calls++
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if err, lost := fail(ev); err != nil {
			if lost {
				s.Accept(ev)
			}
			return err
		}
	}
	s.Accept(ev)
	return nil
}

// Drain steps e until nothing more is due, stepping again after up to
// failures failed steps, and fails the test on one more or if e never
// catches up.
func Drain(t testing.TB, e *billing.Exporter, failures int) {
	t.Helper()
	for range 100 {
		more, err := e.Step(context.Background())
		if err != nil {
			if failures--; failures < 0 {
				t.Fatalf("Step: %v", err)
			}
			continue
		}
		if !more {
			return
		}
	}
	t.Fatal("the exporter never caught up")
}
