package auth

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/auth/authtest"
)

func newClock() *authtest.Clock {
	return authtest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

// memStore is an in-memory CredentialStore, LastUsedStore and KeyStore.
type memStore struct {
	mu      sync.Mutex
	keys    map[string]Key
	order   []string
	secrets map[string]memSecret
	audit   []AuditEntry
	touched map[string]time.Time

	lookups   atomic.Int64
	block     chan struct{} // if set, Credential waits for it to close
	lookupErr error         // if set, Credential returns it
	touchErr  error
}

type memSecret struct {
	keyID   string
	expires time.Time
}

func newMemStore() *memStore {
	return &memStore{keys: map[string]Key{}, secrets: map[string]memSecret{}, touched: map[string]time.Time{}}
}

func (s *memStore) Credential(ctx context.Context, hash string) (Credential, error) {
	s.lookups.Add(1)
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return Credential{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookupErr != nil {
		return Credential{}, s.lookupErr
	}
	sec, ok := s.secrets[hash]
	if !ok {
		return Credential{}, ErrUnknown
	}
	return Credential{Key: s.keys[sec.keyID], SecretExpiresAt: sec.expires}, nil
}

func (s *memStore) TouchLastUsed(_ context.Context, used map[string]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.touchErr != nil {
		return s.touchErr
	}
	for id, t := range used {
		if t.After(s.touched[id]) {
			s.touched[id] = t
		}
	}
	return nil
}

func (s *memStore) CreateKey(_ context.Context, k Key, sec StoredSecret, a AuditEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k.ID] = k
	s.order = append(s.order, k.ID)
	s.secrets[sec.Hash] = memSecret{keyID: k.ID}
	s.audit = append(s.audit, a)
	return nil
}

func (s *memStore) ListKeys(context.Context) ([]Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Key
	for _, id := range s.order {
		out = append(out, s.keys[id])
	}
	return out, nil
}

func (s *memStore) KeyByID(_ context.Context, id string) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	return k, nil
}

// change runs fn on key id under the lock and records a.
func (s *memStore) change(id string, a AuditEntry, fn func(*Key) error) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	k.Scopes = slices.Clone(k.Scopes)
	k.Models = slices.Clone(k.Models)
	if err := fn(&k); err != nil {
		return Key{}, err
	}
	s.keys[id] = k
	s.audit = append(s.audit, a)
	return k, nil
}

func (s *memStore) RevokeKey(_ context.Context, id string, at time.Time, a AuditEntry) (Key, error) {
	return s.change(id, a, func(k *Key) error {
		if k.RevokedAt.IsZero() {
			k.RevokedAt = at
		}
		return nil
	})
}

func (s *memStore) RotateKey(_ context.Context, id string, r Rotation, a AuditEntry) (Key, error) {
	return s.change(id, a, func(k *Key) error {
		if !k.RevokedAt.IsZero() {
			return ErrRevoked
		}
		if r.Presented != "" {
			if cur, ok := s.secrets[r.Presented]; !ok || cur.keyID != id || !cur.expires.IsZero() {
				return ErrSuperseded
			}
		}
		if r.Limit > 0 {
			var recent []time.Time // newest last
			for _, e := range s.audit {
				if e.KeyID == id && e.Actor == id && e.Action == ActionRotate && e.Time.After(a.Time.Add(-r.Window)) {
					recent = append(recent, e.Time)
				}
			}
			if len(recent) >= r.Limit {
				return &RotateLimitError{Limit: r.Limit, Window: r.Window,
					RetryAfter: recent[len(recent)-r.Limit].Add(r.Window).Sub(a.Time)}
			}
		}
		for h, old := range s.secrets {
			switch {
			case old.keyID != id:
			case old.expires.IsZero():
				old.expires = r.OldUntil
				s.secrets[h] = old
			default:
				delete(s.secrets, h)
			}
		}
		s.secrets[r.Secret.Hash] = memSecret{keyID: id}
		k.Prefix = r.Secret.Prefix
		return nil
	})
}

func (s *memStore) UpdateKey(_ context.Context, id string, apply func(*Key) error, a AuditEntry) (Key, error) {
	return s.change(id, a, apply)
}

// addKey stores k with secret directly, bypassing Keys.
func (s *memStore) addKey(k Key, secret string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k.ID] = k
	s.secrets[Hash(secret)] = memSecret{keyID: k.ID, expires: expires}
}

func (s *memStore) setKey(k Key) {
	s.mu.Lock()
	s.keys[k.ID] = k
	s.mu.Unlock()
}

var (
	_ CredentialStore = (*memStore)(nil)
	_ LastUsedStore   = (*memStore)(nil)
	_ KeyStore        = (*memStore)(nil)
)
