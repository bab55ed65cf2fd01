package metering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// JournalOptions tune a Journal. Store is required.
type JournalOptions struct {
	// Store is where the loader moves journal records, in batches.
	Store BatchStore
	// Database identifies Store (e.g. a SQLite file's absolute path, or a
	// PostgreSQL host, port and database name; never a password). Segments
	// are named after it, so journals of several databases may share a
	// folder: only segments of the same Database are loaded into Store.
	Database string
	// OnRecord, if set, is called with every event once it is in the
	// journal, before Record returns: feeding quota counters from here
	// makes a quota check after a response see that response's usage. It
	// must be quick and must not call Record.
	OnRecord func(Event)
	// OnLoad, if set, is called by the loader after each batch it tried to
	// store, with its size, the time taken and the error (for metrics).
	OnLoad func(size int, took time.Duration, err error)
	// MaxBatch is the most records stored in one transaction (default 512).
	MaxBatch int
	// LoadEvery is the least time between two loads while no Flush waits
	// (default 50ms): under load a batch gathers what arrived meanwhile, so
	// the database sees a few commits a second, not one per request.
	LoadEvery time.Duration
	// SegmentBytes is the size past which a fully loaded segment file is
	// replaced by a fresh one and deleted (default 8 MiB).
	SegmentBytes int64
	// SegmentAge is the age past which a fully loaded segment is replaced
	// and deleted whatever its size (default 1 minute), so that records
	// long stored (and perhaps archived and deleted since) are not in a
	// file that a restart after kill -9 would load again.
	SegmentAge time.Duration
	// AdoptEvery is how often the directory is scanned for segments of
	// processes that died (default 5s).
	AdoptEvery time.Duration
	// CommitTimeout bounds one attempt to store a batch (default 10s).
	CommitTimeout time.Duration
	// Logger receives load failures and skipped lines (default slog.Default()).
	Logger *slog.Logger
}

func (o *JournalOptions) defaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.LoadEvery <= 0 {
		o.LoadEvery = 50 * time.Millisecond
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 8 << 20
	}
	if o.SegmentAge <= 0 {
		o.SegmentAge = time.Minute
	}
	if o.AdoptEvery <= 0 {
		o.AdoptEvery = 5 * time.Second
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Journal records usage events with one write(2) each to an append-only
// file, and a background loader moves them into the database in batches.
// An event whose Record returned nil is in the operating system's page
// cache: it survives the process being killed (kill -9, a crash), as a
// SQLite commit with synchronous=NORMAL does, but not a power cut. It is
// stored in the database within LoadEvery plus one commit when the database
// is up, and whenever it comes back when it is not; a journal left behind
// by a dead process is loaded by the next one to open the directory.
// Loading is idempotent: the store skips request ids it already holds, so a
// record loaded twice (a replay after a crash between commit and delete)
// is stored and counted once.
//
// Each process writes its own segment files, holding an exclusive flock on
// each, so several processes may share one directory: a segment whose lock
// is free belongs to a dead writer and is loaded by whoever finds it, at
// start-up or in the scan every AdoptEvery.
//
// A Journal is safe for concurrent use. It satisfies the gateway's
// Recorder: Record returns nil if and only if the event is journaled
// (billed), so a caller that releases its answer only on nil never gives
// away an unbilled answer.
type Journal struct {
	dir  string
	opts JournalOptions
	tag  string // the database's segment name prefix
	id   string // this process's segment name prefix (tag + time + random)

	mu       sync.Mutex // guards the fields below and serializes writes
	seg      *segment   // the segment being written
	torn     bool       // a write failed part-way and could not be taken back
	closed   bool
	written  position // end of what was written, a torn write included
	complete position // end of the last record written whole

	abandonOnce sync.Once

	kick     chan struct{} // new records (cap 1)
	flushReq chan struct{} // a Flush is waiting (cap 1)
	stop     chan struct{} // closed by Close
	abandon  chan struct{} // closed when Close gives up waiting for the store
	done     chan struct{} // closed when the loader has exited

	progress sync.Mutex
	loaded   position      // what the store holds
	advanced chan struct{} // closed and replaced when loaded moves
	stalled  error         // the last load error, nil once a load succeeds
}

// position is a point in the journal: a segment's sequence number and a
// byte offset in it.
type position struct {
	seq int64
	off int64
}

func (p position) before(q position) bool {
	return p.seq < q.seq || p.seq == q.seq && p.off < q.off
}

// ErrJournalClosed is returned by Record after Close.
var ErrJournalClosed = errors.New("metering: usage journal closed")

// OpenJournal opens (creating it if needed) the journal directory dir,
// loads into opts.Store every segment a dead process left there, and starts
// the loader. It returns an error if dir cannot be used or a leftover
// segment cannot be loaded (the database is down): nothing is deleted then,
// and opening again later loads it. Call Close to stop.
func OpenJournal(ctx context.Context, dir string, opts JournalOptions) (*Journal, error) {
	opts.defaults()
	if opts.Store == nil {
		return nil, errors.New("metering: journal needs a store")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("usage journal: %w", err)
	}
	tag := databaseTag(opts.Database)
	if _, err := replayDir(ctx, dir, tag, opts.Store, opts.MaxBatch, false, opts.Logger); err != nil {
		return nil, fmt.Errorf("usage journal %s: load what an earlier process left: %w", dir, err)
	}
	j := &Journal{dir: dir, opts: opts, tag: tag, id: newSegmentPrefix(tag),
		kick: make(chan struct{}, 1), flushReq: make(chan struct{}, 1),
		stop: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{}), advanced: make(chan struct{})}
	seg, err := createSegment(dir, j.id, 1)
	if err != nil {
		return nil, fmt.Errorf("usage journal: %w", err)
	}
	j.seg = seg
	j.written = position{seq: 1}
	j.complete, j.loaded = j.written, j.written
	go j.run()
	return j, nil
}

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// Record appends ev to the journal with one write and returns nil once the
// write is complete: the event is then billed (it reaches the store even
// if this process dies right after) and OnRecord has seen it. On error
// nothing is billed: a write that failed part-way leaves a line the loader
// skips. ev.Time is stored in UTC. ctx is only checked before writing; a
// local write is not interrupted.
func (j *Journal) Record(ctx context.Context, ev Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ev.Time = ev.Time.UTC()
	bp := linePool.Get().(*[]byte)
	line := appendLine((*bp)[:0], ev)
	err := j.write(line)
	*bp = line
	linePool.Put(bp)
	if err != nil {
		return err
	}
	if j.opts.OnRecord != nil {
		j.opts.OnRecord(ev)
	}
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return nil
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// write appends line to the current segment. A write that fails part-way
// is taken back (the file truncated to where it began) or, if that fails
// too, spoiled: the next write first ends the torn line with "#\n", which
// its checksum cannot match, so a record whose Record failed is never
// loaded, even when all but its newline reached the file.
func (j *Journal) write(line []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrJournalClosed
	}
	if j.torn {
		n, err := j.seg.w.Write(spoil)
		j.written.off += int64(n)
		if err != nil || n != len(spoil) {
			return fmt.Errorf("usage journal: %w", orShort(err))
		}
		j.torn = false
	}
	start := j.written.off
	n, err := j.seg.w.Write(line)
	j.written.off += int64(n)
	if err != nil {
		if n > 0 {
			if terr := j.seg.w.Truncate(start); terr == nil {
				j.written.off = start
			} else {
				j.torn = true
			}
		}
		return fmt.Errorf("usage journal: %w", err)
	}
	j.complete = j.written
	return nil
}

