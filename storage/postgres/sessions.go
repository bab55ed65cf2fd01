package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate/auth"
)

// CreateSession stores a dashboard session (auth.SessionStore).
func (db *DB) CreateSession(ctx context.Context, s auth.Session) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO sessions (id, key_id, secret_hash, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, s.ID, s.KeyID, s.SecretHash, s.CreatedAt.UnixNano(), s.ExpiresAt.UnixNano())
	if err != nil {
		return fmt.Errorf("storage: create session: %w", db.wrap(err))
	}
	return nil
}

// SessionByID returns the session stored under id, or auth.ErrNoSession.
func (db *DB) SessionByID(ctx context.Context, id string) (auth.Session, error) {
	var s auth.Session
	var created, expires int64
	err := db.pool.QueryRow(ctx, `SELECT id, key_id, secret_hash, created_at, expires_at
		FROM sessions WHERE id = $1`, id).Scan(&s.ID, &s.KeyID, &s.SecretHash, &created, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Session{}, auth.ErrNoSession
	}
	if err != nil {
		return auth.Session{}, fmt.Errorf("storage: read session: %w", db.wrap(err))
	}
	s.CreatedAt, s.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	return s, nil
}

// DeleteSession removes the session stored under id, if any.
func (db *DB) DeleteSession(ctx context.Context, id string) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM sessions WHERE id = $1`, id); err != nil {
		return fmt.Errorf("storage: delete session: %w", db.wrap(err))
	}
	return nil
}

// DeleteSessionsBefore removes the sessions whose lifetime has ended by t.
func (db *DB) DeleteSessionsBefore(ctx context.Context, t time.Time) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM sessions WHERE expires_at <= $1`, t.UnixNano()); err != nil {
		return fmt.Errorf("storage: sweep sessions: %w", db.wrap(err))
	}
	return nil
}
