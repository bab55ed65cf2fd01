package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"tollgate/billing"
)

// DB satisfies billing.Store.
var _ billing.Store = (*DB)(nil)

const billingColumns = `cursor_before, cursor_seq, pending_before, pending_seq, pending_interval,
	owner, lease_until, last_export_at, last_error, last_error_at, events_sent, batches, epoch`

// billingState reads exporter name's state; the zero State if it has none.
func billingState(ctx context.Context, q queryRower, name string) (billing.State, error) {
	var (
		s                            billing.State
		before, lease, export, errAt int64
		pBefore, pSeq, pInterval     sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `SELECT `+billingColumns+` FROM billing_exports WHERE name = ?`, name).Scan(
		&before, &s.Cursor.Seq, &pBefore, &pSeq, &pInterval, &s.Owner, &lease, &export,
		&s.LastError, &errAt, &s.EventsSent, &s.Batches, &s.Epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return billing.State{}, nil
	}
	if err != nil {
		return billing.State{}, err
	}
	s.Cursor.Before, s.LeaseUntil, s.LastExport, s.LastErrorAt = fromNanos(before), fromNanos(lease), fromNanos(export), fromNanos(errAt)
	if pBefore.Valid {
		s.Pending = &billing.Plan{From: s.Cursor,
			To: billing.Cursor{Before: fromNanos(pBefore.Int64), Seq: pSeq.Int64}, Interval: time.Duration(pInterval.Int64)}
	}
	return s, nil
}

// BillingState returns exporter name's state, the zero State if it never ran.
func (db *DB) BillingState(ctx context.Context, name string) (billing.State, error) {
	s, err := billingState(ctx, db.sql, name)
	if err != nil {
		return billing.State{}, fmt.Errorf("storage: billing state %s: %w", name, err)
	}
	return s, nil
}

// UpdateBilling applies fn to exporter name's state in one IMMEDIATE
// transaction and stores the result (with no pending batch, forgetting its
// accepted events); an error from fn is returned as is and nothing is
// written.
func (db *DB) UpdateBilling(ctx context.Context, name string, fn func(*billing.State) error) (billing.State, error) {
	var out billing.State
	var fnErr error
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		s, err := billingState(ctx, tx, name)
		if err != nil {
			return err
		}
		if fnErr = fn(&s); fnErr != nil {
			return fnErr
		}
		var pBefore, pSeq, pInterval any
		if p := s.Pending; p != nil {
			pBefore, pSeq, pInterval = nanos(p.To.Before), p.To.Seq, int64(p.Interval)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO billing_exports(name, `+billingColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET cursor_before = excluded.cursor_before, cursor_seq = excluded.cursor_seq,
				pending_before = excluded.pending_before, pending_seq = excluded.pending_seq,
				pending_interval = excluded.pending_interval, owner = excluded.owner,
				lease_until = excluded.lease_until, last_export_at = excluded.last_export_at,
				last_error = excluded.last_error, last_error_at = excluded.last_error_at,
				events_sent = excluded.events_sent, batches = excluded.batches, epoch = excluded.epoch`,
			name, nanos(s.Cursor.Before), s.Cursor.Seq, pBefore, pSeq, pInterval, s.Owner, nanos(s.LeaseUntil),
			nanos(s.LastExport), s.LastError, nanos(s.LastErrorAt), s.EventsSent, s.Batches, s.Epoch); err != nil {
			return err
		}
		if s.Pending == nil {
			if _, err := tx.ExecContext(ctx, `DELETE FROM billing_sent WHERE name = ?`, name); err != nil {
				return err
			}
		}
		out = s
		return nil
	})
	if fnErr != nil {
		return billing.State{}, fnErr
	}
	if err != nil {
		return billing.State{}, fmt.Errorf("storage: update billing state %s: %w", name, err)
	}
	return out, nil
}

