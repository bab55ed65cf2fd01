package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/billing"
	"tollgate/billing/billingtest"
	"tollgate/metering"
	"tollgate/storage"
)

var testMeters = billing.Meters{Tokens: "tollgate_tokens", Requests: "tollgate_requests", Cost: "tollgate_cost"}

// billingFixture is a store with three accounts (two with a Stripe
// customer) and an exporter factory.
type billingFixture struct {
	s         storage.Store
	clock     *authtest.Clock
	acctA     string // cus_A
	acctB     string // cus_B
	acctC     string // no customer
	seq       int
	want      map[string]int64 // customer/event -> expected total
	wantMu    sync.Mutex
	customers map[string]string // account -> customer
}

func newBillingFixture(t *testing.T, s storage.Store) *billingFixture {
	ctx := context.Background()
	f := &billingFixture{s: s, clock: authtest.NewClock(day0), want: make(map[string]int64), customers: make(map[string]string)}
	m := auth.NewAccounts(s, nil, authtest.NewClock(day0).Now)
	for _, spec := range []auth.AccountSpec{{Name: "A", StripeCustomerID: "cus_A"}, {Name: "B", StripeCustomerID: "cus_B"}, {Name: "C"}} {
		a, err := m.Create(ctx, auth.ActorCLI, spec)
		if err != nil {
			t.Fatal(err)
		}
		f.customers[a.ID] = spec.StripeCustomerID
		switch spec.Name {
		case "A":
			f.acctA = a.ID
		case "B":
			f.acctB = a.ID
		default:
			f.acctC = a.ID
		}
	}
	return f
}

// insert stores one usage row of account acct ("" for none) at time at, and
// adds it to what the billing system should end up with.
func (f *billingFixture) insert(t *testing.T, acct string, at time.Time, prompt, completion int64, status int) {
	t.Helper()
	f.seq++
	ev := event(fmt.Sprintf("bill-%d", f.seq), "k-"+acct, "m", at, prompt, completion, status)
	ev.AccountID = acct
	if _, err := f.s.InsertEvents(context.Background(), []metering.Event{ev}, nil); err != nil {
		t.Fatal(err)
	}
	if cus := f.customers[acct]; cus != "" {
		f.wantMu.Lock()
		f.want[cus+"/tollgate_tokens"] += prompt + completion
		if status < 500 {
			f.want[cus+"/tollgate_requests"]++
		}
		f.want[cus+"/tollgate_cost"] += int64(ev.Cost)
		f.wantMu.Unlock()
	}
}

