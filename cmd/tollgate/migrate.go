package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"tollgate/storage/postgres"
	"tollgate/storage/sqlite"
	"tollgate/storage/transfer"
)

const migrateUsage = `usage: tollgate migrate --from FILE --to postgres://user:password@host:port/database [--replace] [--usage-journal DIR]

Moves a deployment from its SQLite file to PostgreSQL, for several replicas:
keys, their secrets, the audit trail, usage, Idempotency-Key records, async
jobs and webhook secrets (and first, into the SQLite file, any usage its
server journaled but did not load). The target is migrated to the current schema, then
everything is copied in one transaction, each table's rows are counted on
both sides, and it commits only if they agree; the counts are printed.
Stop the servers first: the copy holds the SQLite file's write lock.

A target that already holds rows is refused, unless --replace: then its
rows are deleted first, in the same transaction.
`

// migrateCmd is tollgate migrate.
func migrateCmd(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", migrateUsage, stderr)
	var from, to string
	var replace bool
	fs.StringVar(&from, "from", "", "the SQLite database file to copy from (must exist)")
	fs.StringVar(&to, "to", "", "the PostgreSQL database URL to copy to, postgres://user:password@host:port/database")
	fs.BoolVar(&replace, "replace", false, "delete what the target already holds before copying")
	var journal string
	registerJournal(fs, &journal, getenv)
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return &usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	case from == "":
		return &usageError{"--from FILE is required: the SQLite database to copy"}
	case to == "" || !isPostgres(to):
		return &usageError{"--to is required and must be a postgres:// URL"}
	case isPostgres(from):
		return &usageError{"--from must be a SQLite file, not a postgres:// URL"}
	}
	src, err := sqlite.OpenExisting(ctx, sqlitePath(from))
	if errors.Is(err, sqlite.ErrNoDatabase) {
		return fmt.Errorf("database %s does not exist", absPath(sqlitePath(from)))
	}
	if err != nil {
		return err
	}
	defer src.Close()
	// Usage a killed server journaled but did not load goes with the rest.
	if err := replayForReport(ctx, src, from, journal, getenv, stderr); err != nil {
		return err
	}
	dst, err := postgres.Open(ctx, to)
	if err != nil {
		return err
	}
	defer dst.Close()
	fmt.Fprintf(stderr, "tollgate: copying %s to %s\n", dbName(from), dbName(to))
	start := now()
	counts, err := transfer.Copy(ctx, src, dst, replace)
	if errors.Is(err, transfer.ErrTargetNotEmpty) {
		return fmt.Errorf("%s: %w; nothing was copied (use --replace to delete what it holds first)", dbName(to), err)
	}
	if err != nil {
		return fmt.Errorf("migrate to %s: %w; nothing was committed", dbName(to), err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\tsqlite\tpostgres\t")
	for _, c := range counts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", c.Table, c.Source, c.Target)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "tollgate: copied and verified in %s; start the servers with --db pointing at PostgreSQL\n", now().Sub(start).Round(time.Millisecond))
	return nil
}