// UsageHorizon returns one past the largest seq ever handed out (seq is
// AUTOINCREMENT: never reused, even after the newest rows were deleted).
// SQLite has one writer: a row not yet committed gets a seq above every
// committed one, so no row below the horizon can appear.
func (db *DB) UsageHorizon(ctx context.Context) (int64, error) {
	var h int64
	if err := db.sql.QueryRowContext(ctx, `SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'usage'), 0),
		COALESCE((SELECT MAX(seq) FROM usage), 0)) + 1`).Scan(&h); err != nil {
		return 0, fmt.Errorf("storage: usage horizon: %w", err)
	}
	return h, nil
}

// MarkAccepted stores that identifier of exporter name's pending batch was
// accepted.
func (db *DB) MarkAccepted(ctx context.Context, name, identifier string) error {
	if _, err := db.sql.ExecContext(ctx, `INSERT INTO billing_sent(name, identifier) VALUES (?, ?)
		ON CONFLICT DO NOTHING`, name, identifier); err != nil {
		return fmt.Errorf("storage: mark billing event accepted: %w", err)
	}
	return nil
}

// AcceptedEvents returns the identifiers MarkAccepted stored for name.
func (db *DB) AcceptedEvents(ctx context.Context, name string) ([]string, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT identifier FROM billing_sent WHERE name = ?`, name)
	if err != nil {
		return nil, fmt.Errorf("storage: accepted billing events: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: accepted billing events: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// OldestUnexported returns the time of the oldest usage row with a seq of
// at least seq, or the zero time.
func (db *DB) OldestUnexported(ctx context.Context, seq int64) (time.Time, error) {
	var at sql.NullInt64
	if err := db.sql.QueryRowContext(ctx, `SELECT MIN(created_at) FROM usage WHERE seq >= ?`, seq).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("storage: oldest unexported usage: %w", err)
	}
	if !at.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, at.Int64).UTC(), nil
}

// BillingGroups sums p's usage rows that carry an account per account and
// interval: the rows of p's new time range, and the rows committed since
// p.From that belong to earlier times (the two sets are disjoint, and each
// is an index range).
func (db *DB) BillingGroups(ctx context.Context, p billing.Plan) ([]billing.Group, error) {
	if p.Interval <= 0 {
		return nil, fmt.Errorf("storage: billing groups: interval %v", p.Interval)
	}
	iv := int64(p.Interval)
	rows, err := db.sql.QueryContext(ctx, `WITH r AS (
			SELECT account_id, created_at, status, prompt_tokens + completion_tokens AS tokens, cost_micros FROM usage
			WHERE account_id != '' AND seq < ? AND created_at >= ? AND created_at < ?
			UNION ALL
			SELECT account_id, created_at, status, prompt_tokens + completion_tokens, cost_micros FROM usage
			WHERE account_id != '' AND seq >= ? AND seq < ? AND created_at < ?)
		SELECT r.account_id, (r.created_at / ?) * ? AS start, COUNT(*), SUM(r.status < 500), SUM(r.tokens),
			SUM(r.cost_micros), COALESCE(a.stripe_customer_id, '')
		FROM r LEFT JOIN accounts a ON a.id = r.account_id
		GROUP BY r.account_id, start ORDER BY r.account_id, start`,
		p.To.Seq, nanos(p.From.Before), nanos(p.To.Before),
		p.From.Seq, p.To.Seq, nanos(p.From.Before), iv, iv)
	if err != nil {
		return nil, fmt.Errorf("storage: billing groups: %w", err)
	}
	defer rows.Close()
	var out []billing.Group
	for rows.Next() {
		var g billing.Group
		var start int64
		if err := rows.Scan(&g.AccountID, &start, &g.Rows, &g.Requests, &g.Tokens, &g.Cost, &g.CustomerID); err != nil {
			return nil, fmt.Errorf("storage: billing groups: %w", err)
		}
		g.Start = time.Unix(0, start).UTC()
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: billing groups: %w", err)
	}
	return out, nil
}
