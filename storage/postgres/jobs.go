package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	var result, errJSON *string
	var attempt, retries int32
	var runAfter, lease, created, started, finished, next int64
	if err := scan(&j.ID, &j.KeyID, &j.Endpoint, &req, &j.CallbackURL, &status, &j.RequestID, &attempt,
		&retries, &j.Recovered, &runAfter, &j.Owner, &lease, &result, &errJSON, &j.CancelRequested,
		&created, &started, &finished, &j.Delivery, &next); err != nil {
		return j, err
	}
	j.Attempt, j.Retries = int(attempt), int(retries)
	j.Request, j.Status = json.RawMessage(req), jobs.Status(status)
	if result != nil {
		j.Result = json.RawMessage(*result)
	}
	if errJSON != nil {
		j.Error = &jobs.ErrorInfo{}
		if err := json.Unmarshal([]byte(*errJSON), j.Error); err != nil {
			return j, fmt.Errorf("job %s: error column: %w", j.ID, err)
		}
	}
	j.RunAfter, j.LeaseUntil, j.CreatedAt = fromNanos(runAfter), fromNanos(lease), fromNanos(created)
	j.StartedAt, j.FinishedAt, j.NextDeliveryAt = fromNanos(started), fromNanos(finished), fromNanos(next)
	return j, nil
}

// InsertJob stores a new job.
func (db *DB) InsertJob(ctx context.Context, j jobs.Job) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO jobs(id, key_id, endpoint, request, callback_url, status,
		run_after, created_at, delivery) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		j.ID, j.KeyID, j.Endpoint, string(j.Request), j.CallbackURL, string(j.Status), nanos(j.RunAfter), nanos(j.CreatedAt), j.Delivery)
	if err != nil {
		return fmt.Errorf("storage: insert job: %w", db.wrap(err))
	}
	return nil
}

// Job returns a job with its delivery attempts, or jobs.ErrNotFound.
func (db *DB) Job(ctx context.Context, id string) (jobs.Job, error) {
	j, err := scanJob(db.pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id).Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return jobs.Job{}, jobs.ErrNotFound
	}
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: read job: %w", db.wrap(err))
	}
	rows, err := db.pool.Query(ctx, `SELECT at, status, error FROM job_deliveries WHERE job_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: read deliveries: %w", db.wrap(err))
	}
	defer rows.Close()
	for rows.Next() {
		var a jobs.Attempt
		var at int64
		var status int32
		if err := rows.Scan(&at, &status, &a.Error); err != nil {
			return jobs.Job{}, err
		}
		a.At, a.Status = fromNanos(at), int(status)
		j.Deliveries = append(j.Deliveries, a)
	}
	return j, db.wrap(rows.Err())
}

// ClaimJob atomically takes the oldest queued job due at now. Replicas
// claiming at once skip each other's locked rows instead of waiting.
func (db *DB) ClaimJob(ctx context.Context, now time.Time, owner string, leaseUntil time.Time) (jobs.Job, bool, error) {
	row := db.pool.QueryRow(ctx, `UPDATE jobs SET status = 'running', attempt = attempt + 1,
		request_id = id || '-' || (attempt + 1)::text, owner = $1, lease_until = $2, started_at = $3
		WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= $4
			ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		  AND status = 'queued'
		RETURNING `+jobColumns, owner, nanos(leaseUntil), nanos(now), nanos(now))
	j, err := scanJob(row.Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return jobs.Job{}, false, nil
	}
	if err != nil {
		return jobs.Job{}, false, fmt.Errorf("storage: claim job: %w", db.wrap(err))
	}
	return j, true, nil
}

// FinishJob records how owner's run of job id ended.
func (db *DB) FinishJob(ctx context.Context, id, owner string, f jobs.Finish) (bool, error) {
	var result, errJSON *string
	if f.Result != nil {
		s := string(f.Result)
		result = &s
	}
	if f.Error != nil {
		b, err := json.Marshal(f.Error)
		if err != nil {
			return false, err
		}
		s := string(b)
		errJSON = &s
	}
	tag, err := db.pool.Exec(ctx, `UPDATE jobs SET status = $1, result = $2, error = $3, finished_at = $4,
		owner = '', delivery = $5, next_delivery_at = $6 WHERE id = $7 AND owner = $8 AND status = 'running'`,
		string(f.Status), result, errJSON, nanos(f.At), f.Delivery, nanos(f.At), id, owner)
	return db.affected(tag, err, "finish job")
}

func (db *DB) affected(tag pgconn.CommandTag, err error, what string) (bool, error) {
	if err != nil {
		return false, fmt.Errorf("storage: %s: %w", what, db.wrap(err))
	}
	return tag.RowsAffected() == 1, nil
}

// RequeueJob puts owner's running job back in the queue.
func (db *DB) RequeueJob(ctx context.Context, id, owner string, runAfter time.Time, retries int, recovered bool) (bool, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE jobs SET status = 'queued', owner = '', lease_until = 0,
		run_after = $1, retries = $2, recovered = $3 WHERE id = $4 AND owner = $5 AND status = 'running'`,
		nanos(runAfter), int32(retries), recovered, id, owner)
	return db.affected(tag, err, "requeue job")
}

