package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/storage/postgres"
	"tollgate/storage/postgres/pgtest"
)

// sink records what a KeyFeed tells it.
type sink struct {
	mu     sync.Mutex
	events []string
}

func (s *sink) add(e string) { s.mu.Lock(); s.events = append(s.events, e); s.mu.Unlock() }

func (s *sink) Invalidate(id string) { s.add("invalidate " + id) }
func (s *sink) FeedDown()            { s.add("down") }
func (s *sink) FeedUp()              { s.add("up") }

// wait waits until the feed says want and returns what it said before.
func (s *sink) wait(t *testing.T, want string) (before []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		for i, e := range s.events {
			if e == want {
				before = append(before, s.events[:i]...)
				s.events = s.events[i+1:]
				s.mu.Unlock()
				return before
			}
		}
		got := append([]string(nil), s.events...)
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("the feed did not say %q; it said %q", want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A key change committed anywhere reaches the feed; a rolled-back one does
// not; a killed listen connection is reported (the verifier then drops its
// cache) and the feed listens again by itself.
func TestKeyFeedDeliversChangesAndSurvivesALostConnection(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys := auth.NewKeys(db, nil, nil)
	k, _, err := keys.Create(ctx, auth.ActorCLI, auth.Spec{Name: "feed"})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- db.KeyFeed(postgres.KeyFeedOptions{Retry: 50 * time.Millisecond, Idle: 200 * time.Millisecond}).Run(fctx, s)
	}()
	s.wait(t, "down") // until it listens, changes may be missed
	s.wait(t, "up")

	// A change whose transaction fails sends nothing.
	other, _, err := keys.Create(ctx, auth.ActorCLI, auth.Spec{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	boom := auth.ErrInvalid
	if _, err := db.UpdateKey(ctx, other.ID, func(*auth.Key) error { return boom }, auth.AuditEntry{Time: time.Now(), Actor: "cli", Action: auth.ActionUpdate, KeyID: other.ID}); err == nil {
		t.Fatal("UpdateKey with a failing apply succeeded")
	}
	if _, err := keys.Revoke(ctx, auth.ActorCLI, k.ID); err != nil {
		t.Fatal(err)
	}
	if before := s.wait(t, "invalidate "+k.ID); len(before) != 0 {
		t.Errorf("notifications before the revocation's: %q (the failed update sent one?)", before)
	}

	// Kill the listener's connection from the server side.
	if _, err := db.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "down")
	s.wait(t, "up")
	if _, _, err := keys.Rotate(ctx, auth.ActorCLI, k.ID, 0); err != auth.ErrRevoked {
		t.Fatalf("rotate revoked = %v", err)
	}
	name := "renamed"
	if _, err := keys.Update(ctx, auth.ActorCLI, k.ID, auth.Patch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "invalidate "+k.ID)

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after its context ended, want nil", err)
	}
}
