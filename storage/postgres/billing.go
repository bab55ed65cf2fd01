package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"tollgate"
	"tollgate/billing"
)

// DB satisfies billing.Store.
var _ billing.Store = (*DB)(nil)

const billingColumns = `cursor_before, cursor_seq, pending_before, pending_seq, pending_interval,
	owner, lease_until, last_export_at, last_error, last_error_at, events_sent, batches, epoch`

// billingState reads exporter name's state (locking its row when forUpdate);
// the zero State if it has none.
func billingState(ctx context.Context, q pgx.Tx, name string, forUpdate bool) (billing.State, error) {
	var (
		s                            billing.State
		before, lease, export, errAt int64
		pBefore, pSeq, pInterval     *int64
	)
	query := `SELECT ` + billingColumns + ` FROM billing_exports WHERE name = $1`
	if forUpdate {
		query += ` FOR UPDATE`
	}
	err := q.QueryRow(ctx, query, name).Scan(
		&before, &s.Cursor.Seq, &pBefore, &pSeq, &pInterval, &s.Owner, &lease, &export,
		&s.LastError, &errAt, &s.EventsSent, &s.Batches, &s.Epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.State{}, nil
	}
	if err != nil {
		return billing.State{}, err
	}
	s.Cursor.Before, s.LeaseUntil, s.LastExport, s.LastErrorAt = fromNanos(before), fromNanos(lease), fromNanos(export), fromNanos(errAt)
	if pBefore != nil && pSeq != nil && pInterval != nil {
		s.Pending = &billing.Plan{From: s.Cursor,
			To: billing.Cursor{Before: fromNanos(*pBefore), Seq: *pSeq}, Interval: time.Duration(*pInterval)}
	}
	return s, nil
}

// BillingState returns exporter name's state, the zero State if it never ran.
func (db *DB) BillingState(ctx context.Context, name string) (billing.State, error) {
	var s billing.State
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		s, err = billingState(ctx, tx, name, false)
		return err
	})
	if err != nil {
		return billing.State{}, fmt.Errorf("storage: billing state %s: %w", name, err)
	}
	return s, nil
}

