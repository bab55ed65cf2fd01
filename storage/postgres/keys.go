package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate/auth"
)

// DB satisfies the stores package auth declares.
var (
	_ auth.CredentialStore = (*DB)(nil)
	_ auth.LastUsedStore   = (*DB)(nil)
	_ auth.KeyStore        = (*DB)(nil)
)

// KeyChannel is the notification channel on which every change to a key
// (revocation, rotation, update) is announced, with the key id as payload,
// in the transaction that makes the change.
const KeyChannel = "tollgate_keys"

const keyColumns = `k.id, k.name, k.prefix, k.scopes, k.models, k.plan,
	k.requests_per_second, k.burst, k.tokens_per_minute, k.max_concurrent,
	k.monthly_tokens, k.monthly_requests,
	k.expires_at, k.revoked_at, k.last_used_at, k.created_at, COALESCE(k.account_id, ''), k.monthly_budget`

// querier is what the pool and a transaction share.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanKey(scan func(...any) error, extra ...any) (auth.Key, error) {
	var k auth.Key
	var scopes, models string
	var burst, maxConc int64
	var expires, revoked, used, created *int64
	dest := append([]any{&k.ID, &k.Name, &k.Prefix, &scopes, &models, &k.Plan,
		&k.Limits.RequestsPerSecond, &burst, &k.Limits.TokensPerMinute, &maxConc,
		&k.Limits.MonthlyTokens, &k.Limits.MonthlyRequests,
		&expires, &revoked, &used, &created, &k.AccountID, &k.Limits.MonthlyBudget}, extra...)
	if err := scan(dest...); err != nil {
		return auth.Key{}, err
	}
	k.Limits.Burst, k.Limits.MaxConcurrent = int(burst), int(maxConc)
	for _, s := range splitList(scopes) {
		k.Scopes = append(k.Scopes, auth.Scope(s))
	}
	k.Models = splitList(models)
	k.ExpiresAt, k.RevokedAt = fromPtr(expires), fromPtr(revoked)
	k.LastUsedAt, k.CreatedAt = fromPtr(used), fromPtr(created)
	return k, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// nanosOrNull stores a time as Unix nanoseconds, the zero time as NULL.
func nanosOrNull(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromPtr(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

// Credential returns the key whose secret hashes to hash, with that secret's
// own expiry, or auth.ErrUnknown.
func (db *DB) Credential(ctx context.Context, hash string) (auth.Credential, error) {
	var secretExpires *int64
	row := db.pool.QueryRow(ctx, `SELECT `+keyColumns+`, s.expires_at
		FROM key_secrets s JOIN keys k ON k.id = s.key_id WHERE s.hash = $1`, hash)
	k, err := scanKey(row.Scan, &secretExpires)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Credential{}, auth.ErrUnknown
	}
	if err != nil {
		return auth.Credential{}, fmt.Errorf("storage: look up key: %w", db.wrap(err))
	}
	return auth.Credential{Key: k, SecretExpiresAt: fromPtr(secretExpires)}, nil
}

// KeyByID returns the key with id, or auth.ErrNotFound.
func (db *DB) KeyByID(ctx context.Context, id string) (auth.Key, error) {
	k, err := keyByID(ctx, db.pool, id, false)
	if err != nil && !errors.Is(err, auth.ErrNotFound) {
		return auth.Key{}, fmt.Errorf("storage: read key: %w", db.wrap(err))
	}
	return k, err
}

// keyByID reads key id; forUpdate locks its row until the transaction
// ends, so changes to one key are serialized across replicas.
func keyByID(ctx context.Context, q querier, id string, forUpdate bool) (auth.Key, error) {
	sql := `SELECT ` + keyColumns + ` FROM keys k WHERE k.id = $1`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	k, err := scanKey(q.QueryRow(ctx, sql, id).Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Key{}, auth.ErrNotFound
	}
	return k, err
}

// ListKeys returns every key, oldest first.
func (db *DB) ListKeys(ctx context.Context) ([]auth.Key, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+keyColumns+` FROM keys k ORDER BY k.created_at, k.id`)
	if err != nil {
		return nil, fmt.Errorf("storage: list keys: %w", db.wrap(err))
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
		return nil, fmt.Errorf("storage: list keys: %w", db.wrap(err))
	}
	return out, nil
}

