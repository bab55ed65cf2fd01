// Package postgres keeps Tollgate's state in PostgreSQL, for several
// replicas sharing one database: keys, their secrets, usage records, the
// audit trail, Idempotency-Key records and async jobs, as package sqlite
// does for one node. It satisfies storage.Store and the small store
// interfaces the domain packages declare, and passes the same conformance
// suite (storage/storetest).
//
// Every change to a key sends a notification (pg_notify on KeyChannel) in
// the transaction that makes it, so every replica, and the CLI's changes
// too, reach the other replicas' caches at commit (see KeyFeed).
//
// Open applies every embedded migration the database has not seen, under an
// advisory lock, so replicas starting together migrate once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tollgate/storage"
)

// DB is an open PostgreSQL database. It is safe for concurrent use.
type DB struct {
	pool *pgxpool.Pool
	addr string // host:port, for messages; never the password
}

// IsURL reports whether dsn names a PostgreSQL database (a postgres:// or
// postgresql:// URL) rather than a SQLite file.
func IsURL(dsn string) bool {
	l := strings.ToLower(dsn)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// DefaultConnectTimeout bounds one connection attempt when the URL sets no
// connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// Open connects to the database at url (postgres://user:pass@host:port/db?...)
// and migrates it to the current schema. An unreachable server is a
// *storage.UnavailableError that names it without the password.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL; say only what is wrong.
		return nil, errors.New("postgres: the database URL is not valid (want postgres://user:password@host:port/database)")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	db := &DB{addr: Addr(cfg.ConnConfig.Host, cfg.ConnConfig.Port)}
	if db.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("postgres: open: %w", db.wrap(err))
	}
	if err := db.Ping(ctx); err != nil {
		db.pool.Close()
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.pool.Close()
		return nil, fmt.Errorf("postgres: migrate: %w", db.wrap(err))
	}
	return db, nil
}

// Addr renders a host and port for messages: host:port, or the socket
// folder for a Unix socket.
func Addr(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// Addr returns host:port of the server, for messages.
func (db *DB) Addr() string { return db.addr }

// Pool returns the connection pool (for the migrate command and the key
// feed).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping reports whether the database answers a trivial query.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("postgres: ping: %w", db.wrap(err))
	}
	return nil
}

// Close closes every connection.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// wrap turns an error that means "the server cannot be reached" into a
// *storage.UnavailableError naming it; other errors pass through.
func (db *DB) wrap(err error) error {
	if err == nil || !unreachable(err) {
		return err
	}
	var u *storage.UnavailableError
	if errors.As(err, &u) {
		return err
	}
	return &storage.UnavailableError{System: "PostgreSQL", Addr: db.addr, Err: err}
}

// unreachable reports whether err is a failure to reach or keep a
// connection to the server, as opposed to a query's own error or the
// caller's context ending.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		// The server answered. Class 08: connection exception;
		// 57P01-57P03: it is shutting down or starting. Anything else (a
		// wrong password, a missing database) is not "unreachable".
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	case errors.As(err, &ce), errors.As(err, &ne):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	s := err.Error()
	return strings.Contains(s, "conn closed") || strings.Contains(s, "connection refused") ||
		strings.Contains(s, "failed to connect") || strings.Contains(s, "unexpected EOF")
}

// withTx runs fn in one transaction, committing when fn returns nil.
func (db *DB) withTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return db.wrap(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return db.wrap(err)
	}
	return db.wrap(tx.Commit(ctx))
}

// migrations holds the schema history, one file per step, numbered as
// sqlite's, in PostgreSQL's dialect. A step is never edited once shipped.
//
//go:embed migrations/*.sql
var migrations embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", base)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share number %d", prev, base, v)
		}
		seen[v] = base
		body, err := migrations.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrateLock is the advisory lock id replicas take while migrating.
const migrateLock = 0x746f6c6c67617465 // "tollgate"

// migrate applies the embedded migrations the database has not seen, each
// in its own transaction holding the advisory lock, so that replicas
// starting at once apply each step once.
func (db *DB) migrate(ctx context.Context) error {
	steps, err := loadMigrations()
	if err != nil {
		return err
	}
	err = db.withTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`)
		return err
	})
	if err != nil {
		return err
	}
	for _, m := range steps {
		err := db.withTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			// No arguments: the simple protocol runs the file's statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations(version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// DB is a storage.Store.
var _ storage.Store = (*DB)(nil)
