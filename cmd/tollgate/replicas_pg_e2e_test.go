package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tollgate/billing"
	"tollgate/inference/ollamatest"
	"tollgate/storage/postgres"
	"tollgate/storage/postgres/pgtest"
	"tollgate/storage/sqlite"
)

// Issue 16, the PostgreSQL half: several replicas on one PostgreSQL
// database, a SQLite deployment moved there, revocation reaching every
// replica within a second, and PostgreSQL going away.

// generate makes one native /generate call with key on r.
func generate(t *testing.T, r *running, key string) exchange {
	t.Helper()
	return send(t, nil, "POST", r.url+"/generate", `{"model":"tiny","prompt":"hi"}`, withKey(key))
}

// keyList is `tollgate keys list --json` on db, ids and prefixes and
// revocation, sorted.
func keyList(t *testing.T, db string) []string {
	t.Helper()
	var keys []struct {
		ID, Name, Prefix string
		RevokedAt        *time.Time `json:"revoked_at"`
	}
	out := cli(t, "keys", "list", "--json", "--db", db)
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("keys list --json printed %q: %v", out, err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, fmt.Sprintf("%s %s %s revoked=%v", k.ID, k.Name, k.Prefix, k.RevokedAt != nil))
	}
	slices.Sort(ids)
	return ids
}