// CreateKey stores a new key, its first secret and the audit entry in one
// transaction.
func (db *DB) CreateKey(ctx context.Context, k auth.Key, s auth.StoredSecret, a auth.AuditEntry) error {
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO keys(id, name, prefix, scopes, models, plan,
			requests_per_second, burst, tokens_per_minute, max_concurrent, monthly_tokens, monthly_requests,
			expires_at, revoked_at, last_used_at, created_at, account_id, monthly_budget)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			k.ID, k.Name, k.Prefix, auth.JoinScopes(k.Scopes), strings.Join(k.Models, ","), k.Plan,
			k.Limits.RequestsPerSecond, int64(k.Limits.Burst), k.Limits.TokensPerMinute, int64(k.Limits.MaxConcurrent),
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

func insertSecret(ctx context.Context, tx pgx.Tx, keyID string, s auth.StoredSecret) error {
	_, err := tx.Exec(ctx, `INSERT INTO key_secrets(hash, key_id, prefix, created_at) VALUES ($1, $2, $3, $4)`,
		s.Hash, keyID, s.Prefix, s.CreatedAt.UnixNano())
	return err
}

// changeKey runs fn on key id (its row locked) inside one transaction, then
// writes a, announces the change on KeyChannel and re-reads the key. The
// notification is delivered at commit, and only if it commits.
func (db *DB) changeKey(ctx context.Context, id string, a auth.AuditEntry, fn func(pgx.Tx, *auth.Key) error) (auth.Key, error) {
	var out auth.Key
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		k, err := keyByID(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if err := fn(tx, &k); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, a); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, KeyChannel, id); err != nil {
			return err
		}
		out, err = keyByID(ctx, tx, id, false)
		return err
	})
	if err != nil && !authError(err) {
		return auth.Key{}, fmt.Errorf("storage: change key %s: %w", id, err)
	}
	return out, err
}

func authError(err error) bool {
	var limit *auth.RotateLimitError
	return errors.Is(err, auth.ErrNotFound) || errors.Is(err, auth.ErrRevoked) || errors.Is(err, auth.ErrInvalid) ||
		errors.Is(err, auth.ErrSuperseded) || errors.As(err, &limit)
}

// RevokeKey marks key id revoked at at, keeping an earlier revocation time,
// and records a. It returns the key, or auth.ErrNotFound.
func (db *DB) RevokeKey(ctx context.Context, id string, at time.Time, a auth.AuditEntry) (auth.Key, error) {
	return db.changeKey(ctx, id, a, func(tx pgx.Tx, _ *auth.Key) error {
		_, err := tx.Exec(ctx, `UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2`, at.UnixNano(), id)
		return err
	})
}

