package metering

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"
)

// readChunk is the most journal bytes the loader reads at once.
const readChunk = 256 << 10

// maxBackoff caps the wait between load attempts while the store fails.
const maxBackoff = 5 * time.Second

// run is the loader goroutine: it waits for records (or a Flush), loads
// everything written so far, then waits LoadEvery before the next load, so
// records arriving meanwhile share one commit. A failing store is retried
// with doubling waits; on Close it loads what is left and deletes the
// segment, or leaves the segment for the next start if the store stays down.
func (j *Journal) run() {
	defer close(j.done)
	buf := make([]byte, readChunk)
	backoff := j.opts.LoadEvery
	adopt := time.NewTicker(j.opts.AdoptEvery)
	defer adopt.Stop()
	for {
		select {
		case <-j.kick:
		case <-j.flushReq:
		case <-adopt.C:
			j.adopt()
			j.nudge() // and look at our own segment's age (maybeRotate)
			continue
		case <-j.stop:
			j.finish(buf)
			return
		}
		wait := j.opts.LoadEvery
		err := j.loadAll(buf)
		if err != nil {
			backoff = min(2*backoff, maxBackoff)
			wait = backoff
		} else {
			backoff = j.opts.LoadEvery
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			if err != nil {
				j.nudge() // retry on our own: no new record may come to wake us
			}
		case <-j.flushReq:
			if err == nil {
				j.nudge() // a report waits: load now rather than after LoadEvery
			} // else the back-off stands: reports must not hammer a failing database
		case <-j.stop:
			t.Stop()
			j.finish(buf)
			return
		}
		t.Stop()
	}
}

// adopt loads the segments of processes that died while this one runs
// (several instances may share the directory), so their usage reaches the
// database without waiting for a restart.
func (j *Journal) adopt() {
	n, err := replayDir(context.Background(), j.dir, j.tag, j.opts.Store, j.opts.MaxBatch, false, j.opts.Logger)
	if err != nil {
		j.opts.Logger.Warn("usage journal: could not load a dead process's segment yet; will retry", "error", err.Error())
	}
	if n > 0 {
		j.opts.Logger.Info("usage journal: loaded records a dead process left", "records", n)
	}
}

// nudge makes the loader's next wait return at once.
func (j *Journal) nudge() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// finish loads what is left after Close, retrying while the store fails
// until the journal is abandoned, then deletes the segment if everything is
// stored and otherwise leaves it, unlocked, for the next start.
func (j *Journal) finish(buf []byte) {
	wait := j.opts.LoadEvery
	for {
		err := j.loadAll(buf)
		if err == nil {
			if rerr := j.seg.remove(); rerr != nil {
				j.opts.Logger.Warn("usage journal: could not delete a loaded segment; it will be loaded again (harmlessly) at the next start", "error", rerr.Error())
			}
			return
		}
		select {
		case <-j.abandon:
			j.seg.release()
			j.opts.Logger.Error("usage journal: records not loaded at shutdown stay on disk and are loaded at the next start",
				"dir", j.dir, "error", err.Error())
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxBackoff)
	}
}

// loadAll loads every complete record written so far, batch by batch, and
// replaces a large segment once it is fully loaded. It returns the first
// store error (the records stay where they are, for the next attempt).
func (j *Journal) loadAll(buf []byte) error {
	for {
		j.mu.Lock()
		end := j.written
		j.mu.Unlock()
		j.progress.Lock()
		from := j.loaded
		j.progress.Unlock()
		if from.off >= end.off {
			j.maybeRotate(end)
			return nil
		}
		n, err := j.seg.r.ReadAt(buf[:min(int64(len(buf)), end.off-from.off)], from.off)
		if err != nil && err != io.EOF {
			return j.stall(fmt.Errorf("read %s: %w", j.seg.path, err))
		}
		data := buf[:n]
		used := bytes.LastIndexByte(data, '\n') + 1
		if used == 0 {
			if n < len(buf) {
				return nil // a line still being written, or torn: wait for its end
			}
			used = n // a whole chunk without a newline is garbage
		}
		if err := j.loadLines(data[:used], from); err != nil {
			return err
		}
	}
}

// loadLines stores the events of the complete lines in data, which starts
// at from, in batches of MaxBatch, and advances the loaded position.
func (j *Journal) loadLines(data []byte, from position) error {
	events, bad := parseLines(data, false)
	if bad > 0 {
		j.opts.Logger.Warn("usage journal: skipped lines that failed their checksum (torn writes)", "file", j.seg.path, "lines", bad)
	}
	for len(events) > 0 {
		k := min(len(events), j.opts.MaxBatch)
		if err := j.store(events[:k]); err != nil {
			return err
		}
		events = events[k:]
	}
	j.advance(position{seq: from.seq, off: from.off + int64(len(data))})
	return nil
}

// store inserts one batch with its own timeout.
func (j *Journal) store(events []Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), j.opts.CommitTimeout)
	defer cancel()
	start := time.Now()
	_, err := j.opts.Store.InsertEvents(ctx, events, nil)
	if j.opts.OnLoad != nil {
		j.opts.OnLoad(len(events), time.Since(start), err)
	}
	if err != nil {
		return j.stall(err)
	}
	return nil
}

// stall records a load error for Flush, Backlog and Close, and logs it.
func (j *Journal) stall(err error) error {
	j.progress.Lock()
	first := j.stalled == nil
	j.stalled = err
	j.progress.Unlock()
	if first {
		j.opts.Logger.Warn("usage journal: records not loaded into the database yet; retrying (answers go on, their usage is safe in the journal)",
			"dir", j.dir, "error", err.Error())
	}
	return err
}

// advance publishes a new loaded position and wakes Flush callers.
func (j *Journal) advance(p position) {
	j.progress.Lock()
	if j.stalled != nil {
		j.opts.Logger.Info("usage journal: loading again", "dir", j.dir)
	}
	j.loaded, j.stalled = p, nil
	close(j.advanced)
	j.advanced = make(chan struct{})
	j.progress.Unlock()
}

// maybeRotate replaces the segment with a fresh one once it is fully
// loaded (nothing written since end) and past SegmentBytes or SegmentAge,
// and deletes it. A failure leaves the old segment in use; it is tried again later.
func (j *Journal) maybeRotate(end position) {
	if end.off == 0 || end.off < j.opts.SegmentBytes && time.Since(j.seg.created) < j.opts.SegmentAge {
		return
	}
	j.mu.Lock()
	if j.written != end || j.closed {
		j.mu.Unlock()
		return
	}
	next, err := createSegment(j.dir, j.id, end.seq+1)
	if err != nil {
		j.mu.Unlock()
		j.opts.Logger.Warn("usage journal: could not start a new segment; the current one keeps growing", "error", err.Error())
		return
	}
	old := j.seg
	j.seg, j.written, j.complete = next, position{seq: next.seq}, position{seq: next.seq}
	j.mu.Unlock()
	j.advance(position{seq: next.seq})
	if err := old.remove(); err != nil {
		j.opts.Logger.Warn("usage journal: could not delete a loaded segment; it will be loaded again (harmlessly) at the next start", "error", err.Error())
	}
}
