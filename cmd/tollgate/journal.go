package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

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

// defaultRemoteJournal is the usage journal's folder, in the working
// directory, when the database is not a local file (PostgreSQL).
const defaultRemoteJournal = "tollgate-usage.journal"

// journalDir is the usage journal's folder: flag, or the SQLite file's path
// plus ".journal", or defaultRemoteJournal for PostgreSQL. Instances may
// share it: each writes its own files.
func journalDir(db, flag string) string {
	switch {
	case flag != "":
		return flag
	case isPostgres(db):
		return defaultRemoteJournal
	}
	return sqlitePath(db) + ".journal"
}

// replayForReport loads every usage record still in the journal into db
// before a CLI report reads it, so the report includes every answer
// delivered so far, by a running server or by one that was killed.
func replayForReport(ctx context.Context, db storage.Store, dbPath, flag string, stderr io.Writer) error {
	if flag == journalOff {
		return nil
	}
	dir := journalDir(dbPath, flag)
	n, err := metering.ReplayJournal(ctx, dir, db, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return fmt.Errorf("usage journal %s: %w", dir, err)
	}
	if n > 0 {
		fmt.Fprintf(stderr, "tollgate: loaded %d usage records from the journal %s\n", n, absPath(dir))
	}
	return nil
}
