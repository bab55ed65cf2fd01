package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate/idempotency"
)

// DB satisfies idempotency.Store.
var _ idempotency.Store = (*DB)(nil)

// Claim implements idempotency.Store with one upsert that takes the record
// only if it is new or was left in progress too long ago, so two replicas
// claiming the same key at once cannot both win: PostgreSQL makes the
// second wait for the first's row and then sees it.
func (db *DB) Claim(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	var (
		out     idempotency.Record
		claimed bool
	)
	// A record released between the failed upsert and the read is gone:
	// try again (bounded; each round is a fresh race).
	for range 3 {
		err := db.withTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM idempotency WHERE created_at < $1`,
				now.Add(-idempotency.TTL).UnixNano()); err != nil {
				return err
			}
			var owner string
			err := tx.QueryRow(ctx, `INSERT INTO idempotency(key_id, idem_key, fingerprint, owner, state, created_at)
				VALUES ($1, $2, $3, $4, 'in_progress', $5)
				ON CONFLICT (key_id, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, owner = excluded.owner,
					state = 'in_progress', status = 0, headers = '{}', body = NULL, created_at = excluded.created_at
				WHERE idempotency.state = 'in_progress' AND idempotency.created_at < $6
				RETURNING owner`,
				r.KeyID, r.Key, r.Fingerprint, r.Owner, now.UnixNano(), now.Add(-idempotency.StaleAfter).UnixNano()).Scan(&owner)
			switch {
			case err == nil:
				r.Done, r.Status, r.Header, r.Body, r.Created = false, 0, nil, nil, now
				out, claimed = r, true
				return nil
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			out, err = getIdempotency(ctx, tx, r.KeyID, r.Key)
			return err
		})
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("storage: claim idempotency key: %w", err)
		}
		return out, claimed, nil
	}
	return idempotency.Record{}, false, errors.New("storage: claim idempotency key: the record kept changing")
}

func getIdempotency(ctx context.Context, q querier, keyID, key string) (idempotency.Record, error) {
	r := idempotency.Record{KeyID: keyID, Key: key}
	var state, headers string
	var created int64
	var status int32
	err := q.QueryRow(ctx, `SELECT fingerprint, owner, state, status, headers, body, created_at
		FROM idempotency WHERE key_id = $1 AND idem_key = $2`, keyID, key).
		Scan(&r.Fingerprint, &r.Owner, &state, &status, &headers, &r.Body, &created)
	if err != nil {
		return r, err
	}
	r.Status = int(status)
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
	_, err = db.pool.Exec(ctx, `UPDATE idempotency SET state = 'done', status = $1, headers = $2, body = $3
		WHERE key_id = $4 AND idem_key = $5 AND owner = $6 AND state = 'in_progress'`,
		int32(r.Status), string(headers), r.Body, r.KeyID, r.Key, r.Owner)
	if err != nil {
		return fmt.Errorf("storage: finish idempotency key: %w", db.wrap(err))
	}
	return nil
}

// Touch marks the in-progress record owner holds as alive at now.
func (db *DB) Touch(ctx context.Context, keyID, key, owner string, now time.Time) error {
	_, err := db.pool.Exec(ctx, `UPDATE idempotency SET created_at = $1
		WHERE key_id = $2 AND idem_key = $3 AND owner = $4 AND state = 'in_progress'`, now.UnixNano(), keyID, key, owner)
	if err != nil {
		return fmt.Errorf("storage: touch idempotency key: %w", db.wrap(err))
	}
	return nil
}

// Release implements idempotency.Store.
func (db *DB) Release(ctx context.Context, keyID, key, owner string) error {
	_, err := db.pool.Exec(ctx, `DELETE FROM idempotency
		WHERE key_id = $1 AND idem_key = $2 AND owner = $3 AND state = 'in_progress'`, keyID, key, owner)
	if err != nil {
		return fmt.Errorf("storage: release idempotency key: %w", db.wrap(err))
	}
	return nil
}
