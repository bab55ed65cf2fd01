package metering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openJournal(t *testing.T, dir string, opts JournalOptions) *Journal {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	}
	j, err := OpenJournal(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = j.Close(ctx)
	})
	return j
}

func flush(t *testing.T, j *Journal) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// segments lists the journal files in dir.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestJournalRecordFeedsCountersThenLoads(t *testing.T) {
	st := newFakeStore()
	counters := NewCounters(func() time.Time { return testEvent("x").Time })
	j := openJournal(t, t.TempDir(), JournalOptions{Store: st, OnRecord: counters.Add})
	ev := testEvent("r1")
	ev.Time = ev.Time.In(time.FixedZone("CET", 3600))
	if err := j.Record(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got := counters.Month("key1"); got.Requests != 1 || got.TotalTokens() != 30 {
		t.Fatalf("counters right after Record: %+v; want the event counted", got)
	}
	flush(t, j)
	got, ok := st.stored("r1")
	if !ok {
		t.Fatal("event not in the store after Flush")
	}
	if got.Time.Location().String() != "UTC" || !got.Time.Equal(ev.Time) || got.Cost != ev.Cost || got.Latency != ev.Latency {
		t.Fatalf("stored %+v; recorded %+v", got, ev)
	}
}

func TestJournalRefusesInvalidAndClosed(t *testing.T) {
	j := openJournal(t, t.TempDir(), JournalOptions{Store: newFakeStore()})
	bad := testEvent("r1")
	bad.KeyID = ""
	if err := j.Record(context.Background(), bad); err == nil {
		t.Fatal("an event without a key id was journaled")
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := j.Record(context.Background(), testEvent("r2")); !errors.Is(err, ErrJournalClosed) {
		t.Fatalf("Record after Close = %v; want ErrJournalClosed", err)
	}
}

// Many writers at once: every event reaches the store exactly once, in
// batches (not a commit per event), and the segment is gone after Close.
func TestJournalConcurrentWritersLoadInBatches(t *testing.T) {
	st := newFakeStore()
	dir := t.TempDir()
	var mu sync.Mutex
	var batches []int
	j := openJournal(t, dir, JournalOptions{Store: st, LoadEvery: 20 * time.Millisecond, OnLoad: func(n int, _ time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			batches = append(batches, n)
		}
	}})
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 100 {
				if err := j.Record(context.Background(), testEvent(fmt.Sprintf("w%d-%d", w, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	flush(t, j)
	if st.count() != 2000 {
		t.Fatalf("store holds %d events; want 2000", st.count())
	}
	mu.Lock()
	if len(batches) >= 2000 {
		t.Errorf("%d commits for 2000 events: no batching", len(batches))
	}
	mu.Unlock()
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := segments(t, dir); len(s) != 0 {
		t.Fatalf("segments left after a clean Close: %v", s)
	}
}

// The database being down does not slow answers: Record succeeds at once,
// Flush says the records are not loaded yet and why, and they are loaded
// when the store comes back.
func TestJournalStoreDownThenBack(t *testing.T) {
	st := newFakeStore()
	st.failN = 1 << 30
	j := openJournal(t, t.TempDir(), JournalOptions{Store: st, LoadEvery: 5 * time.Millisecond})
	for i := range 10 {
		if err := j.Record(context.Background(), testEvent(fmt.Sprint("r", i))); err != nil {
			t.Fatalf("Record while the store is down: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := j.Flush(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), errFake.Error()) {
		t.Fatalf("Flush while the store is down = %v; want the deadline and the store's error", err)
	}
	if n, lerr := j.Backlog(); n == 0 || lerr == nil {
		t.Fatalf("Backlog = %d, %v; want bytes waiting and the store's error", n, lerr)
	}
	st.mu.Lock()
	st.failN = 0
	st.mu.Unlock()
	// Nobody records or flushes: the loader retries on its own.
	deadline := time.Now().Add(5 * time.Second)
	for st.count() != 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st.count() != 10 {
		t.Fatalf("store holds %d events after it came back; want 10", st.count())
	}
	if n, lerr := j.Backlog(); n != 0 || lerr != nil {
		t.Fatalf("Backlog after loading = %d, %v", n, lerr)
	}
}

// A Close that cannot reach the store leaves the segment for the next
// start, which loads it: nothing is lost.
func TestJournalCloseWithStoreDownKeepsRecordsForNextStart(t *testing.T) {
	dir := t.TempDir()
	down := newFakeStore()
	down.failN = 1 << 30
	j := openJournal(t, dir, JournalOptions{Store: down, LoadEvery: 5 * time.Millisecond})
	for i := range 5 {
		if err := j.Record(context.Background(), testEvent(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := j.Close(ctx); err == nil {
		t.Fatal("Close with the store down returned nil")
	}
	<-j.done
	if s := segments(t, dir); len(s) != 1 {
		t.Fatalf("segments after a failed Close: %v; want the one", s)
	}
	up := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: up})
	if up.count() != 5 {
		t.Fatalf("the next start loaded %d events; want 5", up.count())
	}
	if s := segments(t, dir); len(s) != 1 || strings.Contains(s[0], "-000001") && len(s) != 1 {
		t.Fatalf("segments after the next start: %v; want only its own", s)
	}
}

// crash stops j as a killed process would: no loading, files closed, so
// their locks are free.
func crash(j *Journal) {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.abandonOnce.Do(func() { close(j.abandon) })
	j.seg.release()
}

func TestJournalLeftByADeadProcessIsLoadedOnceAtOpen(t *testing.T) {
	dir := t.TempDir()
	st := newFakeStore()
	st.hold = make(chan struct{}) // the dead process never loads anything
	j, err := OpenJournal(context.Background(), dir, JournalOptions{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := j.Record(context.Background(), testEvent(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
	}
	crash(j)
	next := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: next})
	if next.count() != 3 {
		t.Fatalf("loaded %d events from the dead process; want 3", next.count())
	}
	again := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: again})
	if again.count() != 0 {
		t.Fatalf("a third opener loaded %d events: the dead segment was not deleted once loaded", again.count())
	}
}

// A running process's segment is never taken over by another opener.
func TestJournalOfALiveProcessIsNotTakenOver(t *testing.T) {
	dir := t.TempDir()
	held := newFakeStore()
	held.hold = make(chan struct{})
	live := openJournal(t, dir, JournalOptions{Store: held})
	if err := live.Record(context.Background(), testEvent("live")); err != nil {
		t.Fatal(err)
	}
	other := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: other})
	if other.count() != 0 {
		t.Fatal("a live process's segment was loaded at open by another process")
	}
	close(held.hold)
	flush(t, live)
	if _, ok := held.stored("live"); !ok {
		t.Fatal("the live process did not load its own record")
	}
}

// ReplayJournal (the CLI's reports) loads a live segment as far as it is
// written and leaves the file to its writer.
func TestReplayJournalReadsLiveSegmentsWithoutTakingThem(t *testing.T) {
	dir := t.TempDir()
	held := newFakeStore()
	held.hold = make(chan struct{})
	j := openJournal(t, dir, JournalOptions{Store: held})
	for i := range 4 {
		if err := j.Record(context.Background(), testEvent(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
	}
	cli := newFakeStore()
	n, err := ReplayJournal(context.Background(), dir, "", cli, nil)
	if err != nil || n != 4 || cli.count() != 4 {
		t.Fatalf("ReplayJournal = %d, %v; store holds %d; want 4", n, err, cli.count())
	}
	if s := segments(t, dir); len(s) != 1 {
		t.Fatalf("segments after replaying a live one: %v", s)
	}
	close(held.hold)
}

// A torn line (a write cut short, or garbage) is skipped with a warning;
// the lines around it load.
func TestJournalSkipsTornLines(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	b = appendLine(b, testEvent("a"))
	torn := appendLine(nil, testEvent("torn"))
	b = append(b, torn[:len(torn)/2]...)
	b = append(b, '\n')
	b = appendLine(b, testEvent("c"))
	flipped := appendLine(nil, testEvent("flipped"))
	flipped[10] ^= 1
	b = append(b, flipped...)
	b = append(b, torn[:20]...) // a last line without its end
	if err := os.WriteFile(filepath.Join(dir, databaseTag("")+"dead-000001"+segmentExt), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	st := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, okA := st.stored("a")
	_, okC := st.stored("c")
	if st.count() != 2 || !okA || !okC {
		t.Fatalf("stored %d events (a %v, c %v); want a and c", st.count(), okA, okC)
	}
	if !strings.Contains(logs.String(), "lines=2") {
		t.Fatalf("log does not count the 2 skipped lines: %s", logs.String())
	}
}

// A record whose write lost only its newline was not acknowledged (every
// Record that returned nil wrote its newline in the same write): it must
// never be billed, in a dead process's segment, nor once a later write has
// ended the torn line.
func TestJournalNeverLoadsALineWithoutItsNewline(t *testing.T) {
	dir := t.TempDir()
	whole := appendLine(nil, testEvent("ok"))
	unacked := appendLine(nil, testEvent("unacked"))
	unacked = unacked[:len(unacked)-1] // all but its newline
	if err := os.WriteFile(filepath.Join(dir, databaseTag("")+"dead-000001"+segmentExt), append(whole, unacked...), 0o600); err != nil {
		t.Fatal(err)
	}
	spoiled := append(append(append([]byte(nil), whole...), unacked...), spoil...)
	spoiled = append(spoiled, appendLine(nil, testEvent("after"))...)
	if err := os.WriteFile(filepath.Join(dir, databaseTag("")+"dead-000002"+segmentExt), spoiled, 0o600); err != nil {
		t.Fatal(err)
	}
	st := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: st})
	if _, ok := st.stored("unacked"); ok {
		t.Fatal("a record whose write lost its newline was billed")
	}
	_, okA := st.stored("ok")
	_, okB := st.stored("after")
	if !okA || !okB || st.count() != 2 {
		t.Fatalf("stored %d events (ok %v, after %v); want the two acknowledged ones", st.count(), okA, okB)
	}
}

// Segments are replaced once loaded and past SegmentBytes, so the journal
// does not grow without bound, and no record is lost across a rotation.
func TestJournalRotatesLoadedSegments(t *testing.T) {
	dir := t.TempDir()
	st := newFakeStore()
	j := openJournal(t, dir, JournalOptions{Store: st, SegmentBytes: 2 << 10, LoadEvery: time.Millisecond})
	for i := range 300 {
		if err := j.Record(context.Background(), testEvent(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			flush(t, j)
		}
	}
	flush(t, j)
	if st.count() != 300 {
		t.Fatalf("store holds %d; want 300", st.count())
	}
	j.mu.Lock()
	seq := j.written.seq
	j.mu.Unlock()
	if seq < 3 {
		t.Fatalf("still on segment %d after ~45 KiB with 2 KiB segments", seq)
	}
	if s := segments(t, dir); len(s) != 1 {
		t.Fatalf("segments on disk: %v; want only the current one", s)
	}
}

func TestJournalLineRoundTrip(t *testing.T) {
	ev := testEvent("req\twith\"odd\nbytes\x00")
	ev.Surface = SurfaceOpenAI
	ev.AccountID = "acct_1"
	line := appendLine(nil, ev)
	if bytes.Count(line, []byte{'\n'}) != 1 || line[len(line)-1] != '\n' {
		t.Fatalf("line %q is not one line", line)
	}
	got, err := parseLine(line[:len(line)-1])
	if err != nil {
		t.Fatal(err)
	}
	if got != ev {
		t.Fatalf("round trip: %+v\nwant %+v", got, ev)
	}
}

// A journal written before usage rows kept their account (version u1, no
// account field) is still loaded after an upgrade, with no account.
func TestJournalReadsVersion1Lines(t *testing.T) {
	body := "u1\t\"req_1\"\t\"key_1\"\t\"generate\"\t\"tiny\"\t\"native\"\t12\t34\t200\t1500000\t420\t1767225600000000000"
	line := fmt.Sprintf("%s\t%08x", body, crc32.Checksum([]byte(body), castagnoli))
	ev, err := parseLine([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if ev.RequestID != "req_1" || ev.KeyID != "key_1" || ev.AccountID != "" || ev.TotalTokens() != 46 || ev.Cost != 420 || ev.Status != 200 {
		t.Fatalf("u1 line read as %+v", ev)
	}
	if _, err := parseLine([]byte(strings.Replace(line, "u1", "u2", 1))); err == nil {
		t.Fatal("a u1 line relabelled u2 (one field short) was accepted")
	}
}

// The loader reads journal files from disk, which a crash, a full disk or
// an operator may have damaged: parseLine must never panic, and what it
// accepts must be a valid event that encodes back to the same line.
func FuzzParseLine(f *testing.F) {
	f.Add(appendLine(nil, testEvent("r1")))
	f.Add([]byte("u1\t\"a\"\t\"b\"\t\"generate\"\t\"m\"\t\"\"\t1\t2\t200\t3\t4\t5\t00000000\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		line := bytes.TrimSuffix(data, []byte{'\n'})
		ev, err := parseLine(line)
		if err != nil {
			return
		}
		if verr := ev.Validate(); verr != nil {
			t.Fatalf("parseLine accepted an invalid event: %v", verr)
		}
		back, err := parseLine(bytes.TrimSuffix(appendLine(nil, ev), []byte{'\n'}))
		if err != nil || back != ev {
			t.Fatalf("re-encoded line parses to %+v, %v; want %+v", back, err, ev)
		}
	})
}

func BenchmarkJournalRecord(b *testing.B) {
	j, err := OpenJournal(context.Background(), b.TempDir(), JournalOptions{Store: newFakeStore(), Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close(context.Background())
	ev := testEvent("")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ev.RequestID = "req_" + fmt.Sprint(i)
		if err := j.Record(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
}

// A running journal adopts the segments of a process that died beside it.
func TestJournalAdoptsADeadNeighbour(t *testing.T) {
	dir := t.TempDir()
	st := newFakeStore()
	survivor := openJournal(t, dir, JournalOptions{Store: st, AdoptEvery: 10 * time.Millisecond})
	held := newFakeStore()
	held.hold = make(chan struct{})
	dying, err := OpenJournal(context.Background(), dir, JournalOptions{Store: held})
	if err != nil {
		t.Fatal(err)
	}
	if err := dying.Record(context.Background(), testEvent("orphan")); err != nil {
		t.Fatal(err)
	}
	crash(dying)
	deadline := time.Now().Add(5 * time.Second)
	for _, ok := st.stored("orphan"); !ok; _, ok = st.stored("orphan") {
		if time.Now().After(deadline) {
			t.Fatal("the survivor did not load the dead neighbour's record")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := segments(t, dir); len(s) != 1 {
		t.Fatalf("segments: %v; want only the survivor's", s)
	}
	_ = survivor
}

// Journals of two databases in one folder: each database gets only its
// own records, at start-up, from a dead neighbour, and in a replay.
func TestJournalKeepsDatabasesApart(t *testing.T) {
	dir := t.TempDir()
	held := newFakeStore()
	held.hold = make(chan struct{})
	a, err := OpenJournal(context.Background(), dir, JournalOptions{Store: held, Database: "sqlite:/srv/a.db"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Record(context.Background(), testEvent("for-a")); err != nil {
		t.Fatal(err)
	}
	crash(a)
	b := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: b, Database: "postgres:db.example:5432/b", AdoptEvery: time.Millisecond})
	time.Sleep(20 * time.Millisecond) // several adoption scans
	if n, err := ReplayJournal(context.Background(), dir, "postgres:db.example:5432/b", b, nil); err != nil || n != 0 {
		t.Fatalf("replay for b = %d, %v", n, err)
	}
	if b.count() != 0 {
		t.Fatalf("database b got %d records of database a", b.count())
	}
	a2 := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: a2, Database: "sqlite:/srv/a.db"})
	if _, ok := a2.stored("for-a"); !ok {
		t.Fatal("database a's own record was not loaded at its next start")
	}
}

// A fully loaded segment is replaced after SegmentAge even when small, so a
// restart after kill -9 does not load records stored (and perhaps archived)
// long ago.
func TestJournalRotatesOldLoadedSegments(t *testing.T) {
	dir := t.TempDir()
	st := newFakeStore()
	j := openJournal(t, dir, JournalOptions{Store: st, SegmentAge: 20 * time.Millisecond, LoadEvery: time.Millisecond})
	if err := j.Record(context.Background(), testEvent("r1")); err != nil {
		t.Fatal(err)
	}
	flush(t, j)
	first := segments(t, dir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(30 * time.Millisecond)
		j.nudge() // the loader looks again (as a new record would make it)
		if s := segments(t, dir); len(s) == 1 && s[0] != first[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("segment %v not replaced after SegmentAge: %v", first, segments(t, dir))
		}
	}
}

// A dead segment larger than one read (it grew while the database was
// down) loads whole, in batches, lines cut by chunk boundaries included.
func TestJournalReplaysALargeSegmentInChunks(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for i := range 8000 {
		b = appendLine(b, testEvent(fmt.Sprintf("r%05d", i)))
	}
	if len(b) < 2*readChunk {
		t.Fatalf("segment of %d bytes does not span several reads", len(b))
	}
	if err := os.WriteFile(filepath.Join(dir, databaseTag("")+"dead-000001"+segmentExt), b, 0o600); err != nil {
		t.Fatal(err)
	}
	st := newFakeStore()
	openJournal(t, dir, JournalOptions{Store: st, MaxBatch: 300})
	if st.count() != 8000 {
		t.Fatalf("loaded %d of 8000 records", st.count())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, batch := range st.batches {
		if len(batch) > 300 {
			t.Fatalf("a batch of %d records; MaxBatch is 300", len(batch))
		}
	}
}