// UpdateBilling applies fn to exporter name's state in one transaction,
// holding its row locked, and stores the result (with no pending batch,
// forgetting its accepted events); an error from fn is returned as is and
// nothing is written.
func (db *DB) UpdateBilling(ctx context.Context, name string, fn func(*billing.State) error) (billing.State, error) {
	var out billing.State
	var fnErr error
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO billing_exports(name, cursor_before, cursor_seq) VALUES ($1, 0, 0)
			ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return err
		}
		s, err := billingState(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if fnErr = fn(&s); fnErr != nil {
			return fnErr
		}
		var pBefore, pSeq, pInterval *int64
		if p := s.Pending; p != nil {
			b, q, i := nanos(p.To.Before), p.To.Seq, int64(p.Interval)
			pBefore, pSeq, pInterval = &b, &q, &i
		}
		if _, err := tx.Exec(ctx, `UPDATE billing_exports SET cursor_before = $2, cursor_seq = $3,
				pending_before = $4, pending_seq = $5, pending_interval = $6, owner = $7, lease_until = $8,
				last_export_at = $9, last_error = $10, last_error_at = $11, events_sent = $12, batches = $13, epoch = $14
			WHERE name = $1`,
			name, nanos(s.Cursor.Before), s.Cursor.Seq, pBefore, pSeq, pInterval, s.Owner, nanos(s.LeaseUntil),
			nanos(s.LastExport), s.LastError, nanos(s.LastErrorAt), s.EventsSent, s.Batches, s.Epoch); err != nil {
			return err
		}
		if s.Pending == nil {
			if _, err := tx.Exec(ctx, `DELETE FROM billing_sent WHERE name = $1`, name); err != nil {
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

// UsageHorizon returns the oldest transaction id still running: every usage
// row inserted by an older transaction is committed (or rolled back) and
// visible, and no transaction can take an older id, whatever the replicas
// do. A long transaction anywhere on the server holds it back.
func (db *DB) UsageHorizon(ctx context.Context) (int64, error) {
	var h int64
	if err := db.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&h); err != nil {
		return 0, fmt.Errorf("storage: usage horizon: %w", db.wrap(err))
	}
	return h, nil
}

// MarkAccepted stores that identifier of exporter name's pending batch was
// accepted.
func (db *DB) MarkAccepted(ctx context.Context, name, identifier string) error {
	if _, err := db.pool.Exec(ctx, `INSERT INTO billing_sent(name, identifier) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, name, identifier); err != nil {
		return fmt.Errorf("storage: mark billing event accepted: %w", db.wrap(err))
	}
	return nil
}

// AcceptedEvents returns the identifiers MarkAccepted stored for name.
func (db *DB) AcceptedEvents(ctx context.Context, name string) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT identifier FROM billing_sent WHERE name = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("storage: accepted billing events: %w", db.wrap(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("storage: accepted billing events: %w", db.wrap(err))
	}
	return out, nil
}

// OldestUnexported returns the time of the oldest committed usage row
// whose txid is at least seq, or the zero time.
func (db *DB) OldestUnexported(ctx context.Context, seq int64) (time.Time, error) {
	var at *int64
	if err := db.pool.QueryRow(ctx, `SELECT MIN(created_at) FROM usage WHERE txid >= $1::text::xid8`,
		fmt.Sprint(seq)).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("storage: oldest unexported usage: %w", db.wrap(err))
	}
	if at == nil {
		return time.Time{}, nil
	}
	return time.Unix(0, *at).UTC(), nil
}

// BillingGroups sums p's usage rows that carry an account per account and
// interval: the rows of p's new time range, and the rows committed since
// p.From that belong to earlier times (disjoint; each an index range).
func (db *DB) BillingGroups(ctx context.Context, p billing.Plan) ([]billing.Group, error) {
	if p.Interval <= 0 {
		return nil, fmt.Errorf("storage: billing groups: interval %v", p.Interval)
	}
	rows, err := db.pool.Query(ctx, `WITH r AS (
			SELECT account_id, created_at, status, prompt_tokens + completion_tokens AS tokens, cost_micros FROM usage
			WHERE account_id != '' AND txid < $1::text::xid8 AND created_at >= $2 AND created_at < $3
			UNION ALL
			SELECT account_id, created_at, status, prompt_tokens + completion_tokens, cost_micros FROM usage
			WHERE account_id != '' AND txid >= $4::text::xid8 AND txid < $1::text::xid8 AND created_at < $2)
		SELECT r.account_id, (r.created_at / $5) * $5 AS start, COUNT(*),
			COALESCE(SUM(CASE WHEN r.status < 500 THEN 1 ELSE 0 END), 0)::bigint,
			COALESCE(SUM(r.tokens), 0)::bigint, COALESCE(SUM(r.cost_micros), 0)::bigint,
			COALESCE(a.stripe_customer_id, '')
		FROM r LEFT JOIN accounts a ON a.id = r.account_id
		GROUP BY r.account_id, start, a.stripe_customer_id ORDER BY r.account_id, start`,
		fmt.Sprint(p.To.Seq), nanos(p.From.Before), nanos(p.To.Before), fmt.Sprint(p.From.Seq), int64(p.Interval))
	if err != nil {
		return nil, fmt.Errorf("storage: billing groups: %w", db.wrap(err))
	}
	defer rows.Close()
	var out []billing.Group
	for rows.Next() {
		var g billing.Group
		var start, cost int64
		if err := rows.Scan(&g.AccountID, &start, &g.Rows, &g.Requests, &g.Tokens, &cost, &g.CustomerID); err != nil {
			return nil, fmt.Errorf("storage: billing groups: %w", err)
		}
		g.Start, g.Cost = time.Unix(0, start).UTC(), tollgate.Money(cost)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: billing groups: %w", db.wrap(err))
	}
	return out, nil
}
