package metering

import (
	"context"
	"time"
)

// ReportStore answers usage reports from the database; package storage's
// DB satisfies it.
type ReportStore interface {
	Summary(ctx context.Context, q Query) ([]Row, error)
	ExportEvents(ctx context.Context, q Query, fn func(Event) error) error
	RecentEvents(ctx context.Context, q Query, limit int) ([]Event, error)
}

// reportFlushTimeout bounds how long a report waits for the loader before
// it reads the database anyway.
const reportFlushTimeout = 5 * time.Second

// Reports returns store with every report preceded by a Flush, so a report
// includes every event whose Record returned before it was asked for
// (read-your-writes). If the loader cannot catch up within 5 s (the
// database is struggling), the report is read anyway and a warning logged:
// it may then miss the latest requests, never count one twice.
func (j *Journal) Reports(store ReportStore) ReportStore {
	return flushedReports{store: store, j: j}
}

type flushedReports struct {
	store ReportStore
	j     *Journal
}

func (r flushedReports) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, reportFlushTimeout)
	defer cancel()
	if err := r.j.Flush(fctx); err != nil && ctx.Err() == nil {
		r.j.opts.Logger.Warn("usage report read before the journal caught up; it may miss the latest requests", "error", err.Error())
	}
}

func (r flushedReports) Summary(ctx context.Context, q Query) ([]Row, error) {
	r.flush(ctx)
	return r.store.Summary(ctx, q)
}

func (r flushedReports) ExportEvents(ctx context.Context, q Query, fn func(Event) error) error {
	r.flush(ctx)
	return r.store.ExportEvents(ctx, q, fn)
}

func (r flushedReports) RecentEvents(ctx context.Context, q Query, limit int) ([]Event, error) {
	r.flush(ctx)
	return r.store.RecentEvents(ctx, q, limit)
}
