package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"tollgate/auth"
)

// DB satisfies the stores package auth declares.
var (
	_ auth.CredentialStore = (*DB)(nil)
	_ auth.LastUsedStore   = (*DB)(nil)
	_ auth.KeyStore        = (*DB)(nil)
)

const keyColumns = `k.id, k.name, k.prefix, k.scopes, k.models, k.plan,
	k.requests_per_second, k.burst, k.tokens_per_minute, k.max_concurrent,
	k.monthly_tokens, k.monthly_requests,
	k.expires_at, k.revoked_at, k.last_used_at, k.created_at, COALESCE(k.account_id, ''), k.monthly_budget`

// queryRower is what *sql.DB and *sql.Tx share for single-row reads.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// scanKey reads keyColumns, then extra, from one row.
func scanKey(scan func(...any) error, extra ...any) (auth.Key, error) {
	var k auth.Key
	var scopes, models string
	var expires, revoked, used, created sql.NullInt64
	dest := append([]any{&k.ID, &k.Name, &k.Prefix, &scopes, &models, &k.Plan,
		&k.Limits.RequestsPerSecond, &k.Limits.Burst, &k.Limits.TokensPerMinute, &k.Limits.MaxConcurrent,
		&k.Limits.MonthlyTokens, &k.Limits.MonthlyRequests,
		&expires, &revoked, &used, &created, &k.AccountID, &k.Limits.MonthlyBudget}, extra...)
	if err := scan(dest...); err != nil {
		return auth.Key{}, err
	}
	// Scopes are read leniently: a scope this build does not know (written
	// by a newer one) just grants nothing here.
	for _, s := range splitList(scopes) {
		k.Scopes = append(k.Scopes, auth.Scope(s))
	}
	k.Models = splitList(models)
	k.ExpiresAt, k.RevokedAt = timeFromNanos(expires), timeFromNanos(revoked)
	k.LastUsedAt, k.CreatedAt = timeFromNanos(used), timeFromNanos(created)
	return k, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// nanosOrNull stores a time as Unix nanoseconds, the zero time as NULL.
func nanosOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// timeFromNanos is the inverse of nanosOrNull, in UTC.
func timeFromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// Credential returns the key whose secret hashes to hash, with that secret's
// own expiry, or auth.ErrUnknown.
func (db *DB) Credential(ctx context.Context, hash string) (auth.Credential, error) {
	var secretExpires sql.NullInt64
	row := db.sql.QueryRowContext(ctx, `SELECT `+keyColumns+`, s.expires_at
		FROM key_secrets s JOIN keys k ON k.id = s.key_id WHERE s.hash = ?`, hash)
	k, err := scanKey(row.Scan, &secretExpires)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Credential{}, auth.ErrUnknown
	}
	if err != nil {
		return auth.Credential{}, fmt.Errorf("storage: look up key: %w", err)
	}
	return auth.Credential{Key: k, SecretExpiresAt: timeFromNanos(secretExpires)}, nil
}

// KeyByID returns the key with id, or auth.ErrNotFound.
func (db *DB) KeyByID(ctx context.Context, id string) (auth.Key, error) {
	k, err := keyByID(ctx, db.sql, id)
	if err != nil && !errors.Is(err, auth.ErrNotFound) {
		return auth.Key{}, fmt.Errorf("storage: read key: %w", err)
	}
	return k, err
}

func keyByID(ctx context.Context, q queryRower, id string) (auth.Key, error) {
	row := q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys k WHERE k.id = ?`, id)
	k, err := scanKey(row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Key{}, auth.ErrNotFound
	}
	return k, err
}

// ListKeys returns every key, oldest first.
func (db *DB) ListKeys(ctx context.Context) ([]auth.Key, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys k ORDER BY k.created_at, k.id`)
	if err != nil {
		return nil, fmt.Errorf("storage: list keys: %w", err)
	}
	defer rows.Close()
	var out []auth.Key
	for rows.Next() {
		k, err := scanKey(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("storage: list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list keys: %w", err)
	}
	return out, nil
}

