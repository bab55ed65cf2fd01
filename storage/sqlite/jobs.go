package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"tollgate/jobs"
)

// DB satisfies jobs.Store.
var _ jobs.Store = (*DB)(nil)

const jobColumns = `id, key_id, endpoint, request, callback_url, status, request_id, attempt, retries,
	recovered, run_after, owner, lease_until, result, error, cancel_requested, created_at, started_at,
	finished_at, delivery, next_delivery_at`

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func scanJob(scan func(...any) error) (jobs.Job, error) {
	var j jobs.Job
	var req, status string
	var result, errJSON sql.NullString
	var runAfter, lease, created, started, finished, next int64
	if err := scan(&j.ID, &j.KeyID, &j.Endpoint, &req, &j.CallbackURL, &status, &j.RequestID, &j.Attempt,
		&j.Retries, &j.Recovered, &runAfter, &j.Owner, &lease, &result, &errJSON, &j.CancelRequested,
		&created, &started, &finished, &j.Delivery, &next); err != nil {
		return j, err
	}
	j.Request, j.Status = json.RawMessage(req), jobs.Status(status)
	if result.Valid {
		j.Result = json.RawMessage(result.String)
	}
	if errJSON.Valid {
		j.Error = &jobs.ErrorInfo{}
		if err := json.Unmarshal([]byte(errJSON.String), j.Error); err != nil {
			return j, fmt.Errorf("job %s: error column: %w", j.ID, err)
		}
	}
	j.RunAfter, j.LeaseUntil, j.CreatedAt = fromNanos(runAfter), fromNanos(lease), fromNanos(created)
	j.StartedAt, j.FinishedAt, j.NextDeliveryAt = fromNanos(started), fromNanos(finished), fromNanos(next)
	return j, nil
}

// InsertJob stores a new job.
func (db *DB) InsertJob(ctx context.Context, j jobs.Job) error {
	_, err := db.sql.ExecContext(ctx, `INSERT INTO jobs(id, key_id, endpoint, request, callback_url, status,
		run_after, created_at, delivery) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.KeyID, j.Endpoint, string(j.Request), j.CallbackURL, string(j.Status), nanos(j.RunAfter), nanos(j.CreatedAt), j.Delivery)
	if err != nil {
		return fmt.Errorf("storage: insert job: %w", err)
	}
	return nil
}

// Job returns a job with its delivery attempts, or jobs.ErrNotFound.
func (db *DB) Job(ctx context.Context, id string) (jobs.Job, error) {
	j, err := scanJob(db.sql.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return jobs.Job{}, jobs.ErrNotFound
	}
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: read job: %w", err)
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT at, status, error FROM job_deliveries WHERE job_id = ? ORDER BY attempt`, id)
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: read deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a jobs.Attempt
		var at int64
		if err := rows.Scan(&at, &a.Status, &a.Error); err != nil {
			return jobs.Job{}, err
		}
		a.At = fromNanos(at)
		j.Deliveries = append(j.Deliveries, a)
	}
	return j, rows.Err()
}

// ClaimJob atomically takes the oldest queued job due at now.
func (db *DB) ClaimJob(ctx context.Context, now time.Time, owner string, leaseUntil time.Time) (jobs.Job, bool, error) {
	row := db.sql.QueryRowContext(ctx, `UPDATE jobs SET status = 'running', attempt = attempt + 1,
		request_id = id || '-' || (attempt + 1), owner = ?, lease_until = ?, started_at = ?
		WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ? ORDER BY run_after, created_at LIMIT 1)
		  AND status = 'queued'
		RETURNING `+jobColumns, owner, nanos(leaseUntil), nanos(now), nanos(now))
	j, err := scanJob(row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return jobs.Job{}, false, nil
	}
	if err != nil {
		return jobs.Job{}, false, fmt.Errorf("storage: claim job: %w", err)
	}
	return j, true, nil
}

// FinishJob records how owner's run of job id ended.
func (db *DB) FinishJob(ctx context.Context, id, owner string, f jobs.Finish) (bool, error) {
	var result, errJSON any
	if f.Result != nil {
		result = string(f.Result)
	}
	if f.Error != nil {
		b, err := json.Marshal(f.Error)
		if err != nil {
			return false, err
		}
		errJSON = string(b)
	}
	res, err := db.sql.ExecContext(ctx, `UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?,
		owner = '', delivery = ?, next_delivery_at = ? WHERE id = ? AND owner = ? AND status = 'running'`,
		string(f.Status), result, errJSON, nanos(f.At), f.Delivery, nanos(f.At), id, owner)
	return affected(res, err, "finish job")
}