// CancelJob cancels a queued job or marks a running one cancel-requested.
func (db *DB) CancelJob(ctx context.Context, id string, now time.Time) (jobs.Job, error) {
	_, err := db.pool.Exec(ctx, `UPDATE jobs SET
		cancel_requested = TRUE,
		status = CASE status WHEN 'queued' THEN 'cancelled' ELSE status END,
		finished_at = CASE status WHEN 'queued' THEN $1 ELSE finished_at END,
		error = CASE status WHEN 'queued' THEN $2 ELSE error END,
		delivery = CASE WHEN status = 'queued' AND callback_url <> '' THEN 'pending' ELSE delivery END,
		next_delivery_at = CASE status WHEN 'queued' THEN $1 ELSE next_delivery_at END
		WHERE id = $3 AND status IN ('queued', 'running')`,
		nanos(now), `{"code":"client_closed_request","message":"the job was cancelled before it ran"}`, id)
	if err != nil {
		return jobs.Job{}, fmt.Errorf("storage: cancel job: %w", db.wrap(err))
	}
	return db.Job(ctx, id)
}

// Expired lists running jobs whose lease ended before now.
func (db *DB) Expired(ctx context.Context, now time.Time) ([]jobs.Job, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE status = 'running' AND lease_until < $1`, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("storage: expired jobs: %w", db.wrap(err))
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
	return out, db.wrap(rows.Err())
}

// Billed reports whether a successful usage row has requestID.
func (db *DB) Billed(ctx context.Context, requestID string) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM usage WHERE request_id = $1 AND status = 200)`, requestID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("storage: billed: %w", db.wrap(err))
	}
	return ok, nil
}

// ClaimDelivery takes the oldest pending delivery due at now.
func (db *DB) ClaimDelivery(ctx context.Context, now, leaseUntil time.Time) (jobs.Job, bool, error) {
	var id string
	err := db.pool.QueryRow(ctx, `UPDATE jobs SET next_delivery_at = $1
		WHERE id = (SELECT id FROM jobs WHERE delivery = 'pending' AND next_delivery_at <= $2
			ORDER BY next_delivery_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		  AND delivery = 'pending' RETURNING id`, nanos(leaseUntil), nanos(now)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return jobs.Job{}, false, nil
	}
	if err != nil {
		return jobs.Job{}, false, fmt.Errorf("storage: claim delivery: %w", db.wrap(err))
	}
	j, err := db.Job(ctx, id)
	return j, err == nil, err
}

// RecordDelivery appends an attempt and sets the delivery state.
func (db *DB) RecordDelivery(ctx context.Context, id string, a jobs.Attempt, state string, next time.Time) error {
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		// The job's row lock orders concurrent attempts' numbers.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO job_deliveries(job_id, attempt, at, status, error)
			VALUES ($1, (SELECT COUNT(*) + 1 FROM job_deliveries WHERE job_id = $1), $2, $3, $4)`,
			id, nanos(a.At), int32(a.Status), a.Error); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE jobs SET delivery = $1, next_delivery_at = $2 WHERE id = $3`, state, nanos(next), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: record delivery: %w", err)
	}
	return nil
}

// PurgeJobs deletes final jobs finished before before whose callback is
// not pending.
func (db *DB) PurgeJobs(ctx context.Context, before time.Time) (int, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM jobs WHERE status IN ('succeeded','failed','cancelled')
		AND finished_at < $1 AND delivery <> 'pending'`, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("storage: purge jobs: %w", db.wrap(err))
	}
	return int(tag.RowsAffected()), nil
}

// WebhookSecret returns keyID's signing secret, "" if it has none.
func (db *DB) WebhookSecret(ctx context.Context, keyID string) (string, error) {
	var s string
	err := db.pool.QueryRow(ctx, `SELECT secret FROM webhook_secrets WHERE key_id = $1`, keyID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("storage: read webhook secret: %w", db.wrap(err))
	}
	return s, nil
}

// SetWebhookSecret sets (or replaces) keyID's signing secret.
func (db *DB) SetWebhookSecret(ctx context.Context, keyID, secret string, at time.Time) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO webhook_secrets(key_id, secret, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (key_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at`, keyID, secret, nanos(at))
	if err != nil {
		return fmt.Errorf("storage: set webhook secret: %w", db.wrap(err))
	}
	return nil
}