// CreateKey stores a new key, its first secret and the audit entry in one
// transaction.
func (db *DB) CreateKey(ctx context.Context, k auth.Key, s auth.StoredSecret, a auth.AuditEntry) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO keys(id, name, prefix, scopes, models, plan,
			requests_per_second, burst, tokens_per_minute, max_concurrent, monthly_tokens, monthly_requests,
			expires_at, revoked_at, last_used_at, created_at, account_id, monthly_budget)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Name, k.Prefix, auth.JoinScopes(k.Scopes), strings.Join(k.Models, ","), k.Plan,
			k.Limits.RequestsPerSecond, k.Limits.Burst, k.Limits.TokensPerMinute, k.Limits.MaxConcurrent,
			k.Limits.MonthlyTokens, k.Limits.MonthlyRequests,
			nanosOrNull(k.ExpiresAt), nanosOrNull(k.RevokedAt), nanosOrNull(k.LastUsedAt), k.CreatedAt.UnixNano(),
			nullIfEmpty(k.AccountID), k.Limits.MonthlyBudget)
		if err != nil {
			return err
		}
		if err := insertSecret(ctx, tx, k.ID, s); err != nil {
			return err
		}
		return insertAudit(ctx, tx, a)
	})
	if err != nil {
		return fmt.Errorf("storage: create key %s: %w", k.ID, err)
	}
	return nil
}

func insertSecret(ctx context.Context, tx *sql.Tx, keyID string, s auth.StoredSecret) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO key_secrets(hash, key_id, prefix, created_at) VALUES (?, ?, ?, ?)`,
		s.Hash, keyID, s.Prefix, s.CreatedAt.UnixNano())
	return err
}

// changeKey runs fn on key id inside one transaction, then writes a and
// re-reads the key. The auth package's own errors (see authError) pass
// through unwrapped; others are wrapped.
func (db *DB) changeKey(ctx context.Context, id string, a auth.AuditEntry, fn func(*sql.Tx, *auth.Key) error) (auth.Key, error) {
	var out auth.Key
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		k, err := keyByID(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, &k); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, a); err != nil {
			return err
		}
		out, err = keyByID(ctx, tx, id)
		return err
	})
	if err != nil && !authError(err) {
		return auth.Key{}, fmt.Errorf("storage: change key %s: %w", id, err)
	}
	return out, err
}

// authError reports whether err is one of the auth package's answers about
// a key, as opposed to a database failure.
func authError(err error) bool {
	var limit *auth.RotateLimitError
	return errors.Is(err, auth.ErrNotFound) || errors.Is(err, auth.ErrRevoked) || errors.Is(err, auth.ErrInvalid) ||
		errors.Is(err, auth.ErrSuperseded) || errors.As(err, &limit)
}

// RevokeKey marks key id revoked at at, keeping an earlier revocation time,
// and records a. It returns the key, or auth.ErrNotFound.
func (db *DB) RevokeKey(ctx context.Context, id string, at time.Time, a auth.AuditEntry) (auth.Key, error) {
	return db.changeKey(ctx, id, a, func(tx *sql.Tx, _ *auth.Key) error {
		_, err := tx.ExecContext(ctx, `UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, at.UnixNano(), id)
		return err
	})
}

