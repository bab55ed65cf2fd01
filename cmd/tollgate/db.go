package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"tollgate/storage/sqlite"
)

// openDB opens the database file a CLI command works on and names it on
// stderr, one line, so stdout stays the command's output. Only keys create
// passes create: it makes the first key on a new machine. Every other
// command needs the file to exist, so one run in the wrong folder reports
// the mistake instead of working on a new, empty database.
func openDB(ctx context.Context, path string, create bool, stderr io.Writer) (*sqlite.DB, error) {
	shown := absPath(path)
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
		return nil, fmt.Errorf("database %s does not exist: give the server's file with --db or TOLLGATE_DB (only keys create makes a new one)", shown)
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
