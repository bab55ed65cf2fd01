package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"tollgate/metering"
	"tollgate/storage"
)

const usageUsage = `usage: tollgate usage <subcommand> [flags]

subcommands:
  export  [--key ID] [--from DATE] [--to DATE] [--format json|csv]   one record per request
  summary [--key ID] [--from DATE] [--to DATE] [--by key|model|day|account]  totals (default: per key)

DATE is 2006-01-02 or RFC 3339, UTC; --to is exclusive. Without --from/--to
export covers everything and summary the current month. Both read the database
given by --db (env TOLLGATE_DB, default tollgate.db), which must exist.
Run "tollgate usage <subcommand> -h" for its flags.
`

// usageSynopsis is each subcommand's first lines of -h.
var usageSynopsis = map[string]string{
	"export":  "usage: tollgate usage export [--key ID] [--from DATE] [--to DATE] [--format json|csv] [--db FILE] [--usage-journal DIR]\n\nPrints one record per request, oldest first, on stdout.\nDATE is 2006-01-02 or RFC 3339, UTC; --to is exclusive. Default: everything.\n",
	"summary": "usage: tollgate usage summary [--key ID] [--from DATE] [--to DATE] [--by key|model|day|account] [--db FILE] [--usage-journal DIR]\n\nPrints totals per key (with its name), model, day or account (the one the usage was made under; - for none).\nDATE is 2006-01-02 or RFC 3339, UTC; --to is exclusive. Default: the current month.\n",
}

// usageCmd is `tollgate usage ...`: billing data straight from the database.
func usageCmd(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	sub, synopsis, args, err := subcommand("usage", args, usageUsage, usageSynopsis, "export or summary", stdout, stderr)
	if err != nil {
		return err
	}
	fs := newFlags("usage "+sub, synopsis, stderr)
	var c common
	c.registerDB(fs, getenv)
	var journal string
	registerJournal(fs, &journal, getenv)
	key := fs.String("key", "", "only this key id")
	from := fs.String("from", "", "start date (inclusive)")
	to := fs.String("to", "", "end date (exclusive)")
	format := fs.String("format", "json", "export format: json or csv")
	by := fs.String("by", metering.GroupKey, "summary grouping: key, model, day or account")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	q := metering.Query{KeyID: *key, From: time.Unix(0, 0).UTC(), To: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)} // storage keeps unix nanoseconds: years 1970-2262
	if sub == "summary" {
		now := now().UTC()
		q.From, q.To, q.GroupBy = metering.MonthStart(now), metering.NextMonthStart(now), *by
	}
	if q.From, err = dateFlag("--from", *from, q.From); err != nil {
		return err
	}
	if q.To, err = dateFlag("--to", *to, q.To); err != nil {
		return err
	}
	if err := q.Validate(); err != nil {
		return &usageError{err.Error()}
	}
	db, err := openDB(ctx, c.db, false, stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := replayForReport(ctx, db, c.db, journal, getenv, stderr); err != nil {
		return err
	}
	if sub == "summary" {
		return usageSummary(ctx, db, q, stdout)
	}
	w, err := metering.NewEventWriter(stdout, *format)
	if err != nil {
		return &usageError{"--format: want json or csv"}
	}
	if err := db.ExportEvents(ctx, q, w.Write); err != nil {
		return err
	}
	return w.Close()
}

func dateFlag(name, v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	t, err := metering.ParseDate(v)
	var dre *metering.DateRangeError
	switch {
	case errors.As(err, &dre):
		return def, &usageError{fmt.Sprintf("%s %q: %v", name, v, err)}
	case err != nil:
		return def, &usageError{fmt.Sprintf("%s %q: want 2006-01-02 or an RFC 3339 time", name, v)}
	}
	return t, nil
}

func usageSummary(ctx context.Context, db storage.Store, q metering.Query, stdout io.Writer) error {
	rows, err := db.Summary(ctx, q)
	if err != nil {
		return err
	}
	var names map[string]string // by key id, for --by key
	if q.GroupBy == metering.GroupKey {
		keys, err := db.ListKeys(ctx)
		if err != nil {
			return err
		}
		names = make(map[string]string, len(keys))
		for _, k := range keys {
			names[k.ID] = k.Name
		}
	}
	fmt.Fprintf(stdout, "usage from %s to %s (UTC, end exclusive)\n", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := map[string]string{"key": "KEY\tNAME", "model": "MODEL", "day": "DAY", "account": "ACCOUNT"}[q.GroupBy]
	fmt.Fprintf(tw, "%s\tREQUESTS\tPROMPT\tCOMPLETION\tTOTAL\tCOST\t\n", head)
	for _, r := range rows {
		group := r.Group
		if q.GroupBy == metering.GroupAccount {
			group = orDash(group) // "-": keys without an account
		}
		if names != nil {
			group += "\t" + orDash(names[r.Group]) // "-": a key no longer (or never) in the keys table
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t\n", group, r.Requests, r.PromptTokens, r.CompletionTokens, r.TotalTokens(), r.Cost.String())
	}
	return tw.Flush()
}
