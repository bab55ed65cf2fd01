// Package transfer copies a Tollgate deployment from its SQLite file into a
// PostgreSQL database (tollgate migrate): keys, secrets, audit, usage,
// Idempotency-Key records, jobs and webhook secrets, in one transaction on
// the target, verified table by table before it commits.
package transfer

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"tollgate/storage/postgres"
	"tollgate/storage/sqlite"
)

// table is one table to copy: its columns in both schemas, and which of
// them are booleans in PostgreSQL (integers in SQLite).
type table struct {
	name  string
	cols  []string
	bools map[string]bool
}

// tables in copy order: parents before the rows that reference them.
var tables = []table{
	{name: "accounts", cols: []string{"id", "name", "stripe_customer_id", "plan", "monthly_tokens", "monthly_requests", "monthly_budget", "created_at"}},
	{name: "keys", cols: []string{"id", "name", "prefix", "scopes", "models", "plan", "requests_per_second", "burst",
		"tokens_per_minute", "max_concurrent", "monthly_tokens", "monthly_requests", "expires_at", "revoked_at",
		"last_used_at", "created_at", "account_id", "monthly_budget"}},
	{name: "key_secrets", cols: []string{"hash", "key_id", "prefix", "created_at", "expires_at"}},
	{name: "audit", cols: []string{"id", "at", "actor", "action", "key_id", "detail"}},
	{name: "usage", cols: []string{"request_id", "key_id", "endpoint", "model", "prompt_tokens", "completion_tokens",
		"status", "latency_us", "cost_micros", "created_at", "surface", "account_id"}},
	{name: "idempotency", cols: []string{"key_id", "idem_key", "fingerprint", "owner", "state", "status", "headers", "body", "created_at"}},
	{name: "jobs", cols: []string{"id", "key_id", "endpoint", "request", "callback_url", "status", "request_id", "attempt",
		"retries", "recovered", "run_after", "owner", "lease_until", "result", "error", "cancel_requested", "created_at",
		"started_at", "finished_at", "delivery", "next_delivery_at"},
		bools: map[string]bool{"recovered": true, "cancel_requested": true}},
	{name: "job_deliveries", cols: []string{"job_id", "attempt", "at", "status", "error"}},
	{name: "webhook_secrets", cols: []string{"key_id", "secret", "created_at"}},
	{name: "sessions", cols: []string{"id", "key_id", "secret_hash", "created_at", "expires_at"}},
	{name: "billing_exports", cols: []string{"name", "cursor_before", "cursor_seq", "pending_before", "pending_seq",
		"pending_interval", "owner", "lease_until", "last_export_at", "last_error", "last_error_at", "events_sent", "batches"}},
}

// Count is one table's rows in the source and, after the copy, the target.
type Count struct {
	Table          string
	Source, Target int64
}

// ErrTargetNotEmpty is Copy's error when the target already holds rows and
// replace is false.
var ErrTargetNotEmpty = errors.New("the target database is not empty")

