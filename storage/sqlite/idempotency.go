package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"tollgate/idempotency"
)

// DB satisfies idempotency.Store.
var _ idempotency.Store = (*DB)(nil)

// Claim implements idempotency.Store in one IMMEDIATE transaction, so two
// instances claiming the same key at once cannot both win.
func (db *DB) Claim(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	var (
		out     idempotency.Record
		claimed bool
	)
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency WHERE created_at < ?`,
			now.Add(-idempotency.TTL).UnixNano()); err != nil {
			return err
		}
		cur, err := getIdempotency(ctx, tx, r.KeyID, r.Key)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case cur.Done || !cur.Created.Before(now.Add(-idempotency.StaleAfter)):
			out = cur
			return nil
		}
		// New, or left in progress too long ago: r takes it.
		r.Done, r.Status, r.Header, r.Body, r.Created = false, 0, nil, nil, now
		if _, err := tx.ExecContext(ctx, `INSERT INTO idempotency(key_id, idem_key, fingerprint, owner, state, created_at)
			VALUES (?, ?, ?, ?, 'in_progress', ?)
			ON CONFLICT(key_id, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, owner = excluded.owner,
				state = 'in_progress', status = 0, headers = '{}', body = NULL, created_at = excluded.created_at`,
			r.KeyID, r.Key, r.Fingerprint, r.Owner, now.UnixNano()); err != nil {
			return err
		}
		out, claimed = r, true
		return nil
	})
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("storage: claim idempotency key: %w", err)
	}
	return out, claimed, nil
}

func getIdempotency(ctx context.Context, q queryRower, keyID, key string) (idempotency.Record, error) {
	r := idempotency.Record{KeyID: keyID, Key: key}
	var state, headers string
	var created int64
	err := q.QueryRowContext(ctx, `SELECT fingerprint, owner, state, status, headers, body, created_at
		FROM idempotency WHERE key_id = ? AND idem_key = ?`, keyID, key).
		Scan(&r.Fingerprint, &r.Owner, &state, &r.Status, &headers, &r.Body, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	r.Done = state == "done"
	r.Created = time.Unix(0, created).UTC()
	if err := json.Unmarshal([]byte(headers), &r.Header); err != nil {
		return r, fmt.Errorf("idempotency record headers: %w", err)
	}
	return r, nil
}

// Finish implements idempotency.Store. A record that another request has
// taken over in the meantime (r.Owner no longer holds it) is left alone.
func (db *DB) Finish(ctx context.Context, r idempotency.Record) error {
	headers, err := json.Marshal(r.Header)
	if err != nil {
		return err
	}
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE idempotency SET state = 'done', status = ?, headers = ?, body = ?
			WHERE key_id = ? AND idem_key = ? AND owner = ? AND state = 'in_progress'`,
			r.Status, string(headers), r.Body, r.KeyID, r.Key, r.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: finish idempotency key: %w", err)
	}
	return nil
}

// Touch marks the in-progress record owner holds as alive at now (its
// created_at, which decides staleness while it runs).
func (db *DB) Touch(ctx context.Context, keyID, key, owner string, now time.Time) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE idempotency SET created_at = ?
			WHERE key_id = ? AND idem_key = ? AND owner = ? AND state = 'in_progress'`, now.UnixNano(), keyID, key, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: touch idempotency key: %w", err)
	}
	return nil
}

// Release implements idempotency.Store.
func (db *DB) Release(ctx context.Context, keyID, key, owner string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM idempotency
			WHERE key_id = ? AND idem_key = ? AND owner = ? AND state = 'in_progress'`, keyID, key, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: release idempotency key: %w", err)
	}
	return nil
}