// RotateKey applies r to key id in one transaction with a, holding the
// key's row lock, so that no other rotation, on this replica or another,
// can come between the checks and the change. See sqlite's RotateKey for
// the rules; they are the same.
func (db *DB) RotateKey(ctx context.Context, id string, r auth.Rotation, a auth.AuditEntry) (auth.Key, error) {
	return db.changeKey(ctx, id, a, func(tx pgx.Tx, k *auth.Key) error {
		if !k.RevokedAt.IsZero() {
			return auth.ErrRevoked
		}
		if r.Presented != "" {
			var current bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_secrets
				WHERE hash = $1 AND key_id = $2 AND expires_at IS NULL)`, r.Presented, id).Scan(&current); err != nil {
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
		if _, err := tx.Exec(ctx, `DELETE FROM key_secrets WHERE key_id = $1 AND expires_at IS NOT NULL`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE key_secrets SET expires_at = $1 WHERE key_id = $2 AND expires_at IS NULL`,
			r.OldUntil.UnixNano(), id); err != nil {
			return err
		}
		if err := insertSecret(ctx, tx, id, r.Secret); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE keys SET prefix = $1 WHERE id = $2`, r.Secret.Prefix, id)
		return err
	})
}

// checkSelfRotations returns a *auth.RotateLimitError if key id has rotated
// itself r.Limit times in the r.Window before now.
func checkSelfRotations(ctx context.Context, tx pgx.Tx, id string, r auth.Rotation, now time.Time) error {
	var at int64
	err := tx.QueryRow(ctx, `SELECT at FROM audit
		WHERE key_id = $1 AND actor = $1 AND action = $2 AND at > $3
		ORDER BY at DESC LIMIT 1 OFFSET $4`,
		id, auth.ActionRotate, now.Add(-r.Window).UnixNano(), int64(r.Limit-1)).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
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
	return db.changeKey(ctx, id, a, func(tx pgx.Tx, k *auth.Key) error {
		if err := apply(k); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE keys SET name = $1, scopes = $2, models = $3, plan = $4,
			requests_per_second = $5, burst = $6, tokens_per_minute = $7, max_concurrent = $8,
			monthly_tokens = $9, monthly_requests = $10, expires_at = $11, account_id = $12, monthly_budget = $13 WHERE id = $14`,
			k.Name, auth.JoinScopes(k.Scopes), strings.Join(k.Models, ","), k.Plan,
			k.Limits.RequestsPerSecond, int64(k.Limits.Burst), k.Limits.TokensPerMinute, int64(k.Limits.MaxConcurrent),
			k.Limits.MonthlyTokens, k.Limits.MonthlyRequests, nanosOrNull(k.ExpiresAt), nullIfEmpty(k.AccountID), k.Limits.MonthlyBudget, id)
		return err
	})
}

// TouchLastUsed moves each key's last_used_at forward to the given time
// (never back), in one statement. Unknown ids are ignored.
func (db *DB) TouchLastUsed(ctx context.Context, usedAt map[string]time.Time) error {
	if len(usedAt) == 0 {
		return nil
	}
	ids := make([]string, 0, len(usedAt))
	times := make([]int64, 0, len(usedAt))
	for id, t := range usedAt {
		ids = append(ids, id)
		times = append(times, t.UnixNano())
	}
	_, err := db.pool.Exec(ctx, `UPDATE keys k SET last_used_at = v.t
		FROM unnest($1::text[], $2::bigint[]) AS v(id, t)
		WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.t)`, ids, times)
	if err != nil {
		return fmt.Errorf("storage: record last-used times: %w", db.wrap(err))
	}
	return nil
}

// insertAudit writes one audit row inside tx, so that a change and its
// record commit together.
func insertAudit(ctx context.Context, tx pgx.Tx, a auth.AuditEntry) error {
	_, err := tx.Exec(ctx, `INSERT INTO audit(at, actor, action, key_id, detail) VALUES ($1, $2, $3, $4, $5)`,
		a.Time.UnixNano(), a.Actor, a.Action, a.KeyID, a.Detail)
	if err != nil {
		return fmt.Errorf("write audit entry: %w", err)
	}
	return nil
}

// Audit returns the audit trail of key keyID, or of every key if keyID is
// empty, oldest first.
func (db *DB) Audit(ctx context.Context, keyID string) ([]auth.AuditEntry, error) {
	q := `SELECT at, actor, action, key_id, detail FROM audit`
	var args []any
	if keyID != "" {
		q += ` WHERE key_id = $1`
		args = append(args, keyID)
	}
	rows, err := db.pool.Query(ctx, q+` ORDER BY at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: read audit: %w", db.wrap(err))
	}
	defer rows.Close()
	var out []auth.AuditEntry
	for rows.Next() {
		var a auth.AuditEntry
		var at int64
		if err := rows.Scan(&at, &a.Actor, &a.Action, &a.KeyID, &a.Detail); err != nil {
			return nil, fmt.Errorf("storage: read audit: %w", err)
		}
		a.Time = time.Unix(0, at).UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: read audit: %w", db.wrap(err))
	}
	return out, nil
}