func (f *billingFixture) exporter(t *testing.T, owner string, sender billing.Sender) *billing.Exporter {
	t.Helper()
	e, err := billing.New(billing.Config{Store: f.s, Sender: sender, Meters: testMeters, Interval: time.Minute,
		Delay: 10 * time.Second, Since: day0, Owner: owner, Lease: 5 * time.Minute, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (f *billingFixture) checkTotals(t *testing.T, l *billingtest.Ledger) {
	t.Helper()
	got := l.Totals()
	f.wantMu.Lock()
	defer f.wantMu.Unlock()
	for k, v := range f.want {
		if got[k] != v {
			t.Errorf("billed %s = %d, want %d (the usage rows)", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := f.want[k]; !ok {
			t.Errorf("billed %s = %d, which no usage row of a customer accounts for", k, v)
		}
	}
}

// billingExport: the events sent add up exactly to the usage rows of
// accounts with a Stripe customer, each interval once; a failing sender, a
// response lost on the way back and a restart mid-batch change nothing; a
// row committed after its interval was sent goes in a later event.
func billingExport(t *testing.T, s storage.Store) {
	ctx := context.Background()
	f := newBillingFixture(t, s)
	for i := range 30 { // minutes 0..4 of day0, every account, and a key without one
		at := day0.Add(time.Duration(i) * 10 * time.Second)
		f.insert(t, f.acctA, at, int64(i), 2, 200)
		f.insert(t, f.acctB, at.Add(time.Second), 5, int64(i), 200+300*(i%7/6)) // a few 500s: not charged requests
		f.insert(t, f.acctC, at, 1, 1, 200)
		f.insert(t, "", at, 1, 1, 200)
	}
	sender := billingtest.NewSender()
	e := f.exporter(t, "replica-1", sender)
	f.clock.Set(day0.Add(3*time.Minute + 5*time.Second)) // minutes 0 and 1 are due (delay 10 s)
	billingtest.Drain(t, e, 0)
	st, err := e.Status(ctx)
	if err != nil || st.State.Pending != nil || !st.State.Cursor.Before.Equal(day0.Add(2*time.Minute)) || st.State.Batches != 1 {
		t.Fatalf("after the first batch: %+v, %v; want the cursor at minute 2, nothing pending", st.State, err)
	}
	if n := len(sender.Events()); n != 2*2*3 { // 2 customers x 2 minutes x 3 meters
		t.Fatalf("sent %d events after minutes 0-1, want 12: %+v", n, sender.Events())
	}

	// A failing billing system: the first send is refused, the second is
	// kept but its answer lost. The batch stays pending, then goes through.
	f.clock.Set(day0.Add(6 * time.Minute))
	var calls int
	var mu sync.Mutex
	sender.FailWith(func(billing.Event) (error, bool) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 1:
			return &billing.SendError{Status: 500, Message: "stripe: internal error"}, false
		case 2:
			return &billing.SendError{Message: "connection reset"}, true
		}
		return nil, false
	})
	if _, err := e.Step(ctx); err == nil {
		t.Fatal("Step with a failing sender succeeded")
	}
	st, _ = e.Status(ctx)
	if st.State.Pending == nil || st.State.LastError == "" || st.State.LastErrorAt.IsZero() {
		t.Fatalf("after a failed send: %+v; want the batch pending and the error kept", st.State)
	}
	pending := *st.State.Pending

	// A restart mid-batch (a new exporter, same owner): the pending batch is
	// sent again identically; what was kept is refused as a duplicate.
	before := sender.Duplicates()
	e = f.exporter(t, "replica-1", sender)
	billingtest.Drain(t, e, 2) // the lost answer may come now: a send stops at its first failure
	if sender.Duplicates() == before {
		t.Fatal("the restarted exporter sent no event of the pending batch again: it did not resend it identically")
	}
	st, _ = e.Status(ctx)
	if st.State.Pending != nil || !st.State.Cursor.Equal(pending.To) || st.State.LastError != "" {
		t.Fatalf("after the restart: %+v; want the pending batch done and the error cleared", st.State)
	}

	// Past Stripe's deduplication window (24 hours): a batch partly
	// accepted, then refused, and the process restarts a day later. What
	// was accepted is not sent again (it would be billed twice).
	for i := range 6 {
		at := day0.Add(7*time.Minute + time.Duration(i)*20*time.Second)
		f.insert(t, f.acctA, at, 3, 3, 200)
		f.insert(t, f.acctB, at, 4, 4, 200)
	}
	f.clock.Set(day0.Add(10 * time.Minute))
	calls = 0
	sender.FailWith(func(billing.Event) (error, bool) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls == 4 {
			return &billing.SendError{Status: 503, Message: "stripe: unavailable"}, false
		}
		return nil, false
	})
	if _, err := e.Step(ctx); err == nil {
		t.Fatal("Step with a refused event succeeded")
	}
	sender.FailWith(nil)
	sender.Forget()
	e = f.exporter(t, "replica-1", sender)
	billingtest.Drain(t, e, 0)

	// A row of minute 1, committed only now (a long request, a replica's
	// journal loaded late), and new traffic.
	late := day0.Add(time.Minute + 30*time.Second)
	f.insert(t, f.acctA, late, 100, 1, 200)
	for i := range 6 {
		f.insert(t, f.acctB, day0.Add(6*time.Minute+time.Duration(i)*10*time.Second), 1, 1, 200)
	}
	f.clock.Set(day0.Add(time.Hour))
	billingtest.Drain(t, e, 0)
	f.checkTotals(t, sender.Ledger)
	repeated := sender.RepeatedIntervals()
	want := []string{
		"cus_A/tollgate_cost@2026-03-14T12:01:00Z x2",
		"cus_A/tollgate_requests@2026-03-14T12:01:00Z x2",
		"cus_A/tollgate_tokens@2026-03-14T12:01:00Z x2",
	}
	if !slices.Equal(repeated, want) {
		t.Fatalf("intervals sent more than once: %v; want only the late row's minute: %v", repeated, want)
	}
	for _, ev := range sender.Events() {
		if ev.CustomerID != "cus_A" && ev.CustomerID != "cus_B" {
			t.Fatalf("sent an event for %q: only accounts with a customer are billed", ev.CustomerID)
		}
	}
}

// billingLease: one exporter at a time; another takes over once the lease
// has run out, or at once when the holder gives it up.
func billingLease(t *testing.T, s storage.Store) {
	ctx := context.Background()
	f := newBillingFixture(t, s)
	f.insert(t, f.acctA, day0, 1, 1, 200)
	sender := billingtest.NewSender()
	a, b := f.exporter(t, "a", sender), f.exporter(t, "b", sender)
	f.clock.Set(day0.Add(2 * time.Minute))
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Step(ctx); !errors.Is(err, billing.ErrNotLeader) {
		t.Fatalf("second exporter's Step = %v, want ErrNotLeader", err)
	}
	f.clock.Set(day0.Add(2*time.Minute + 5*time.Minute + time.Second))
	f.insert(t, f.acctA, day0.Add(3*time.Minute), 2, 2, 200)
	billingtest.Drain(t, b, 0)
	if _, err := a.Step(ctx); !errors.Is(err, billing.ErrNotLeader) {
		t.Fatalf("first exporter after losing the lease: %v, want ErrNotLeader", err)
	}
	f.checkTotals(t, sender.Ledger)

	// Run gives the lease up when it stops.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { b.Run(runCtx); close(done) }()
	cancel()
	<-done
	if _, err := a.Step(ctx); err != nil {
		t.Fatalf("after the holder stopped, Step = %v; want the lease taken at once", err)
	}
}
