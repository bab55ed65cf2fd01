package metering

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// segment is one journal file this process writes: w appends and holds the
// file's exclusive flock for as long as the file exists; r reads it for the
// loader.
type segment struct {
	seq     int64
	path    string
	w, r    *os.File
	created time.Time
}

const segmentExt = ".jnl"

// replayBatchTimeout bounds one batch of a replay (not the whole file: a
// segment that grew while the database was down may take many batches).
const replayBatchTimeout = 30 * time.Second

// databaseTag names the database a segment belongs to in its file name:
// the first 8 hex digits of the SHA-256 of the database's identity, so
// journals of several databases may share a folder without one database's
// records ever being loaded into another.
func databaseTag(database string) string {
	sum := sha256.Sum256([]byte(database))
	return "usage-" + hex.EncodeToString(sum[:4]) + "-"
}

// newSegmentPrefix returns a name prefix no other process uses, starting
// with tag.
func newSegmentPrefix(tag string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return tag + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// createSegment creates and locks segment seq under a temporary name, then
// gives it its final name, so that no other process ever sees a segment
// file that is not locked by its writer.
func createSegment(dir, prefix string, seq int64) (*segment, error) {
	name := fmt.Sprintf("%s-%06d%s", prefix, seq, segmentExt)
	tmp := filepath.Join(dir, "."+name+".tmp")
	w, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(w.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		w.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("lock %s: %w", tmp, err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp, path); err != nil {
		w.Close()
		os.Remove(tmp)
		return nil, err
	}
	r, err := os.Open(path)
	if err != nil {
		w.Close()
		return nil, err
	}
	return &segment{seq: seq, path: path, w: w, r: r, created: time.Now()}, nil
}

// remove deletes a fully loaded segment, still holding its lock so nobody
// loads it meanwhile, then closes it.
func (s *segment) remove() error {
	err := os.Remove(s.path)
	s.r.Close()
	s.w.Close()
	return err
}

// release closes a segment without deleting it: its lock is free, so the
// next process to open the directory loads it.
func (s *segment) release() {
	s.r.Close()
	s.w.Close()
}

// ReplayJournal loads every record of every segment of database in the
// journal directory dir into store and returns how many were newly stored
// (database is the identity the journal was opened with, see
// JournalOptions.Database; other databases' segments are left alone). A
// segment whose writer is gone is deleted once loaded; one a running
// process still writes is loaded as far as it is written and left to that
// process, so a report read right after sees every answer delivered so far.
// A dir that does not exist holds nothing. Safe to run beside a serving
// process: records loaded twice are stored once.
func ReplayJournal(ctx context.Context, dir, database string, store BatchStore, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.Default()
	}
	return replayDir(ctx, dir, databaseTag(database), store, 512, true, log)
}

// replayDir loads the segments in dir whose names start with tag; live
// ones (locked by their writer) only when includeLive.
func replayDir(ctx context.Context, dir, tag string, store BatchStore, maxBatch int, includeLive bool, log *slog.Logger) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("usage journal: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasPrefix(strings.TrimPrefix(n, "."), tag) {
			continue // another database's, or not a segment
		}
		if strings.HasSuffix(n, segmentExt) || strings.HasSuffix(n, ".tmp") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	total := 0
	for _, n := range names {
		k, err := replayFile(ctx, filepath.Join(dir, n), store, maxBatch, includeLive, log)
		total += k
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// replayFile loads one segment (or removes an abandoned temporary file).
func replayFile(ctx context.Context, path string, store BatchStore, maxBatch int, includeLive bool, log *slog.Logger) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // another process loaded and deleted it meanwhile
	}
	if err != nil {
		return 0, fmt.Errorf("usage journal: %w", err)
	}
	defer f.Close()
	live := false
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return 0, fmt.Errorf("usage journal: lock %s: %w", path, err)
		}
		live = true
	}
	if strings.HasSuffix(path, ".tmp") {
		if !live {
			os.Remove(path) // a writer died between creating and naming it: empty
		}
		return 0, nil
	}
	if live && !includeLive {
		return 0, nil // its writer loads it
	}
	n, bad, err := replayLines(ctx, f, store, maxBatch)
	if bad > 0 {
		log.Warn("usage journal: skipped lines that failed their checksum (torn writes)", "file", path, "lines", bad)
	}
	if err != nil {
		return n, fmt.Errorf("usage journal: load %s: %w", filepath.Base(path), err)
	}
	if !live {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("usage journal: %w", err)
		}
	}
	return n, nil
}

// replayLines stores the events of r's complete lines in batches of
// maxBatch, reading a chunk at a time, so a segment that grew large while
// the database was down is loaded in constant memory. A line without its
// newline is never loaded: every Record that returned nil wrote its newline
// in the same write, so what follows the last newline is a write under way
// (a live segment) or one that failed (a dead one). It returns how many
// events were newly stored and how many lines were bad.
func replayLines(ctx context.Context, r io.Reader, store BatchStore, maxBatch int) (n, bad int, err error) {
	buf := make([]byte, readChunk)
	var carry []byte // the start of a line the last chunk cut
	batch := make([]Event, 0, maxBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		bctx, cancel := context.WithTimeout(ctx, replayBatchTimeout)
		inserted, err := store.InsertEvents(bctx, batch, nil)
		cancel()
		if err != nil {
			return err
		}
		for _, ok := range inserted {
			if ok {
				n++
			}
		}
		batch = batch[:0]
		return nil
	}
	for {
		k, rerr := r.Read(buf)
		data := append(carry, buf[:k]...)
		end := bytes.LastIndexByte(data, '\n') + 1
		evs, b := parseLines(data[:end], false)
		bad += b
		for _, ev := range evs {
			batch = append(batch, ev)
			if len(batch) == maxBatch {
				if err := flush(); err != nil {
					return n, bad, err
				}
			}
		}
		carry = append(carry[:0:0], data[end:]...)
		if len(carry) > readChunk {
			carry, bad = nil, bad+1 // no line is this long: garbage
		}
		if rerr == io.EOF {
			return n, bad, flush()
		}
		if rerr != nil {
			return n, bad, rerr
		}
	}
}

// parseLines decodes the complete lines in data. With tail, a last line
// without its newline is decoded too (only for a chunk that holds no
// newline at all: garbage, counted bad). It returns the events and how many
// non-empty lines were bad.
func parseLines(data []byte, tail bool) (events []Event, bad int) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			if !tail {
				break
			}
			line, data = data, nil
		} else {
			line, data = data[:i], data[i+1:]
		}
		if len(line) == 0 {
			continue
		}
		ev, err := parseLine(line)
		if err != nil {
			bad++
			continue
		}
		events = append(events, ev)
	}
	return events, bad
}