func affected(res sql.Result, err error, what string) (bool, error) {
	if err != nil {
		return false, fmt.Errorf("storage: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RequeueJob puts owner's running job back in the queue.
func (db *DB) RequeueJob(ctx context.Context, id, owner string, runAfter time.Time, retries int, recovered bool) (bool, error) {
	res, err := db.sql.ExecContext(ctx, `UPDATE jobs SET status = 'queued', owner = '', lease_until = 0,
		run_after = ?, retries = ?, recovered = ? WHERE id = ? AND owner = ? AND status = 'running'`,
		nanos(runAfter), retries, recovered, id, owner)
	return affected(res, err, "requeue job")
}

// CancelJob cancels a queued job or marks a running one cancel-requested.
func (db *DB) CancelJob(ctx context.Context, id string, now time.Time) (jobs.Job, error) {
	_, err := db.sql.ExecContext(ctx, `UPDATE jobs SET
		cancel_requested = 1,
		status = CASE status WHEN 'queued' THEN 'cancelled' ELSE status END,
		finished_at = CASE status WHEN 'queued' THEN ? ELSE finished_at END,
		error = CASE status WHEN 'queued' THEN ? ELSE error END,
		delivery = CASE WHEN status = 'queued' AND callback_url != '' THEN 'pending' ELSE delivery END,
		next_delivery_at = CASE status WHEN 'queued' THEN ? ELSE next_delivery_at END
		WHERE id = ? AND status IN ('queued', 'running')`,
		nanos(now), `{"code":"client_closed_request","message":"the job was cancelled before it ran"}`, nanos(now), id)
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: cancel job: %w", err)
	}
	return db.Job(ctx, id)
}

// Expired lists running jobs whose lease ended before now.
func (db *DB) Expired(ctx context.Context, now time.Time) ([]jobs.Job, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE status = 'running' AND lease_until < ?`, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("storage: expired jobs: %w", err)
	}
	defer rows.Close()
	var out []jobs.Job
	for rows.Next() {
		j, err := scanJob(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Billed reports whether a successful usage row has requestID.
func (db *DB) Billed(ctx context.Context, requestID string) (bool, error) {
	var n int
	err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage WHERE request_id = ? AND status = 200`, requestID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: billed: %w", err)
	}
	return n > 0, nil
}

// ClaimDelivery takes the oldest pending delivery due at now.
func (db *DB) ClaimDelivery(ctx context.Context, now, leaseUntil time.Time) (jobs.Job, bool, error) {
	var id string
	err := db.sql.QueryRowContext(ctx, `UPDATE jobs SET next_delivery_at = ?
		WHERE id = (SELECT id FROM jobs WHERE delivery = 'pending' AND next_delivery_at <= ? ORDER BY next_delivery_at LIMIT 1)
		  AND delivery = 'pending' RETURNING id`, nanos(leaseUntil), nanos(now)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return jobs.Job{}, false, nil
	}
	if err != nil {
		return jobs.Job{}, false, fmt.Errorf("storage: claim delivery: %w", err)
	}
	j, err := db.Job(ctx, id)
	return j, err == nil, err
}

// RecordDelivery appends an attempt and sets the delivery state.
func (db *DB) RecordDelivery(ctx context.Context, id string, a jobs.Attempt, state string, next time.Time) error {
	return db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO job_deliveries(job_id, attempt, at, status, error)
			VALUES (?, (SELECT COUNT(*) + 1 FROM job_deliveries WHERE job_id = ?), ?, ?, ?)`,
			id, id, nanos(a.At), a.Status, a.Error); err != nil {
			return fmt.Errorf("storage: record delivery: %w", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET delivery = ?, next_delivery_at = ? WHERE id = ?`, state, nanos(next), id)
		return err
	})
}

// PurgeJobs deletes final jobs finished before before whose callback is
// not pending.
func (db *DB) PurgeJobs(ctx context.Context, before time.Time) (int, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM jobs WHERE status IN ('succeeded','failed','cancelled')
		AND finished_at < ? AND delivery != 'pending'`, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("storage: purge jobs: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// WebhookSecret returns keyID's signing secret, "" if it has none.
func (db *DB) WebhookSecret(ctx context.Context, keyID string) (string, error) {
	var s string
	err := db.sql.QueryRowContext(ctx, `SELECT secret FROM webhook_secrets WHERE key_id = ?`, keyID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("storage: read webhook secret: %w", err)
	}
	return s, nil
}

// SetWebhookSecret sets (or replaces) keyID's signing secret.
func (db *DB) SetWebhookSecret(ctx context.Context, keyID, secret string, at time.Time) error {
	_, err := db.sql.ExecContext(ctx, `INSERT INTO webhook_secrets(key_id, secret, created_at) VALUES (?, ?, ?)
		ON CONFLICT(key_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at`, keyID, secret, nanos(at))
	if err != nil {
		return fmt.Errorf("storage: set webhook secret: %w", err)
	}
	return nil
}