// RotateKey applies r to key id, in one IMMEDIATE transaction with a, so
// that no other rotation, on this instance or another, can come between
// the checks and the change: for a self-rotation it checks that r.Presented
// is the key's current secret (auth.ErrSuperseded if not) and that the key
// has not reached r.Limit self-rotations (*auth.RotateLimitError); then it
// deletes every secret but the current one (ending the grace of one still
// in it, pruning those past it), gives the current one r.OldUntil and adds
// r.Secret as the new current one. It returns the updated key,
// auth.ErrNotFound, or auth.ErrRevoked for a revoked key.
func (db *DB) RotateKey(ctx context.Context, id string, r auth.Rotation, a auth.AuditEntry) (auth.Key, error) {
	return db.changeKey(ctx, id, a, func(tx *sql.Tx, k *auth.Key) error {
		if !k.RevokedAt.IsZero() {
			return auth.ErrRevoked
		}
		if r.Presented != "" {
			var current bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM key_secrets
				WHERE hash = ? AND key_id = ? AND expires_at IS NULL)`, r.Presented, id).Scan(&current); err != nil {
				return err
			}
			if !current {
				return auth.ErrSuperseded
			}
		}
		if r.Limit > 0 {
			if err := checkSelfRotations(ctx, tx, id, r, a.Time); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM key_secrets WHERE key_id = ? AND expires_at IS NOT NULL`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE key_secrets SET expires_at = ? WHERE key_id = ? AND expires_at IS NULL`,
			r.OldUntil.UnixNano(), id); err != nil {
			return err
		}
		if err := insertSecret(ctx, tx, id, r.Secret); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE keys SET prefix = ? WHERE id = ?`, r.Secret.Prefix, id)
		return err
	})
}

// checkSelfRotations returns a *auth.RotateLimitError if key id has rotated
// itself r.Limit times in the r.Window before now, as the audit trail
// (indexed by key and time) records. The limit lifts when the r.Limit-th
// newest of those rotations leaves the window.
func checkSelfRotations(ctx context.Context, tx *sql.Tx, id string, r auth.Rotation, now time.Time) error {
	var at int64
	err := tx.QueryRowContext(ctx, `SELECT at FROM audit
		WHERE key_id = ?1 AND actor = ?1 AND action = ?2 AND at > ?3
		ORDER BY at DESC LIMIT 1 OFFSET ?4`,
		id, auth.ActionRotate, now.Add(-r.Window).UnixNano(), r.Limit-1).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return &auth.RotateLimitError{Limit: r.Limit, Window: r.Window, RetryAfter: time.Unix(0, at).Add(r.Window).Sub(now)}
}

// UpdateKey reads key id, lets apply change it and stores its name, scopes,
// models, plan, limits and expiry, with a, in one transaction. An error from
// apply is returned as is and nothing is written.
func (db *DB) UpdateKey(ctx context.Context, id string, apply func(*auth.Key) error, a auth.AuditEntry) (auth.Key, error) {
	return db.changeKey(ctx, id, a, func(tx *sql.Tx, k *auth.Key) error {
		if err := apply(k); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE keys SET name = ?, scopes = ?, models = ?, plan = ?,
			requests_per_second = ?, burst = ?, tokens_per_minute = ?, max_concurrent = ?,
			monthly_tokens = ?, monthly_requests = ?, expires_at = ?, account_id = ?, monthly_budget = ? WHERE id = ?`,
			k.Name, auth.JoinScopes(k.Scopes), strings.Join(k.Models, ","), k.Plan,
			k.Limits.RequestsPerSecond, k.Limits.Burst, k.Limits.TokensPerMinute, k.Limits.MaxConcurrent,
			k.Limits.MonthlyTokens, k.Limits.MonthlyRequests, nanosOrNull(k.ExpiresAt), nullIfEmpty(k.AccountID), k.Limits.MonthlyBudget, id)
		return err
	})
}

// TouchLastUsed moves each key's last_used_at forward to the given time
// (never back), in one transaction. Unknown ids are ignored.
func (db *DB) TouchLastUsed(ctx context.Context, usedAt map[string]time.Time) error {
	if len(usedAt) == 0 {
		return nil
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE keys SET last_used_at = ?1
			WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, t := range usedAt {
			if _, err := stmt.ExecContext(ctx, t.UnixNano(), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: record last-used times: %w", err)
	}
	return nil
}
