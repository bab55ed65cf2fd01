package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// DefaultSessionTTL is how long a dashboard session lasts from sign-in when
// SessionOptions leaves TTL zero.
const DefaultSessionTTL = 12 * time.Hour

// ErrNoSession: the session token is unknown, malformed, signed out or past
// its lifetime. ErrRevoked and ErrExpired (from the key) end a session too.
var ErrNoSession = errors.New("auth: no such session")

// Session is a browser's sign-in to the dashboard: it authenticates as the
// key whose secret was presented at sign-in, for as long as that secret
// works and the session's own lifetime lasts. Neither the session token nor
// the key's secret is held: ID is the SHA-256 of the token and SecretHash
// is Hash of the secret (what the keys table keeps anyway).
type Session struct {
	ID         string    // hex SHA-256 of the session token
	KeyID      string    // the key the session acts as
	SecretHash string    // Hash of the secret signed in with
	CreatedAt  time.Time // sign-in
	ExpiresAt  time.Time // end of the session's lifetime
}

// SessionStore keeps sessions by ID. SessionByID returns ErrNoSession when
// there is none. Implementations must be safe for concurrent use.
type SessionStore interface {
	CreateSession(ctx context.Context, s Session) error
	SessionByID(ctx context.Context, id string) (Session, error)
	// DeleteSession removes one session; an unknown id is not an error.
	DeleteSession(ctx context.Context, id string) error
	// DeleteSessionsBefore removes sessions whose lifetime has ended by t.
	DeleteSessionsBefore(ctx context.Context, t time.Time) error
}

// HashVerifier re-checks a key by the Hash of one of its secrets;
// *Verifier satisfies it.
type HashVerifier interface {
	VerifyHash(ctx context.Context, hash string) (Key, error)
}

// SessionOptions configure Sessions. The zero value gives the defaults.
type SessionOptions struct {
	TTL time.Duration    // 0: DefaultSessionTTL
	Now func() time.Time // nil: time.Now
}

// Sessions starts, resumes and ends dashboard sessions. Every Resume checks
// the key again through the verifier, so revoking the key, its expiry, or
// the end of a rotated secret's grace period ends its sessions (at once on
// the instance that made the change, within the verifier's CacheTTL on
// others). Safe for concurrent use.
type Sessions struct {
	store    SessionStore
	verifier HashVerifier
	ttl      time.Duration
	now      func() time.Time
}

// NewSessions returns Sessions kept in store and checked with verifier.
func NewSessions(store SessionStore, verifier HashVerifier, opts SessionOptions) *Sessions {
	s := &Sessions{store: store, verifier: verifier, ttl: opts.TTL, now: opts.Now}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// TTL is a session's lifetime from sign-in.
func (m *Sessions) TTL() time.Duration { return m.ttl }

// sessionTokenBytes is the session token's entropy: 256 bits.
const sessionTokenBytes = 32

// Start opens a session for key, which the caller has just verified with
// secret, and returns the session token (for the cookie; stored nowhere)
// and the session. Expired sessions are swept on the way.
func (m *Sessions) Start(ctx context.Context, key Key, secret string) (string, Session, error) {
	var raw [sessionTokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Session{}, fmt.Errorf("auth: session token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	now := m.now().UTC()
	s := Session{ID: sessionID(token), KeyID: key.ID, SecretHash: Hash(secret), CreatedAt: now, ExpiresAt: now.Add(m.ttl)}
	if err := m.store.DeleteSessionsBefore(ctx, now); err != nil {
		return "", Session{}, fmt.Errorf("auth: sweep sessions: %w", err)
	}
	if err := m.store.CreateSession(ctx, s); err != nil {
		return "", Session{}, fmt.Errorf("auth: create session: %w", err)
	}
	return token, s, nil
}

// Resume returns the session of token and its key as it is now. A session
// whose lifetime is over is deleted (ErrNoSession). One whose key no longer
// accepts the secret it was signed in with (revoked, expired, rotated out)
// fails with ErrRevoked, ErrExpired or ErrNoSession (the secret is gone)
// and stays stored, failing the same way, until its lifetime ends and Start
// sweeps it: every request still in flight from the browser is told the
// same reason. Other errors are the store's or the verifier's.
func (m *Sessions) Resume(ctx context.Context, token string) (Session, Key, error) {
	if len(token) != base64.RawURLEncoding.EncodedLen(sessionTokenBytes) {
		return Session{}, Key{}, ErrNoSession
	}
	s, err := m.store.SessionByID(ctx, sessionID(token))
	if err != nil {
		return Session{}, Key{}, err
	}
	if !m.now().Before(s.ExpiresAt) {
		_ = m.store.DeleteSession(ctx, s.ID)
		return Session{}, Key{}, ErrNoSession
	}
	key, err := m.verifier.VerifyHash(ctx, s.SecretHash)
	switch {
	case errors.Is(err, ErrUnknown), errors.Is(err, ErrMalformed):
		return Session{}, Key{}, ErrNoSession // the secret is gone: rotated out long ago
	case errors.Is(err, ErrRevoked), errors.Is(err, ErrExpired):
		return Session{}, Key{}, err
	case err != nil:
		return Session{}, Key{}, err
	}
	if key.ID != s.KeyID {
		return Session{}, Key{}, ErrNoSession
	}
	return s, key, nil
}

// End signs the session of token out; an unknown token is not an error.
func (m *Sessions) End(ctx context.Context, token string) error {
	return m.store.DeleteSession(ctx, sessionID(token))
}

// CSRFToken returns the anti-forgery token of the session whose token is
// given: derived from it (so nothing more is stored), useless without it,
// and revealing nothing about it. The dashboard sends it back in a header on
// every change.
func CSRFToken(token string) string {
	sum := sha256.Sum256([]byte("tollgate csrf\x00" + token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckCSRF reports, in constant time, whether presented is the CSRF token
// of the session token.
func CheckCSRF(token, presented string) bool {
	want := CSRFToken(token)
	return len(presented) == len(want) && subtle.ConstantTimeCompare([]byte(want), []byte(presented)) == 1
}

// sessionID is what a session is stored under: hex SHA-256 of its token.
func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
