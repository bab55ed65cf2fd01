package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/billing"
	"tollgate/billing/billingtest"
	"tollgate/metering"
	"tollgate/storage/postgres"
	"tollgate/storage/postgres/pgtest"
	"tollgate/storage/sqlite"
	"tollgate/storage/transfer"
)

var day0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

// fixture is a SQLite database with two accounts that have Stripe
// customers, and a clock for exporters.
type fixture struct {
	sdb          *sqlite.DB
	acctA, acctB string
	clock        *authtest.Clock
	n            int
}

func newFixture(t *testing.T) *fixture {
	ctx := context.Background()
	sdb, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	m := auth.NewAccounts(sdb, nil, func() time.Time { return day0 })
	a, err := m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: "A", StripeCustomerID: "cus_A"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: "B", StripeCustomerID: "cus_B"})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{sdb: sdb, acctA: a.ID, acctB: b.ID, clock: authtest.NewClock(day0.Add(3 * time.Minute))}
}

// insert stores a usage row of tokens prompt tokens for acct, made at at.
func (f *fixture) insert(t *testing.T, db metering.BatchStore, acct string, at time.Time, tokens int64) {
	t.Helper()
	f.n++
	ev := metering.Event{RequestID: fmt.Sprintf("r%d", f.n), KeyID: "k", Endpoint: metering.EndpointGenerate, Model: "m",
		PromptTokens: tokens, Status: 200, Cost: tollgate.Money(tokens), Time: at, AccountID: acct}
	if _, err := db.InsertEvents(context.Background(), []metering.Event{ev}, nil); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) exporter(t *testing.T, st billing.Store, s billing.Sender) *billing.Exporter {
	t.Helper()
	e, err := billing.New(billing.Config{Store: st, Sender: s, Meters: billing.Meters{Tokens: "tollgate_tokens"},
		Interval: time.Minute, Delay: 10 * time.Second, Since: day0, Owner: "host/:8080", Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// drainPostgres drains e until billed holds. Right after the copy the
// export waits for transactions older than it to end (the horizon); on a
// PostgreSQL server that other tests share, that can take a moment.
func drainPostgres(t *testing.T, e *billing.Exporter, billed func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for billingtest.Drain(t, e, 0); !billed(); billingtest.Drain(t, e, 0) {
		if time.Now().After(deadline) {
			return // the caller's check says what is missing
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) migrate(t *testing.T) *postgres.DB {
	t.Helper()
	ctx := context.Background()
	pdb, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pdb.Close() })
	if _, err := transfer.Copy(ctx, f.sdb, pdb, false); err != nil {
		t.Fatal(err)
	}
	return pdb
}

// After tollgate migrate the export goes on from PostgreSQL where it was:
// what SQLite sent is not sent again, and a row that SQLite committed after
// its interval was sent (a long request) still is, once.
func TestMigrateCarriesTheBillingCursor(t *testing.T) {
	f := newFixture(t)
	f.insert(t, f.sdb, f.acctA, day0.Add(10*time.Second), 10)
	f.insert(t, f.sdb, f.acctB, day0.Add(70*time.Second), 20)
	s := billingtest.NewSender()
	billingtest.Drain(t, f.exporter(t, f.sdb, s), 0)
	f.insert(t, f.sdb, f.acctA, day0.Add(30*time.Second), 100) // minute 0, committed after it was sent
	f.insert(t, f.sdb, f.acctB, day0.Add(150*time.Second), 5)  // minute 2, not due yet
	pdb := f.migrate(t)
	f.clock.Set(day0.Add(time.Hour))
	f.insert(t, pdb, f.acctB, day0.Add(5*time.Minute), 7) // new on PostgreSQL
	drainPostgres(t, f.exporter(t, pdb, s), func() bool { return s.Totals()["cus_B/tollgate_tokens"] >= 32 })
	got := s.Totals()
	if got["cus_A/tollgate_tokens"] != 110 || got["cus_B/tollgate_tokens"] != 32 {
		t.Fatalf("billed %v; want cus_A 110 and cus_B 32, each row once", got)
	}
	if s.Duplicates() != 0 {
		t.Fatalf("%d events sent again: PostgreSQL's identifiers must not repeat SQLite's", s.Duplicates())
	}
}

// A batch pending in SQLite (partly in Stripe) cannot be carried over:
// migrate refuses until it is done, and then nothing is billed twice.
func TestMigrateRefusesAPendingBillingBatch(t *testing.T) {
	f := newFixture(t)
	f.insert(t, f.sdb, f.acctA, day0.Add(10*time.Second), 10)
	f.insert(t, f.sdb, f.acctB, day0.Add(10*time.Second), 20)
	s := billingtest.NewSender()
	s.FailWith(func(ev billing.Event) (error, bool) {
		if ev.CustomerID == "cus_B" {
			return &billing.SendError{Status: 500, Message: "stripe: api_error"}, false
		}
		return nil, false
	})
	if _, err := f.exporter(t, f.sdb, s).Step(context.Background()); err == nil {
		t.Fatal("the failing send succeeded")
	}
	pdb, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	if _, err := transfer.Copy(context.Background(), f.sdb, pdb, false); !errors.Is(err, transfer.ErrBillingPending) {
		t.Fatalf("Copy with a batch pending = %v, want ErrBillingPending", err)
	}
	s.FailWith(nil)
	billingtest.Drain(t, f.exporter(t, f.sdb, s), 0)
	if _, err := transfer.Copy(context.Background(), f.sdb, pdb, false); err != nil {
		t.Fatal(err)
	}
	f.clock.Set(day0.Add(time.Hour))
	f.insert(t, pdb, f.acctA, day0.Add(5*time.Minute), 1) // new on PostgreSQL
	drainPostgres(t, f.exporter(t, pdb, s), func() bool { return s.Totals()["cus_A/tollgate_tokens"] >= 11 })
	if got := s.Totals(); got["cus_A/tollgate_tokens"] != 11 || got["cus_B/tollgate_tokens"] != 20 {
		t.Fatalf("billed %v; want cus_A 11 and cus_B 20", got)
	}
}

// Archiving (deleting) the newest exported rows, as README shows, does not
// let SQLite hand their sequence numbers out again: a late row after it is
// still sent.
func TestArchivedSQLiteRowsDoNotHideLateOnes(t *testing.T) {
	f := newFixture(t)
	f.insert(t, f.sdb, f.acctA, day0.Add(10*time.Second), 10)
	f.insert(t, f.sdb, f.acctA, day0.Add(20*time.Second), 10)
	s := billingtest.NewSender()
	e := f.exporter(t, f.sdb, s)
	billingtest.Drain(t, e, 0)
	if _, err := f.sdb.SQL().Exec(`DELETE FROM usage WHERE created_at < ?`, day0.Add(2*time.Minute).UnixNano()); err != nil {
		t.Fatal(err)
	}
	f.insert(t, f.sdb, f.acctA, day0.Add(90*time.Second), 100) // minute 1, committed late
	f.clock.Set(day0.Add(10 * time.Minute))
	billingtest.Drain(t, e, 0)
	if got := s.Totals()["cus_A/tollgate_tokens"]; got != 120 {
		t.Fatalf("billed %d tokens, the usage had 120", got)
	}
}
