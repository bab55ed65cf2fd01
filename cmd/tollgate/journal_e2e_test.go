package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"tollgate/storage/postgres/pgtest"
)

// lockDB holds SQLite's write lock on db until the returned func is called,
// as a second instance, a VACUUM or a slow disk would.
func lockDB(t *testing.T, path string) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
			t.Error(err)
		}
		conn.Close()
		db.Close()
	}
}

// With the usage journal (the default), a locked database no longer holds
// answers back: they are delivered at once, billed at once against the
// quota, and their rows reach the database, once each, when it is free.
func TestJournalAnswersWhileTheDatabaseIsLocked(t *testing.T) {
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny")+"    price: {input_per_1k: 1, output_per_1k: 2}\n")
	r := startServe(t, env("TOLLGATE_MODELS", cat), "--record-timeout", "500ms")
	keyID, key := createKeyWithID(t, r.db, "--name", "journaled", "--monthly-requests", "3", "--monthly-tokens", "100000")

	unlock := lockDB(t, r.db)
	var delivered []outcome
	for i := range 3 {
		start := time.Now()
		o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`)
		if o.status != 200 || o.usage.TotalTokens == 0 {
			t.Fatalf("generate %d while the database is locked: %d %s", i, o.status, o.code)
		}
		if took := time.Since(start); took > 400*time.Millisecond {
			t.Errorf("generate %d took %s with the database locked: the answer waited for the database", i, took)
		}
		delivered = append(delivered, o)
	}
	// The quota counts the journaled answers although no row is committed.
	if o := postOutcome(http.DefaultClient, r.url+"/generate", key, `{"prompt":"hi"}`); o.status != 402 {
		t.Fatalf("4th request on a 3-request quota while the database is locked: %d %s; want 402", o.status, o.code)
	}
	unlock()

	got := getUsage(t, r.url, key) // reads after the journal has loaded
	var want int64
	for _, o := range delivered {
		want += o.usage.TotalTokens
	}
	if got.Totals.Requests != 3 || got.Totals.TotalTokens != want {
		t.Fatalf("GET /usage after the lock: %+v; want 3 requests, %d tokens", got.Totals, want)
	}
	rows := exportUsage(t, r.db, "--key", keyID)
	if n, tokens, _ := billedTotals(rows); n != 3 || tokens != want {
		t.Fatalf("usage rows: %d billed, %d tokens; want 3 and %d: %+v", n, tokens, want, rows)
	}
	for _, o := range delivered {
		if row, ok := rows[o.id]; !ok || row.Status != 200 || row.TotalTokens != o.usage.TotalTokens {
			t.Errorf("answer %s (usage %+v) has record %+v (found %v)", o.id, o.usage, row, ok)
		}
	}
}

// A journal a killed server left behind is loaded by the next start (and
// deleted), and the month's quota counts it.
func TestJournalLeftBehindIsLoadedAtStart(t *testing.T) {
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	dir := t.TempDir()
	db := filepath.Join(dir, "t.db")
	first := startServeOn(t, db, env("TOLLGATE_MODELS", cat))
	keyID, key := createKeyWithID(t, db, "--name", "left", "--monthly-requests", "2")
	first.stop(t)
	// A dead process's segment, as kill -9 leaves it: one answered request.
	ev := fmt.Sprintf("u1\t%q\t%q\t\"generate\"\t\"tiny\"\t\"native\"\t1\t3\t200\t1000\t0\t%d", "req_left_behind", keyID, time.Now().UnixNano())
	line := ev + "\t" + crc32cHex(ev) + "\n"
	sum := sha256.Sum256([]byte(journalIdentity(db)))
	seg := filepath.Join(db+".journal", "usage-"+hex.EncodeToString(sum[:4])+"-dead-000001.jnl")
	if err := os.MkdirAll(filepath.Dir(seg), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	second := startServeOn(t, db, env("TOLLGATE_MODELS", cat))
	if _, err := os.Stat(seg); !os.IsNotExist(err) {
		t.Fatalf("the dead process's segment is still there after start-up (%v)", err)
	}
	if o := postOutcome(http.DefaultClient, second.url+"/generate", key, `{"prompt":"hi"}`); o.status != 200 {
		t.Fatalf("second request of 2: %d %s", o.status, o.code)
	}
	if o := postOutcome(http.DefaultClient, second.url+"/generate", key, `{"prompt":"hi"}`); o.status != 402 {
		t.Fatalf("third request of 2 (one from the journal): %d %s; want 402", o.status, o.code)
	}
	if rows := exportUsage(t, db, "--key", keyID); rows["req_left_behind"].Status != 200 || len(rows) != 2 {
		t.Fatalf("rows after start-up: %+v", rows)
	}
}

// crc32cHex is a journal line's checksum of s.
func crc32cHex(s string) string {
	return fmt.Sprintf("%08x", crc32.Checksum([]byte(s), crc32.MakeTable(crc32.Castagnoli)))
}

// tollgate migrate first loads what a killed SQLite server left in its
// usage journal, so those delivered answers reach PostgreSQL too.
func TestMigrateCarriesTheJournal(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewDatabase(t)
	db := filepath.Join(t.TempDir(), "t.db")
	keyID, _ := createKeyWithID(t, db, "--name", "left")
	ev := fmt.Sprintf("u1\t%q\t%q\t\"generate\"\t\"tiny\"\t\"native\"\t1\t3\t200\t1000\t0\t%d", "req_in_journal", keyID, time.Now().UnixNano())
	sum := sha256.Sum256([]byte(journalIdentity(db)))
	seg := filepath.Join(db+".journal", "usage-"+hex.EncodeToString(sum[:4])+"-dead-000001.jnl")
	if err := os.MkdirAll(filepath.Dir(seg), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, []byte(ev+"\t"+crc32cHex(ev)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, env(), "migrate", "--from", db, "--to", pg)
	if rows := exportUsage(t, pg); rows["req_in_journal"].Status != 200 || len(rows) != 1 {
		t.Fatalf("usage in PostgreSQL after migrate: %+v; want the journaled request", rows)
	}
}

// The journal names a database the same however --db spells it, and two
// databases differently, so one's records never go to the other.
func TestJournalIdentity(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "t.db")
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	same := [][2]string{
		{real, link},
		{real, "sqlite:" + real},
		{"postgres://u:pw@db.example/billing", "postgres://other:pw2@db.example:5432/billing?sslmode=require"},
	}
	for _, p := range same {
		if a, b := journalIdentity(p[0]), journalIdentity(p[1]); a != b {
			t.Errorf("%q and %q: identities %q and %q differ", p[0], p[1], a, b)
		}
	}
	differ := [][2]string{
		{"postgres:///billing?host=/run/pg1", "postgres:///billing?host=/run/pg2"},
		{"postgres://db.example/billing", "postgres://db.example/other"},
		{"postgres://db.example:5432/billing", "postgres://db.example:5433/billing"},
	}
	for _, p := range differ {
		if a, b := journalIdentity(p[0]), journalIdentity(p[1]); a == b {
			t.Errorf("%q and %q: same identity %q", p[0], p[1], a)
		}
	}
	if id := journalIdentity("postgres://u:secretpw@db.example/billing"); strings.Contains(id, "secretpw") || strings.Contains(id, "u:") {
		t.Errorf("identity %q shows credentials", id)
	}
}
