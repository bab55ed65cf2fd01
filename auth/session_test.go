package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// memSessions is an in-memory SessionStore.
type memSessions struct {
	mu sync.Mutex
	m  map[string]Session
}

func (s *memSessions) CreateSession(_ context.Context, x Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[x.ID] = x
	return nil
}

func (s *memSessions) SessionByID(_ context.Context, id string) (Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.m[id]
	if !ok {
		return Session{}, ErrNoSession
	}
	return x, nil
}

func (s *memSessions) DeleteSession(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
	return nil
}

func (s *memSessions) DeleteSessionsBefore(_ context.Context, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, x := range s.m {
		if !x.ExpiresAt.After(t) {
			delete(s.m, id)
		}
	}
	return nil
}

// TestSessions: a session stores only hashes, resumes as its key, ends at
// its lifetime, with its key's revocation and with its secret's rotation,
// and its CSRF token is its own.
func TestSessions(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	store := newMemStore()
	v := NewVerifier(store, VerifierOptions{Now: clock.Now})
	keys := NewKeys(store, v, clock.Now)
	sessions := &memSessions{m: map[string]Session{}}
	m := NewSessions(sessions, v, SessionOptions{Now: clock.Now, TTL: time.Hour})

	k, secret, err := keys.Create(ctx, "test", Spec{Name: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	token, s, err := m.Start(ctx, k, secret)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != sessionID(token) || s.SecretHash != Hash(secret) || strings.Contains(s.ID+s.SecretHash, token) || !s.ExpiresAt.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("session %+v: want hashes only and a 1 h lifetime", s)
	}
	if _, got, err := m.Resume(ctx, token); err != nil || got.ID != k.ID {
		t.Fatalf("Resume = %v, %v; want the key", got.ID, err)
	}
	flipped := token[:len(token)-1] + map[bool]string{true: "B", false: "A"}[token[len(token)-1] == 'A']
	for _, bad := range []string{"", "short", flipped, strings.Repeat("x", len(token))} {
		if _, _, err := m.Resume(ctx, bad); !errors.Is(err, ErrNoSession) {
			t.Errorf("Resume(%q) = %v, want ErrNoSession", bad, err)
		}
	}
	if csrf := CSRFToken(token); !CheckCSRF(token, csrf) || CheckCSRF(token, "") || CheckCSRF(token, csrf[1:]) || CSRFToken("other") == csrf || strings.Contains(csrf, token) {
		t.Errorf("CSRF token %q: want one that only this session's token checks", csrf)
	}

	clock.Advance(time.Hour)
	if _, _, err := m.Resume(ctx, token); !errors.Is(err, ErrNoSession) {
		t.Errorf("after the lifetime: %v, want ErrNoSession", err)
	}
	if len(sessions.m) != 0 {
		t.Errorf("the ended session is still stored")
	}

	token, _, _ = m.Start(ctx, k, secret)
	if _, _, err := keys.Rotate(ctx, "admin", k.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Resume(ctx, token); err != nil {
		t.Errorf("within the rotation's grace: %v", err)
	}
	clock.Advance(time.Minute)
	if _, _, err := m.Resume(ctx, token); !errors.Is(err, ErrExpired) {
		t.Errorf("after the rotation's grace: %v, want ErrExpired", err)
	}

	k2, secret2, _ := keys.Create(ctx, "test", Spec{Name: "revoked"})
	token, _, _ = m.Start(ctx, k2, secret2)
	if _, err := keys.Revoke(ctx, "admin", k2.ID); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the same answer for every request the browser had in flight
		if _, _, err := m.Resume(ctx, token); !errors.Is(err, ErrRevoked) {
			t.Errorf("after revocation: %v, want ErrRevoked", err)
		}
	}
	clock.Advance(time.Hour)
	if _, _, err := m.Start(ctx, k2, secret2); err != nil { // sweeps
		t.Fatal(err)
	}
	if len(sessions.m) != 1 {
		t.Errorf("%d sessions stored after a sweep, want only the new one", len(sessions.m))
	}
}