// Copy copies every table of src into dst in one transaction on dst, then
// counts each table on both sides and commits only if they agree. src is
// read inside one transaction too, so the copy is a consistent snapshot
// (stop the servers first: the read holds SQLite's write lock meanwhile).
// A target that already has rows is refused (ErrTargetNotEmpty, wrapped,
// naming the tables) unless replace, which empties it first, in the same
// transaction.
func Copy(ctx context.Context, src *sqlite.DB, dst *postgres.DB, replace bool) ([]Count, error) {
	stx, err := src.SQL().BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src.Path(), err)
	}
	defer func() { _ = stx.Rollback() }()
	tx, err := dst.Pool().Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w", dst.Addr(), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if err := checkBillingPending(ctx, stx); err != nil {
		return nil, err
	}
	var busy []string
	for _, t := range tables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+t.name).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s in the target: %w", t.name, err)
		}
		if n > 0 {
			busy = append(busy, fmt.Sprintf("%s (%d rows)", t.name, n))
		}
	}
	if len(busy) > 0 {
		if !replace {
			return nil, fmt.Errorf("%w: %s", ErrTargetNotEmpty, strings.Join(busy, ", "))
		}
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.name
		}
		if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")+` RESTART IDENTITY`); err != nil {
			return nil, fmt.Errorf("empty the target: %w", err)
		}
	}

	counts := make([]Count, 0, len(tables))
	for _, t := range tables {
		n, err := copyTable(ctx, stx, tx, t)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", t.name, err)
		}
		c := Count{Table: t.name, Target: n}
		if err := stx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.name).Scan(&c.Source); err != nil {
			return nil, fmt.Errorf("count %s in the source: %w", t.name, err)
		}
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+t.name).Scan(&c.Target); err != nil {
			return nil, fmt.Errorf("count %s in the target: %w", t.name, err)
		}
		if c.Source != c.Target {
			return nil, fmt.Errorf("%s: %d rows in the source but %d in the target after the copy; nothing was committed", t.name, c.Source, c.Target)
		}
		counts = append(counts, c)
	}
	if err := carryBillingCursor(ctx, stx, tx); err != nil {
		return nil, err
	}
	// New audit rows continue after the copied ids.
	if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('audit', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM audit`); err != nil {
		return nil, fmt.Errorf("audit ids: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return counts, nil
}

// copyTable streams t's rows from src into dst with COPY.
func copyTable(ctx context.Context, src *sql.Tx, dst pgx.Tx, t table) (int64, error) {
	rows, err := src.QueryContext(ctx, `SELECT `+strings.Join(t.cols, ", ")+` FROM `+t.name)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	n, err := dst.CopyFrom(ctx, pgx.Identifier{t.name}, t.cols, pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out := make([]any, len(vals))
		for i, v := range vals {
			if t.bools[t.cols[i]] {
				if n, ok := v.(int64); ok {
					v = n != 0
				}
			}
			out[i] = v
		}
		return out, nil
	}))
	if err != nil {
		return 0, err
	}
	return n, rows.Err()
}

// ErrBillingPending is Copy's error when the source's Stripe export has a
// batch pending: its events may be partly in Stripe, identified by SQLite's
// sequence numbers, which mean nothing in PostgreSQL.
var ErrBillingPending = errors.New("the Stripe usage export has a batch pending; run the SQLite server until GET /admin/billing shows no pending batch, then migrate")

// checkBillingPending refuses a source whose export has a batch pending.
func checkBillingPending(ctx context.Context, src *sql.Tx) error {
	var n int64
	if err := src.QueryRowContext(ctx, `SELECT COUNT(*) FROM billing_exports WHERE pending_before IS NOT NULL`).Scan(&n); err != nil {
		return fmt.Errorf("read billing_exports: %w", err)
	}
	if n > 0 {
		return ErrBillingPending
	}
	return nil
}

// carryBillingCursor moves the Stripe export's cursor over. In SQLite a row
// is exported when its seq is below cursor_seq and its time before
// cursor_before; every row copied here carries this transaction's id, T.
// The rows SQLite's cursor counted as exported get txid 3 (committed long
// ago), the others keep T, and the cursor's seq becomes T: the same rows
// stay exported, the rest (late rows included) are sent from PostgreSQL.
// A new epoch keeps PostgreSQL's identifiers apart from SQLite's.
func carryBillingCursor(ctx context.Context, src *sql.Tx, dst pgx.Tx) error {
	rows, err := src.QueryContext(ctx, `SELECT name, cursor_before, cursor_seq FROM billing_exports`)
	if err != nil {
		return fmt.Errorf("read billing_exports: %w", err)
	}
	type cursor struct {
		name        string
		before, seq int64
	}
	var cursors []cursor
	for rows.Next() {
		var c cursor
		if err := rows.Scan(&c.name, &c.before, &c.seq); err != nil {
			rows.Close()
			return fmt.Errorf("read billing_exports: %w", err)
		}
		cursors = append(cursors, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read billing_exports: %w", err)
	}
	if len(cursors) > 1 {
		return fmt.Errorf("billing_exports: %d exporters; tollgate migrate carries one", len(cursors))
	}
	for _, c := range cursors {
		late, err := lateRows(ctx, src, c.before, c.seq)
		if err != nil {
			return err
		}
		if _, err := dst.Exec(ctx, `UPDATE usage SET txid = '3' WHERE created_at < $1 AND NOT (request_id = ANY($2))`,
			c.before, late); err != nil {
			return fmt.Errorf("usage: mark exported rows: %w", err)
		}
		var epoch [8]byte
		_, _ = rand.Read(epoch[:])
		if _, err := dst.Exec(ctx, `UPDATE billing_exports SET cursor_seq = pg_current_xact_id()::text::bigint,
			owner = '', lease_until = 0, epoch = $2 WHERE name = $1`, c.name, hex.EncodeToString(epoch[:])); err != nil {
			return fmt.Errorf("billing_exports: %w", err)
		}
	}
	return nil
}

// lateRows returns the request ids of rows before the cursor's time that
// its seq does not cover: committed after the last batch, not sent yet.
func lateRows(ctx context.Context, src *sql.Tx, before, seq int64) ([]string, error) {
	rows, err := src.QueryContext(ctx, `SELECT request_id FROM usage WHERE seq >= ? AND created_at < ?`, seq, before)
	if err != nil {
		return nil, fmt.Errorf("read late usage rows: %w", err)
	}
	defer rows.Close()
	late := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read late usage rows: %w", err)
		}
		late = append(late, id)
	}
	return late, rows.Err()
}
