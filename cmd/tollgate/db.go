package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"

	"tollgate/storage"
	"tollgate/storage/postgres"
	"tollgate/storage/sqlite"
)

// isPostgres reports whether --db names a PostgreSQL database (a
// postgres:// or postgresql:// URL); anything else is a SQLite file, with
// or without a sqlite: prefix.
func isPostgres(dsn string) bool { return postgres.IsURL(dsn) }

// sqlitePath is the file a non-PostgreSQL --db names.
func sqlitePath(dsn string) string { return strings.TrimPrefix(dsn, "sqlite:") }

// openStore opens the store --db names for the server: PostgreSQL for a
// postgres:// URL, else the SQLite file (created if missing).
func openStore(ctx context.Context, dsn string) (storage.Store, error) {
	if isPostgres(dsn) {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, sqlitePath(dsn))
}

// dbName names --db in messages and logs: the absolute SQLite path, or
// "PostgreSQL at host:port/database" without user or password.
func dbName(dsn string) string {
	if !isPostgres(dsn) {
		return absPath(sqlitePath(dsn))
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "PostgreSQL (URL not shown)"
	}
	host := u.Host
	if host == "" {
		host = "localhost"
	}
	return "PostgreSQL at " + host + u.Path
}

// openDB opens the database a CLI command works on and names it on
// stderr, one line, so stdout stays the command's output. Only keys create
// passes create: it makes the first key on a new machine. Every other
// command needs a SQLite file to exist, so one run in the wrong folder
// reports the mistake instead of working on a new, empty database. A
// PostgreSQL database is migrated like the server does.
func openDB(ctx context.Context, dsn string, create bool, stderr io.Writer) (storage.Store, error) {
	shown := dbName(dsn)
	if isPostgres(dsn) {
		db, err := postgres.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "tollgate: using database %s\n", shown)
		return db, nil
	}
	path := sqlitePath(dsn)
	db, err := sqlite.OpenExisting(ctx, path)
	switch {
	case err == nil:
		fmt.Fprintf(stderr, "tollgate: using database %s\n", shown)
	case errors.Is(err, sqlite.ErrNoDatabase) && create:
		if db, err = sqlite.Open(ctx, path); err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "tollgate: created new database %s\n", shown)
	case errors.Is(err, sqlite.ErrNoDatabase):
		return nil, fmt.Errorf("database %s does not exist: give the server's file with --db or TOLLGATE_DB (only keys create and accounts create make a new one)", shown)
	default:
		return nil, err
	}
	return db, nil
}

// absPath is path made absolute, for messages; path itself if that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
