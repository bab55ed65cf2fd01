package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"tollgate/auth"
)

// insertAudit writes one audit row inside tx, so that a change and its
// record commit together.
func insertAudit(ctx context.Context, tx *sql.Tx, a auth.AuditEntry) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit(at, actor, action, key_id, detail) VALUES (?, ?, ?, ?, ?)`,
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
		q += ` WHERE key_id = ?`
		args = append(args, keyID)
	}
	rows, err := db.sql.QueryContext(ctx, q+` ORDER BY at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: read audit: %w", err)
	}
	defer rows.Close()
	var out []auth.AuditEntry
	for rows.Next() {
		var a auth.AuditEntry
		var at int64
		if err := rows.Scan(&at, &a.Actor, &a.Action, &a.KeyID, &a.Detail); err != nil {
			return nil, fmt.Errorf("storage: read audit: %w", err)
		}
		a.Time = timeFromNanos(sql.NullInt64{Int64: at, Valid: true})
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: read audit: %w", err)
	}
	return out, nil
}
