package billing

import (
	"context"
	"errors"
	"testing"
	"time"
)

type nopStore struct{ Store }
type nopSender struct{}

func (nopSender) Send(context.Context, Event) error { return nil }

func TestIdentifierIsStablePerBatchAndDistinctAcross(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	to := Cursor{Before: start.Add(time.Minute), Seq: 42}
	a := Identifier("stripe", "e1", "tollgate_tokens", "acct_1", start, to)
	if a != Identifier("stripe", "e1", "tollgate_tokens", "acct_1", start, Cursor{Before: to.Before.In(time.FixedZone("X", 3600)), Seq: 42}) {
		t.Fatal("the identifier depends on the time zone of the batch end")
	}
	if len(a) > 100 || a[:3] != "tg_" {
		t.Fatalf("identifier %q: Stripe takes up to 100 characters", a)
	}
	seen := map[string]bool{a: true}
	for _, other := range []string{
		Identifier("stripe", "e1", "tollgate_requests", "acct_1", start, to),
		Identifier("stripe", "e1", "tollgate_tokens", "acct_2", start, to),
		Identifier("stripe", "e1", "tollgate_tokens", "acct_1", start.Add(time.Minute), to),
		Identifier("stripe", "e1", "tollgate_tokens", "acct_1", start, Cursor{Before: to.Before, Seq: 43}), // a later batch
		Identifier("other", "e1", "tollgate_tokens", "acct_1", start, to),
		Identifier("stripe", "e2", "tollgate_tokens", "acct_1", start, to), // after tollgate migrate
	} {
		if seen[other] {
			t.Fatalf("two different events share identifier %s", other)
		}
		seen[other] = true
	}
}

func TestNewChecksItsConfig(t *testing.T) {
	if _, err := New(Config{Sender: nopSender{}, Meters: Meters{Tokens: "t"}}); err == nil {
		t.Fatal("New without a store succeeded")
	}
	if _, err := New(Config{Store: nopStore{}, Sender: nopSender{}}); err == nil {
		t.Fatal("New with no meter succeeded")
	}
	if _, err := New(Config{Store: nopStore{}, Sender: nopSender{}, Meters: Meters{Tokens: "t"}, Interval: -time.Second}); err == nil {
		t.Fatal("New with a negative interval succeeded")
	}
}

// Run waits for the next interval to be due, retries failures with a
// doubling back-off that starts later for permanent refusals, and waits an
// interval while another process holds the lease.
func TestWaitBetweenSteps(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC)
	e, err := New(Config{Store: nopStore{}, Sender: nopSender{}, Meters: Meters{Tokens: "t"},
		Interval: time.Minute, Delay: 10 * time.Second, MaxBackoff: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.wait(false, nil); got != 40*time.Second { // 10:01:00 ends the minute, due 10 s later
		t.Fatalf("wait after a batch = %v, want 40s (10:01:10)", got)
	}
	if got := e.wait(true, nil); got != 0 {
		t.Fatalf("wait while catching up = %v, want 0", got)
	}
	transient := errors.New("connection refused")
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if got := e.wait(false, transient); got != want {
			t.Fatalf("wait after failure %d = %v, want %v", i+1, got, want)
		}
	}
	e.wait(false, nil)
	permanent := &SendError{Status: 400, Permanent: true, Message: "no such meter"}
	if got := e.wait(false, permanent); got != 30*time.Second {
		t.Fatalf("wait after a permanent refusal = %v, want 30s", got)
	}
	if got := e.wait(false, permanent); got != time.Minute {
		t.Fatalf("second wait after a permanent refusal = %v, want the 1m cap", got)
	}
	if got := e.wait(false, ErrNotLeader); got != time.Minute {
		t.Fatalf("wait as a standby = %v, want one interval", got)
	}
}

func TestFloorCountsFromTheUnixEpoch(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 13, 5, time.UTC)
	if got := Floor(at, 7*time.Second); got.UnixNano()%int64(7*time.Second) != 0 || at.Sub(got) >= 7*time.Second {
		t.Fatalf("Floor(%v, 7s) = %v", at, got)
	}
}
