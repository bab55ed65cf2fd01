package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgconn"

	"tollgate/metering"
	"tollgate/storage"
)

// journalOff is the --usage-journal value that commits every usage record
// to the database before its answer is released, without a journal.
const journalOff = "off"

// registerJournal registers --usage-journal on fs.
func registerJournal(fs *flag.FlagSet, dir *string, getenv func(string) string) {
	fs.StringVar(dir, "usage-journal", getenv("TOLLGATE_USAGE_JOURNAL"),
		"folder of the usage journal (env TOLLGATE_USAGE_JOURNAL; default: the database file's name plus .journal); \"off\" commits each record to the database before its answer is sent instead (slower)")
}

// journalDir is the usage journal's folder: flag; else, for a SQLite file,
// the file's path plus ".journal"; else (PostgreSQL) tollgate/usage-journal
// in the user's state directory ($XDG_STATE_HOME, or ~/.local/state), which
// must be on persistent local storage: what the loader has not moved to the
// database yet is there. Instances and databases may share a folder: each
// process writes its own files, named after its database.
func journalDir(db, flag string, getenv func(string) string) string {
	switch {
	case flag != "":
		return flag
	case !isPostgres(db):
		return sqlitePath(db) + ".journal"
	}
	state := getenv("XDG_STATE_HOME")
	if state == "" {
		if home := getenv("HOME"); home != "" {
			state = filepath.Join(home, ".local", "state")
		} else {
			state = "." // no home: the working directory
		}
	}
	return filepath.Join(state, "tollgate", "usage-journal")
}

// journalIdentity names db for the journal (see metering.JournalOptions.
// Database), the same however it is spelled: a SQLite file's absolute
// path with symbolic links resolved, or the PostgreSQL server's host, port
// and database as the driver resolves them (PGHOST and friends, ?host=,
// default port), never a user or password.
func journalIdentity(db string) string {
	if isPostgres(db) {
		cfg, err := pgconn.ParseConfig(db)
		if err != nil {
			return dbName(db)
		}
		return fmt.Sprintf("PostgreSQL %s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	path := absPath(sqlitePath(db))
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		if real, err := filepath.EvalSymlinks(filepath.Join(dir, filepath.Base(path))); err == nil {
			return "SQLite " + real
		}
		return "SQLite " + filepath.Join(dir, filepath.Base(path))
	}
	return "SQLite " + path
}

// replayForReport loads every usage record still in the journal into db
// before a CLI report reads it, so the report includes every answer
// delivered so far, by a running server or by one that was killed.
func replayForReport(ctx context.Context, db storage.Store, dbPath, flag string, getenv func(string) string, stderr io.Writer) error {
	if flag == journalOff {
		return nil
	}
	dir := journalDir(dbPath, flag, getenv)
	n, err := metering.ReplayJournal(ctx, dir, journalIdentity(dbPath), db, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return fmt.Errorf("usage journal %s: %w", dir, err)
	}
	if n > 0 {
		fmt.Fprintf(stderr, "tollgate: loaded %d usage records from the journal %s\n", n, absPath(dir))
	}
	return nil
}
