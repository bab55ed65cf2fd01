// Package storage names what Tollgate keeps durably: one Store interface,
// with a SQLite implementation (storage/sqlite, the embedded default) and a
// PostgreSQL one (storage/postgres, for several replicas), each with its own
// embedded, numbered migrations, and one conformance suite
// (storage/storetest) that runs against both.
package storage

import (
	"context"
	"fmt"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/billing"
	"tollgate/idempotency"
	"tollgate/jobs"
	"tollgate/metering"
)

// Store is everything the server and the CLI keep: keys and their secrets,
// the audit trail, usage records and reports, Idempotency-Key records,
// async jobs and dashboard sessions. Both *sqlite.DB and *postgres.DB satisfy it.
type Store interface {
	auth.CredentialStore
	auth.LastUsedStore
	auth.KeyStore
	metering.BatchStore
	idempotency.Store
	jobs.Store
	auth.SessionStore
	auth.AccountStore
	billing.Store

	// Audit returns the audit trail of one key, or of all if keyID is "".
	Audit(ctx context.Context, keyID string) ([]auth.AuditEntry, error)
	// Summary sums usage matching q into one row per group.
	Summary(ctx context.Context, q metering.Query) ([]metering.Row, error)
	// MonthTotals returns each key's totals for the UTC month of month.
	MonthTotals(ctx context.Context, month time.Time) (map[string]metering.Totals, error)
	// AccountMonthTotals returns the totals, in the UTC month of month, of
	// the keys an account owns now.
	AccountMonthTotals(ctx context.Context, accountID string, month time.Time) (metering.Totals, error)
	// ExportEvents calls fn with every usage event matching q, oldest first.
	ExportEvents(ctx context.Context, q metering.Query, fn func(metering.Event) error) error
	// RecentEvents returns up to limit usage events matching q, newest first.
	RecentEvents(ctx context.Context, q metering.Query, limit int) ([]metering.Event, error)
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// UnavailableError is a store's error when its database server cannot be
// reached. What a client is told (tollgate.ErrorMessage) names the server
// and where it is, never a password, with the code database_unavailable
// (503) and a Retry-After: it is a *tollgate.Error to errors.As. Error()
// adds the cause, for the log and the command line.
type UnavailableError struct {
	System string // "PostgreSQL"
	Addr   string // host:port
	Err    error
}

// unavailableRetry is the Retry-After of an UnavailableError.
const unavailableRetry = 2 * time.Second

// Message is what a client is told: "PostgreSQL at host:port is not
// reachable".
func (e *UnavailableError) Message() string {
	return fmt.Sprintf("%s at %s is not reachable", e.System, e.Addr)
}

// Error is Message and the cause.
func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return e.Message()
	}
	return e.Message() + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// As makes e a *tollgate.Error with code database_unavailable and Message,
// so every surface tells clients the same, without the cause.
func (e *UnavailableError) As(target any) bool {
	t, ok := target.(**tollgate.Error)
	if ok {
		*t = &tollgate.Error{Code: tollgate.CodeDatabaseUnavailable, Message: e.Message(), RetryAfter: unavailableRetry}
	}
	return ok
}
