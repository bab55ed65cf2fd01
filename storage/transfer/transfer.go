// Package transfer copies a Tollgate deployment from its SQLite file into a
// PostgreSQL database (tollgate migrate): keys, secrets, audit, usage,
// Idempotency-Key records, jobs and webhook secrets, in one transaction on
// the target, verified table by table before it commits.
package transfer

import (
	"context"
	"database/sql"
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
	// New audit rows continue after the copied ids.
	// The Stripe export's cursor counts SQLite's row sequence; in
	// PostgreSQL every copied row carries this transaction's id, so the
	// cursor moves just past it: copied rows it had exported stay exported
	// (by their time), later ones are new. A pending batch is re-planned.
	if _, err := tx.Exec(ctx, `UPDATE billing_exports SET cursor_seq = pg_current_xact_id()::text::bigint + 1,
		pending_before = NULL, pending_seq = NULL, pending_interval = NULL, owner = '', lease_until = 0`); err != nil {
		return nil, fmt.Errorf("billing_exports: %w", err)
	}
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