// A deployment on SQLite (keys, a rotation, a revocation, usage) moves to
// PostgreSQL with tollgate migrate: the counts are printed and equal, the
// keys and usage read the same, the secrets keep working against a server
// on PostgreSQL, and a second run refuses the now non-empty target unless
// --replace.
func TestMigrateSQLiteToPostgresE2E(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewDatabase(t)
	fake := newFake(t)
	a := serveOn(t, fake)
	user := createKeyAt(t, time.Now, a.db, "--name", "user")
	oldID, old := createKeyWithID(t, a.db, "--name", "rotated")
	goneID, gone := createKeyWithID(t, a.db, "--name", "revoked")
	for range 3 {
		wantStatus(t, "generate on SQLite", generate(t, a, user), 200, nil)
	}
	wantStatus(t, "generate with the key to rotate", generate(t, a, old), 200, nil)
	var rotated struct{ Key string }
	if err := json.Unmarshal([]byte(cli(t, "keys", "rotate", oldID, "--grace", "1h", "--json", "--db", a.db)), &rotated); err != nil || rotated.Key == "" {
		t.Fatalf("keys rotate: %v", err)
	}
	cli(t, "keys", "revoke", goneID, "--db", a.db)
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	// The Stripe export had sent everything up to now, and has a batch
	// pending: migrate refuses until it is done.
	exported := time.Now().UTC().Truncate(time.Second)
	sdb, err := sqlite.Open(context.Background(), a.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdb.UpdateBilling(context.Background(), "stripe", func(s *billing.State) error {
		s.Cursor = billing.Cursor{Before: exported, Seq: 5}
		s.Pending = &billing.Plan{From: s.Cursor, To: billing.Cursor{Before: exported.Add(time.Minute), Seq: 9}, Interval: time.Minute}
		s.Owner, s.EventsSent = "host/:8080", 12
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	refused := runCLI(env(), "migrate", "--from", a.db, "--to", pg)
	if refused.err == nil || !strings.Contains(refused.err.Error(), "pending") {
		t.Fatalf("migrate with a billing batch pending = %v, want a refusal saying so", refused.err)
	}
	if _, err := sdb.UpdateBilling(context.Background(), "stripe", func(s *billing.State) error {
		s.Cursor, s.Pending = s.Pending.To, nil // the batch went through
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sdb.Close()

	r := mustCLI(t, env(), "migrate", "--from", a.db, "--to", pg)
	counts := map[string][2]int{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
		var name string
		var src, dst int
		if _, err := fmt.Sscan(line, &name, &src, &dst); err != nil {
			t.Fatalf("migrate printed %q: %v", line, err)
		}
		counts[name] = [2]int{src, dst}
	}
	for table, want := range map[string]int{"keys": 3, "key_secrets": 4, "usage": 4, "audit": 5} {
		if got := counts[table]; got != [2]int{want, want} {
			t.Errorf("migrate: %s sqlite/postgres = %v, want %d both (stdout:\n%s)", table, got, want, r.stdout)
		}
	}
	if strings.Contains(r.stderr+r.stdout, "@") {
		t.Errorf("migrate output shows the URL's credentials part:\n%s%s", r.stderr, r.stdout)
	}
	if got, want := keyList(t, pg), keyList(t, a.db); !slices.Equal(got, want) {
		t.Errorf("keys on PostgreSQL:\n%q\nwant, as on SQLite:\n%q", got, want)
	}
	gotUsage, wantUsage := exportUsage(t, pg), exportUsage(t, a.db)
	if len(gotUsage) != 4 || len(gotUsage) != len(wantUsage) {
		t.Fatalf("usage on PostgreSQL has %d records, SQLite %d, want 4", len(gotUsage), len(wantUsage))
	}
	for id, w := range wantUsage {
		if gotUsage[id] != w {
			t.Errorf("usage %s on PostgreSQL = %+v, want %+v", id, gotUsage[id], w)
		}
	}

	// The export's cursor moved over: every copied row it had exported is
	// below it (the late ones are covered in storage/transfer's tests).
	pdb, err := postgres.Open(context.Background(), pg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := pdb.BillingState(context.Background(), "stripe")
	var beyond int64 = -1
	if err == nil {
		err = pdb.Pool().QueryRow(context.Background(), `SELECT COUNT(*) FROM usage WHERE txid >= $1::text::xid8`,
			fmt.Sprint(st.Cursor.Seq)).Scan(&beyond)
	}
	pdb.Close()
	if err != nil || !st.Cursor.Before.Equal(exported.Add(time.Minute)) || st.Pending != nil || st.EventsSent != 12 || st.Owner != "" || beyond != 0 {
		t.Fatalf("billing state on PostgreSQL = %+v (%v), %d copied rows at or past its seq; want the cursor at %v past every copied row, nothing pending", st, err, beyond, exported.Add(time.Minute))
	}

	// The secrets themselves moved: a server on PostgreSQL knows them.
	b := serveOn(t, fake, "--db", pg)
	wantStatus(t, "user's key on PostgreSQL", generate(t, b, user), 200, nil)
	wantStatus(t, "rotated key's new secret", generate(t, b, rotated.Key), 200, nil)
	wantStatus(t, "rotated key's old secret, in its grace period", generate(t, b, old), 200, nil)
	wantError(t, "revoked key", generate(t, b, gone), 401, "key_revoked")
	// A key made on PostgreSQL after the copy gets a fresh audit id.
	createKeyAt(t, time.Now, pg, "--name", "after")

	again := runCLI(env(), "migrate", "--from", a.db, "--to", pg)
	if again.err == nil || !strings.Contains(again.err.Error(), "not empty") || !strings.Contains(again.err.Error(), "--replace") {
		t.Fatalf("a second migrate into a non-empty target = %v, want a refusal naming --replace", again.err)
	}
	if n := len(keyList(t, pg)); n != 4 {
		t.Fatalf("the refused migrate changed the target: %d keys, want 4", n)
	}
	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, env(), "migrate", "--from", a.db, "--to", pg, "--replace")
	if got, want := keyList(t, pg), keyList(t, a.db); !slices.Equal(got, want) {
		t.Errorf("after --replace, keys on PostgreSQL:\n%q\nwant:\n%q", got, want)
	}
}

// Two replicas on one PostgreSQL database: a revocation on A, a rotation
// on A, and a revocation through the CLI are refused on B (whose cache
// holds the key as good for 10 s) within a second.
func TestRevocationReachesEveryReplicaWithinASecondE2E(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewDatabase(t)
	fake := newFake(t)
	admin := createKeyAt(t, time.Now, pg, "--name", "admin", "--scopes", "admin")
	a := serveOn(t, fake, "--db", pg)
	b := serveOn(t, fake, "--db", pg)
	for _, r := range []*running{a, b} {
		eventually(t, 5*time.Second, "listening for key changes", func() bool {
			return strings.Contains(r.out.String(), "listening for key changes")
		})
	}
	models := func(r *running, key string) exchange { return send(t, nil, "GET", r.url+"/models", "", withKey(key)) }
	// refusedWithin polls B until key is refused with code, and reports how long it took.
	refusedWithin := func(what, key, code string, start time.Time) {
		t.Helper()
		for {
			x := models(b, key)
			if x.status == 401 {
				wantError(t, what, x, 401, code)
				took := time.Since(start)
				t.Logf("%s: refused on B after %s", what, took.Round(time.Millisecond))
				if took > time.Second {
					t.Errorf("%s: refused on B only after %s, want within 1s", what, took)
				}
				return
			}
			if x.status != 200 || time.Since(start) > 5*time.Second {
				t.Fatalf("%s: B answered %d after %s: %s", what, x.status, time.Since(start), x.body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	id1, k1 := createKeyWithID(t, pg, "--name", "revoked-on-a")
	wantStatus(t, "k1 on B (cached there)", models(b, k1), 200, nil)
	start := time.Now()
	wantStatus(t, "revoke k1 on A", send(t, nil, "POST", a.url+"/admin/keys/"+id1+"/revoke", "", withKey(admin)), 200, nil)
	wantError(t, "k1 on A, at once", models(a, k1), 401, "key_revoked")
	refusedWithin("revoked through A's API", k1, "key_revoked", start)

	id2, k2 := createKeyWithID(t, pg, "--name", "rotated-on-a")
	wantStatus(t, "k2 on B (cached there)", models(b, k2), 200, nil)
	start = time.Now()
	wantStatus(t, "rotate k2 on A with no grace", send(t, nil, "POST", a.url+"/admin/keys/"+id2+"/rotate", `{"grace":"0s"}`, withKey(admin)), 200, nil)
	refusedWithin("rotated through A's API", k2, "key_expired", start)

	id3, k3 := createKeyWithID(t, pg, "--name", "revoked-by-cli")
	wantStatus(t, "k3 on A (cached there)", models(a, k3), 200, nil)
	wantStatus(t, "k3 on B (cached there)", models(b, k3), 200, nil)
	start = time.Now()
	cli(t, "keys", "revoke", id3, "--db", pg)
	refusedWithin("revoked through the CLI", k3, "key_revoked", start)
	wantError(t, "k3 on A after the CLI revoke", models(a, k3), 401, "key_revoked")
}

// privatePostgres starts a PostgreSQL server of the test's own (one the
// test may stop), as scripts/test-services.sh does, and returns its URL and
// a function that stops or starts it. Skipped (failed under
// TOLLGATE_REQUIRE_SERVICES=1) when PostgreSQL is not installed.
func privatePostgres(t *testing.T) (url string, ctl func(action string)) {
	t.Helper()
	pgtest.ServerURL(t) // the same skip rule as the shared server
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL's pg_ctl is not installed (apt-get install postgresql)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "tollgate-pgtest.")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	asPG := func(name string, args ...string) *exec.Cmd {
		if os.Geteuid() == 0 {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, name)}, args...)...)
		}
		return exec.Command(filepath.Join(bin, name), args...)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chown", u.Username+":", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	if out, err := asPG("initdb", "-D", dir+"/data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctl = func(action string) {
		t.Helper()
		args := []string{"-D", dir + "/data", "-w", "-t", "30", "-l", dir + "/log"}
		switch action {
		case "start":
			args = append(args, "start", "-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", port, dir))
		case "stop":
			args = append(args, "-m", "immediate", "stop")
		}
		if out, err := asPG("pg_ctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("pg_ctl %s: %v\n%s", action, err, out)
		}
	}
	ctl("start")
	t.Cleanup(func() { _ = asPG("pg_ctl", "-D", dir+"/data", "-m", "immediate", "stop").Run() })
	return fmt.Sprintf("postgres://postgres:not-shown-pw@127.0.0.1:%d/postgres?sslmode=disable", port), ctl
}

// PostgreSQL goes away under a running replica: a key it has not seen is a
// 503 database_unavailable naming PostgreSQL and where it is (never the
// password), a cached key's answer is withheld because its usage cannot be
// recorded (503, nothing billed), /readyz says which database; when
// PostgreSQL is back, so is the service, and the usage rows are exactly the
// answers that were delivered.
// With --usage-journal off, an answer whose record cannot reach PostgreSQL
// is withheld; keys PostgreSQL cannot check are refused naming it.
func TestPostgresDownIs503NamingItE2E(t *testing.T) {
	t.Parallel()
	pg, ctl := privatePostgres(t)
	addr := strings.Split(strings.Split(pg, "@")[1], "/")[0]
	fake := newFake(t)
	cached := createKeyAt(t, time.Now, pg, "--name", "cached")
	fresh := createKeyAt(t, time.Now, pg, "--name", "fresh")
	// Without the journal: an answer waits for its record's commit.
	r := serveOn(t, fake, "--db", pg, "--record-timeout", "2s", "--usage-journal", "off")
	var ok struct{ ID string }
	wantStatus(t, "generate while PostgreSQL is up", generate(t, r, cached), 200, &ok)

	// A request in flight when PostgreSQL goes: its answer cannot be
	// recorded, so it is withheld.
	hold := make(chan struct{})
	fake.SetFault(ollamatest.Fault{Hold: hold})
	inflight := make(chan exchange, 1)
	go func() { inflight <- generate(t, r, cached) }()
	eventually(t, 10*time.Second, "the request reaches Ollama", func() bool { return fake.InFlight() == 1 })
	ctl("stop")
	close(hold)
	fake.SetFault(ollamatest.Fault{})
	held := <-inflight
	wantError(t, "an answer whose usage cannot be recorded", held, 503, "metering_unavailable")
	if strings.Contains(string(held.body), "\"text\"") {
		t.Fatalf("an answer was released without its usage record: %s", held.body)
	}

	x := generate(t, r, fresh)
	d := wantError(t, "a key not in the cache while PostgreSQL is down", x, 503, "database_unavailable")
	if want := "PostgreSQL at " + addr + " is not reachable"; d.Message != want {
		t.Errorf("message = %q, want %q", d.Message, want)
	}
	if x.header.Get("Retry-After") == "" {
		t.Error("503 database_unavailable without Retry-After")
	}
	// The cache was dropped when the notification connection went: the
	// cached key is looked up again, and refused the same way, or (if the
	// listener has not noticed yet) its answer is withheld unrecorded.
	x = generate(t, r, cached)
	if x.status != 503 {
		t.Fatalf("a cached key while PostgreSQL is down: %d %s, want 503", x.status, x.body)
	}
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(x.body, &e)
	if e.Error.Code != "database_unavailable" && e.Error.Code != "metering_unavailable" {
		t.Errorf("cached key: code %q, want database_unavailable or metering_unavailable", e.Error.Code)
	}
	if strings.Contains(string(x.body), "\"text\"") {
		t.Errorf("an answer was released without its usage record: %s", x.body)
	}
	ready := send(t, nil, "GET", r.url+"/readyz", "")
	if ready.status != 503 || !strings.Contains(string(ready.body), "PostgreSQL at "+addr+" is not reachable") {
		t.Errorf("/readyz = %d %s, want 503 naming PostgreSQL at %s", ready.status, ready.body, addr)
	}
	for _, out := range []string{string(x.body), string(ready.body), r.out.String()} {
		if strings.Contains(out, "not-shown-pw") {
			t.Fatalf("the password appears in an answer or the log")
		}
	}

	ctl("start")
	eventually(t, 10*time.Second, "service back with PostgreSQL", func() bool {
		return generate(t, r, fresh).status == 200
	})
	wantStatus(t, "cached key after PostgreSQL is back", generate(t, r, cached), 200, nil)
	rows := exportUsage(t, pg)
	billed := 0
	for _, row := range rows {
		if row.Status == 200 {
			billed++
		}
	}
	if billed != 3 {
		t.Errorf("%d usage rows with status 200, want 3 (the delivered answers only): %+v", billed, rows)
	}
	if row, found := rows[ok.ID]; !found || row.Status != 200 {
		t.Errorf("the first answer's usage row %s = %+v, %v", ok.ID, row, found)
	}
}

// migrate's mistakes are usage errors (exit 2) that say what is wrong, and
// a missing source file is named, before any database is touched.
func TestMigrateUsageErrors(t *testing.T) {
	t.Parallel()
	pg := "postgres://u:pw@127.0.0.1:1/db"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--to", pg}, "--from"},
		{[]string{"migrate", "--from", "x.db"}, "--to"},
		{[]string{"migrate", "--from", "x.db", "--to", "other.db"}, "postgres://"},
		{[]string{"migrate", "--from", pg, "--to", pg}, "SQLite file"},
		{[]string{"migrate", "--from", "x.db", "--to", pg, "extra"}, "extra"},
	} {
		r := runCLI(env(), tc.args...)
		if exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("tollgate %s = %v (exit %d), want a usage error naming %q", strings.Join(tc.args, " "), r.err, exitCode(r.err), tc.want)
		}
	}
	missing := filepath.Join(t.TempDir(), "nope.db")
	r := runCLI(env(), "migrate", "--from", missing, "--to", pg)
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), missing) || !strings.Contains(r.err.Error(), "does not exist") {
		t.Errorf("migrate from a missing file = %v", r.err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("migrate created the missing source file")
	}
}

// Two replica processes on one PostgreSQL database under load; one is
// killed with SIGKILL: every answer either delivered has its usage row, and
// the other replica goes on serving.
func TestSIGKILLOfOneReplicaLosesNoDeliveredRecordE2E(t *testing.T) {
	pg := pgtest.NewDatabase(t)
	fake := newFake(t, ollamatest.WithoutRecording())
	keyID, key := createKeyWithID(t, pg, "--name", "load")
	a := startBinaryOn(t, fake, pg)
	b := startBinaryOn(t, fake, pg)
	hc := clientFrom(t, "127.0.0.1", 32)

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		mu        sync.Mutex
		received  []string
		failuresB []string
		wg        sync.WaitGroup
		killed    atomic.Bool
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(received) }
	for i := range 12 {
		p := a
		if i%2 == 1 {
			p = b
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				id, err := generateID(ctx, hc, p.url, key)
				mu.Lock()
				switch {
				case err == nil:
					received = append(received, id)
				case p == b && ctx.Err() == nil:
					failuresB = append(failuresB, err.Error())
				case p == a && !killed.Load():
					failuresB = append(failuresB, "A before the kill: "+err.Error())
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	eventually(t, 30*time.Second, "a second of load", func() bool { return count() >= 200 && time.Since(start) >= time.Second })
	killed.Store(true)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.wait(t, 10*time.Second)
	atKill := count()
	eventually(t, 30*time.Second, "B serving on after A's death", func() bool { return count() >= atKill+50 })
	stopLoad()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failuresB) > 0 {
		t.Fatalf("%d requests failed that should not have, e.g. %s", len(failuresB), failuresB[0])
	}
	rows := exportUsage(t, pg)
	missing := 0
	for _, id := range received {
		if r, ok := rows[id]; !ok || r.Status != 200 || r.KeyID != keyID {
			missing++
			if missing <= 5 {
				t.Errorf("delivered response %s has record %+v (found %v)", id, r, ok)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d delivered responses have no record", missing, len(received))
	}
	t.Logf("%d responses delivered (%d when A was killed), %d records", len(received), atKill, len(rows))
}

// Two replicas on one PostgreSQL database behave as one service: an
// Idempotency-Key answered on A is replayed on B, usage and the audit trail
// read the same from both, and a job submitted on A runs once, calls back
// once (signed), and reads as done on B.
func TestTwoReplicasShareStateOnPostgresE2E(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewDatabase(t)
	fake := newFake(t)
	callbacks := make(chan []byte, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		callbacks <- b
	}))
	t.Cleanup(rcv.Close)
	a := serveOn(t, fake, "--db", pg, "--callback-allow-net", "127.0.0.0/8")
	b := serveOn(t, fake, "--db", pg, "--callback-allow-net", "127.0.0.0/8")
	id, key := createKeyWithID(t, pg, "--name", "shared", "--scopes", "generate,admin")

	body := `{"model":"tiny","prompt":"hi"}`
	var first, again struct{ ID, Text string }
	wantStatus(t, "generate on A with an Idempotency-Key",
		send(t, nil, "POST", a.url+"/generate", body, withKey(key), withHeader("Idempotency-Key", "order-1")), 200, &first)
	x := send(t, nil, "POST", b.url+"/generate", body, withKey(key), withHeader("Idempotency-Key", "order-1"))
	wantStatus(t, "the same Idempotency-Key on B", x, 200, &again)
	if again.ID != first.ID || x.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("B answered %+v (replayed %q), want A's answer %+v replayed", again, x.header.Get("Idempotent-Replayed"), first)
	}

	var usage struct{ Totals struct{ Requests int64 } }
	for _, r := range []*running{a, b} {
		wantStatus(t, "GET /usage", send(t, nil, "GET", r.url+"/usage", "", withKey(key)), 200, &usage)
		if usage.Totals.Requests != 1 {
			t.Errorf("%s: /usage says %d requests, want 1 (one billed answer, one replay)", r.url, usage.Totals.Requests)
		}
	}

	if status := postJob(t, a.url, key, map[string]any{"endpoint": "generate",
		"request": map[string]any{"model": "tiny", "prompt": "hi"}, "callback_url": rcv.URL}); status != http.StatusAccepted {
		t.Fatalf("POST /jobs on A: %d", status)
	}
	var cb struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	select {
	case got := <-callbacks:
		if err := json.Unmarshal(got, &cb); err != nil || cb.Status != "succeeded" {
			t.Fatalf("callback %s (%v)", got, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no callback within 15s")
	}
	var job struct{ Status string }
	wantStatus(t, "the job read on B", send(t, nil, "GET", b.url+"/jobs/"+cb.ID, "", withKey(key)), 200, &job)
	if job.Status != "succeeded" {
		t.Errorf("job on B: %q, want succeeded", job.Status)
	}
	select {
	case extra := <-callbacks:
		t.Errorf("a second callback: %s", extra)
	case <-time.After(300 * time.Millisecond):
	}
	if n := len(exportUsage(t, pg)); n != 2 {
		t.Errorf("%d usage rows, want 2 (the generate and the job)", n)
	}
	var audit struct{ Entries []struct{ Action string } }
	wantStatus(t, "audit on B", send(t, nil, "GET", b.url+"/admin/audit?key_id="+id, "", withKey(key)), 200, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Action != "key.create" {
		t.Errorf("audit on B = %+v, want the key's creation", audit)
	}
}

// --db picks the store by its form: a postgres:// or postgresql:// URL is
// PostgreSQL, anything else a SQLite file (a sqlite: prefix is dropped);
// messages name PostgreSQL without user or password.
func TestDBSelection(t *testing.T) {
	t.Parallel()
	for dsn, pg := range map[string]bool{
		"postgres://u:p@h:5432/d": true, "POSTGRESQL://h/d": true, "tollgate.db": false,
		"sqlite:tollgate.db": false, "/var/lib/tollgate/postgres.db": false,
	} {
		if isPostgres(dsn) != pg {
			t.Errorf("isPostgres(%q) = %v", dsn, !pg)
		}
	}
	if got := dbName("postgres://tollgate:s3cret@db.internal:5432/tollgate?sslmode=require"); got != "PostgreSQL at db.internal:5432/tollgate" {
		t.Errorf("dbName = %q", got)
	}
	path := filepath.Join(t.TempDir(), "prefixed.db")
	mustCLI(t, env(), "keys", "create", "--db", "sqlite:"+path, "--name", "p")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("keys create --db sqlite:%s made no file there: %v", path, err)
	}
}

// With the usage journal (the default), PostgreSQL going away does not cost
// an answer already being computed: it is delivered and billed, its record
// waits in the journal, and it reaches PostgreSQL, once, when it is back.
func TestPostgresDownJournalKeepsTheAnswerE2E(t *testing.T) {
	t.Parallel()
	pg, ctl := privatePostgres(t)
	fake := newFake(t)
	key := createKeyAt(t, time.Now, pg, "--name", "journaled")
	r := serveOn(t, fake, "--db", pg)
	wantStatus(t, "generate while PostgreSQL is up", generate(t, r, key), 200, nil)

	hold := make(chan struct{})
	fake.SetFault(ollamatest.Fault{Hold: hold})
	inflight := make(chan exchange, 1)
	go func() { inflight <- generate(t, r, key) }()
	eventually(t, 10*time.Second, "the request reaches Ollama", func() bool { return fake.InFlight() == 1 })
	ctl("stop")
	close(hold)
	fake.SetFault(ollamatest.Fault{})
	var answer struct {
		ID    string
		Usage struct {
			TotalTokens int64 `json:"total_tokens"`
		}
	}
	wantStatus(t, "an answer finished while PostgreSQL is down", <-inflight, 200, &answer)

	ctl("start")
	eventually(t, 20*time.Second, "the journaled record reaches PostgreSQL", func() bool {
		var b bytes.Buffer
		if err := run(context.Background(), []string{"usage", "export", "--db", pg, "--format", "json", "--usage-journal", t.TempDir()}, env(), time.Now, &b, io.Discard); err != nil {
			return false // the CLI reads PostgreSQL only (an empty journal folder): wait for the server's loader
		}
		return strings.Contains(b.String(), answer.ID)
	})
	rows := exportUsage(t, pg)
	if row := rows[answer.ID]; row.Status != 200 || row.TotalTokens != answer.Usage.TotalTokens {
		t.Fatalf("the answer delivered while PostgreSQL was down has record %+v; want status 200, %d tokens", row, answer.Usage.TotalTokens)
	}
	if len(rows) != 2 {
		t.Fatalf("%d usage rows, want 2 (one per answer): %+v", len(rows), rows)
	}
}