// spoil ends a torn line so that it fails its checksum.
var spoil = []byte("#\n")

func orShort(err error) error {
	if err == nil {
		return io.ErrShortWrite
	}
	return err
}

// Flush waits until every event whose Record returned before the call is
// in the store, so that a report read afterwards includes it. It returns
// ctx's error (wrapped with the loader's last error, if any) if that takes
// longer than ctx allows, and ErrJournalClosed after Close.
func (j *Journal) Flush(ctx context.Context) error {
	j.mu.Lock()
	target, closed := j.complete, j.closed // a torn tail is never loaded: not waited for
	j.mu.Unlock()
	if closed {
		return ErrJournalClosed
	}
	for {
		j.progress.Lock()
		loaded, wait := j.loaded, j.advanced
		j.progress.Unlock()
		if !loaded.before(target) {
			return nil
		}
		select {
		case j.flushReq <- struct{}{}:
		default:
		}
		select {
		case <-wait:
		case <-j.done:
			// Closed: what the last load reached is final.
			j.progress.Lock()
			loaded = j.loaded
			j.progress.Unlock()
			if !loaded.before(target) {
				return nil
			}
			return ErrJournalClosed
		case <-ctx.Done():
			j.progress.Lock()
			stalled := j.stalled
			j.progress.Unlock()
			if stalled != nil {
				return fmt.Errorf("usage journal: not loaded yet (%v): %w", stalled, ctx.Err())
			}
			return fmt.Errorf("usage journal: not loaded yet: %w", ctx.Err())
		}
	}
}

// Backlog returns how many journal bytes are not in the store yet and the
// last load error (nil when the last load succeeded), for /readyz and
// metrics.
func (j *Journal) Backlog() (bytes int64, err error) {
	j.mu.Lock()
	w := j.complete
	j.mu.Unlock()
	j.progress.Lock()
	defer j.progress.Unlock()
	if w.seq != j.loaded.seq {
		return w.off, j.stalled // the loader is between segments: at most this much
	}
	return w.off - j.loaded.off, j.stalled
}

// Close stops accepting events, loads everything journaled into the store
// and deletes the segment. If ctx ends first (the database is down), the
// segment stays on disk, unlocked, and the next OpenJournal or Replay of
// the directory loads it: nothing is lost. Close may be called more than
// once.
func (j *Journal) Close(ctx context.Context) error {
	j.mu.Lock()
	already := j.closed
	j.closed = true
	j.mu.Unlock()
	if !already {
		close(j.stop)
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		j.abandonOnce.Do(func() { close(j.abandon) })
		return fmt.Errorf("usage journal: close: %w (what is not loaded stays in %s and is loaded at the next start)", ctx.Err(), j.dir)
	}
	j.progress.Lock()
	defer j.progress.Unlock()
	if j.stalled != nil {
		return fmt.Errorf("usage journal: close: %w (what is not loaded stays in %s and is loaded at the next start)", j.stalled, j.dir)
	}
	return nil
}
