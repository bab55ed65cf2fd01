package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// lockDatabase holds SQLite's write lock on db's file from a second,
// independent connection (as a second instance or a VACUUM would) until the
// returned function is called.
func lockDatabase(t *testing.T, db *sqlite.DB) (release func()) {
	t.Helper()
	ctx := context.Background()
	other, err := sql.Open("sqlite3", "file:"+db.Path()+"?_busy_timeout=0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
			t.Error(err)
		}
		conn.Close()
		other.Close()
	}
	t.Cleanup(release)
	return release
}

// The reported bug: a Record that timed out while another writer held the
// lock made the handler answer 503, and the event was committed afterwards
// as billed. Now it is stored as what the client got: a 503 costing nothing.
func TestRecorderWithdrawsWhileDatabaseLocked(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	ev := usageEvent("locked-1", "k1", "llama3.2", 0)
	counters := metering.NewCounters(func() time.Time { return day0 })
	rec := metering.NewRecorder(db, metering.RecorderOptions{OnCommit: counters.AddAll, CommitTimeout: time.Minute})
	defer rec.Close(ctx)

	release := lockDatabase(t, db)
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := rec.Record(rctx, ev)
	cancel()
	if !errors.Is(err, metering.ErrWithdrawn) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Record while the database is locked = %v, want ErrWithdrawn", err)
	}
	release() // the recorder's BEGIN, still waiting, gets the lock
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}

	want := ev
	want.Status, want.PromptTokens, want.CompletionTokens, want.Cost = 503, 0, 0, 0
	if got := exportAll(t, db, metering.Query{}); len(got) != 1 || got[0] != want {
		t.Fatalf("usage rows %+v\nwant [%+v]", got, want)
	}
	rows, err := db.Summary(ctx, metering.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[0]; r.Requests != 1 || r.ChargedRequests != 0 || r.PromptTokens != 0 || r.CompletionTokens != 0 || r.Cost != 0 {
		t.Fatalf("summary %+v: want one request, nothing billed", r)
	}
	if m := counters.Month("k1"); m != (metering.Totals{}) {
		t.Fatalf("quota counters charged for a withdrawn request: %+v", m)
	}
}

// InsertEvents calls claim once it holds the write lock, and stores the
// events as claim rewrote them.
func TestInsertEventsClaimsUnderWriteLock(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	other, err := sql.Open("sqlite3", "file:"+db.Path()+"?_busy_timeout=0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	evs := []metering.Event{usageEvent("a", "k", "m", 0), usageEvent("b", "k", "m", time.Second)}
	claims := 0
	ins, err := db.InsertEvents(ctx, evs, func() {
		claims++
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err == nil {
			conn.ExecContext(ctx, "ROLLBACK")
			t.Error("another writer could begin during claim: the lock is not held yet")
		}
		evs[1].Status, evs[1].Cost = 503, 0
	})
	if err != nil || claims != 1 || len(ins) != 2 || !ins[0] || !ins[1] {
		t.Fatalf("InsertEvents = %v, %v after %d claims", ins, err, claims)
	}
	got := exportAll(t, db, metering.Query{})
	if len(got) != 2 || got[0] != evs[0] || got[1].Status != 503 || got[1].Cost != 0 {
		t.Fatalf("stored %+v: want the events as claim left them", got)
	}
}
