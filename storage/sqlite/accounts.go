package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"tollgate/auth"
)

var _ auth.AccountStore = (*DB)(nil)

const accountColumns = `id, name, stripe_customer_id, plan, monthly_tokens, monthly_requests, created_at, monthly_budget`

// nullIfEmpty stores "" as NULL (a key without an account).
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func scanAccount(scan func(...any) error) (auth.Account, error) {
	var a auth.Account
	var created int64
	if err := scan(&a.ID, &a.Name, &a.StripeCustomerID, &a.Plan, &a.Limits.MonthlyTokens, &a.Limits.MonthlyRequests, &created, &a.Limits.MonthlyBudget); err != nil {
		return auth.Account{}, err
	}
	a.CreatedAt = timeFromNanos(sql.NullInt64{Int64: created, Valid: true})
	return a, nil
}

// CreateAccount stores a new account and its audit entry in one transaction.
func (db *DB) CreateAccount(ctx context.Context, a auth.Account, e auth.AuditEntry) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts(`+accountColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Name, a.StripeCustomerID, a.Plan, a.Limits.MonthlyTokens, a.Limits.MonthlyRequests, a.CreatedAt.UnixNano(), a.Limits.MonthlyBudget); err != nil {
			return err
		}
		return insertAudit(ctx, tx, e)
	})
	if err != nil {
		return fmt.Errorf("storage: create account %s: %w", a.ID, err)
	}
	return nil
}

// ListAccounts returns every account, oldest first.
func (db *DB) ListAccounts(ctx context.Context) ([]auth.Account, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+accountColumns+` FROM accounts ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("storage: list accounts: %w", err)
	}
	defer rows.Close()
	var out []auth.Account
	for rows.Next() {
		a, err := scanAccount(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("storage: list accounts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list accounts: %w", err)
	}
	return out, nil
}

// AccountByID returns account id, or auth.ErrAccountNotFound.
func (db *DB) AccountByID(ctx context.Context, id string) (auth.Account, error) {
	a, err := accountByID(ctx, db.sql, id)
	if err != nil && !errors.Is(err, auth.ErrAccountNotFound) {
		return auth.Account{}, fmt.Errorf("storage: read account: %w", err)
	}
	return a, err
}

func accountByID(ctx context.Context, q queryRower, id string) (auth.Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = ?`, id).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Account{}, auth.ErrAccountNotFound
	}
	return a, err
}

// UpdateAccount reads account id, lets apply change it and stores its name,
// Stripe customer id, plan and monthly limits, with e, in one transaction.
// An error from apply is returned as is and nothing is written.
func (db *DB) UpdateAccount(ctx context.Context, id string, apply func(*auth.Account) error, e auth.AuditEntry) (auth.Account, error) {
	var out auth.Account
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		a, err := accountByID(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := apply(&a); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET name = ?, stripe_customer_id = ?, plan = ?,
			monthly_tokens = ?, monthly_requests = ?, monthly_budget = ? WHERE id = ?`,
			a.Name, a.StripeCustomerID, a.Plan, a.Limits.MonthlyTokens, a.Limits.MonthlyRequests, a.Limits.MonthlyBudget, id); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, e); err != nil {
			return err
		}
		out = a
		return nil
	})
	if err != nil && !errors.Is(err, auth.ErrAccountNotFound) && !errors.Is(err, auth.ErrInvalid) {
		return auth.Account{}, fmt.Errorf("storage: update account %s: %w", id, err)
	}
	return out, err
}
