// Package sqlite keeps Tollgate's state in one SQLite file: keys, their
// secrets, usage records and the audit trail. It satisfies the small store
// interfaces that package auth and package metering declare.
//
// Open applies every embedded migration that has not yet run, so a new file
// and an old file both come out at the current schema.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"tollgate/storage"
)

// DB is a storage.Store.
var _ storage.Store = (*DB)(nil)

// DB is an open Tollgate database. It is safe for concurrent use.
type DB struct {
	sql  *sql.DB
	path string
	// insertUsage is InsertEvents' INSERT, prepared once: database/sql keeps
	// it prepared on each connection it has run on, so a batch's transaction
	// reuses it (Tx.StmtContext) instead of parsing the SQL again.
	insertUsage *sql.Stmt

	stopCkpt chan struct{} // closed by Close to stop the checkpointer
	ckptDone chan struct{} // closed when the checkpointer has stopped
}

// ErrNotFound is returned when a requested row does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrNoDatabase is OpenExisting's error when the file does not exist. It
// matches fs.ErrNotExist too.
var ErrNoDatabase = fmt.Errorf("database file does not exist: %w", fs.ErrNotExist)

// Open opens (creating if needed) the SQLite database at path and migrates it
// to the current schema. Pragmas are set in the DSN so that every pooled
// connection gets them: WAL journal, a busy timeout, foreign keys, and
// IMMEDIATE write transactions (so read-then-write never fails with
// "database is locked" regardless of the busy timeout).
func Open(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, false)
}

// OpenExisting is Open for a file that must already exist: it never creates
// one (SQLite itself is told not to, so there is no window between a check
// and the open), and a missing file is ErrNoDatabase.
func OpenExisting(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, true)
}

func open(ctx context.Context, path string, mustExist bool) (*DB, error) {
	if path == "" {
		return nil, errors.New("storage: empty database path")
	}
	if strings.Contains(path, "?") {
		return nil, fmt.Errorf("storage: database path %q must not contain '?'", path)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	q.Set("_synchronous", "NORMAL")
	if mustExist {
		q.Set("mode", "rw") // read-write without SQLITE_OPEN_CREATE
	}
	dsn := "file:" + path + "?" + q.Encode()
	registerDriver()
	sqldb, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	db := &DB{sql: sqldb, path: path}
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		// The open failed without creating anything; the stat only picks
		// the message.
		if _, statErr := os.Stat(path); mustExist && errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("storage: %s: %w", path, ErrNoDatabase)
		}
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	if err := db.migrate(ctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("storage: migrate %s: %w", path, err)
	}
	if db.insertUsage, err = sqldb.PrepareContext(ctx, insertUsage); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("storage: open %s: prepare: %w", path, err)
	}
	db.startCheckpoints()
	return db, nil
}

// Path returns the file the database was opened from.
func (db *DB) Path() string { return db.path }

// Ping reports whether the database answers a trivial query.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.sql.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	return nil
}

// Close closes the database. Pending writes by callers must be finished first.
func (db *DB) Close() error {
	db.stopCheckpoints()
	_ = db.insertUsage.Close()
	return db.sql.Close()
}

// withTx runs fn in one IMMEDIATE transaction, committing when fn returns nil.
func (db *DB) withTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// SQL returns the underlying database handle, for tollgate migrate's copy.
func (db *DB) SQL() *sql.DB { return db.sql }
