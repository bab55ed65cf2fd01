package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/storage/sqlite"
)

// Issue 12: rotation against the database. Self-rotation is checked inside
// the rotating transaction; a key keeps at most two secrets; secrets whose
// grace is over are deleted; self-rotations are limited per key.

// secretRows counts key_secrets rows of keyID, through a connection of its
// own (as another instance would read them).
func secretRows(t *testing.T, db *sqlite.DB, keyID string) int {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+db.Path()+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var n int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM key_secrets WHERE key_id = ?`, keyID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// valid returns the indexes of the secrets the database still accepts.
func valid(t *testing.T, db *sqlite.DB, now func() time.Time, secrets []string) []int {
	t.Helper()
	v := auth.NewVerifier(db, auth.VerifierOptions{CacheTTL: -1, NegativeTTL: -1, Now: now})
	var out []int
	for i, s := range secrets {
		if _, err := v.Verify(context.Background(), s); err == nil {
			out = append(out, i)
		}
	}
	return out
}

// The figures: 300 rotations 41 s apart, each with 7 days' grace.
// After every one the key has two rows: its current secret and the one it
// replaced; nothing older works.
func TestRotationsKeepTwoSecrets(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{})
	ctx := context.Background()
	k, first := e.create(t, auth.Spec{Name: "a"})
	secrets := []string{first}
	for i := range 300 {
		_, s, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 7*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
		if n := secretRows(t, e.db, k.ID); n != 2 {
			t.Fatalf("after rotation %d: %d secrets stored, want 2", i+1, n)
		}
		e.clock.Advance(41 * time.Second)
	}
	if got := valid(t, e.db, e.clock.Now, secrets); len(got) != 2 || got[0] != 299 || got[1] != 300 {
		t.Fatalf("valid secrets %v of 0..300, want 299 and 300", got)
	}
}

// Rotating twice cuts the first old secret's grace (README says so); a
// secret whose grace is over stays until the next rotation deletes it, and
// says "expired" until then.
func TestRotationEndsOlderGraceAndPrunes(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{CacheTTL: time.Hour})
	ctx := context.Background()
	k, s0 := e.create(t, auth.Spec{Name: "a"})
	_, s1, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.verify(t, s0, nil)
	_, s2, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.verify(t, s0, auth.ErrUnknown) // its grace cut short: deleted
	e.verify(t, s1, nil)
	e.verify(t, s2, nil)

	e.clock.Advance(24 * time.Hour)
	e.verify(t, s1, auth.ErrExpired)
	if n := secretRows(t, e.db, k.ID); n != 2 {
		t.Fatalf("%d rows before the next rotation, want 2", n)
	}
	_, s3, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.verify(t, s1, auth.ErrUnknown) // pruned
	e.verify(t, s2, auth.ErrExpired) // grace 0: ended now, kept as the previous one
	e.verify(t, s3, nil)
	if n := secretRows(t, e.db, k.ID); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// instance is a second process's view of the same file: its own
// connection pool, verifier and key manager, on the same clock.
func (e *keyEnv) instance(t *testing.T, opts auth.VerifierOptions) *keyEnv {
	t.Helper()
	db, err := sqlite.Open(context.Background(), e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	opts.Now = e.clock.Now
	o := &keyEnv{db: db, clock: e.clock, v: auth.NewVerifier(db, opts)}
	o.keys = auth.NewKeys(db, o.v, e.clock.Now)
	return o
}

func TestSelfRotationChecksTheStoreNotTheCache(t *testing.T) {
	a := newKeyEnv(t, auth.VerifierOptions{CacheTTL: time.Hour})
	b := a.instance(t, auth.VerifierOptions{CacheTTL: time.Hour})
	ctx := context.Background()
	k, leaked := a.create(t, auth.Spec{Name: "owner"})
	other, otherSecret := a.create(t, auth.Spec{Name: "other"})
	b.verify(t, leaked, nil) // cached on B as current

	_, owner, err := a.keys.RotateSelf(ctx, k.ID, leaked, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.verify(t, leaked, nil) // B's cache has not seen it: the documented lag
	before := b.actions(t, k.ID)
	for name, secret := range map[string]string{"superseded": leaked, "another key's": otherSecret, "unknown": "tg_nope"} {
		if _, _, err := b.keys.RotateSelf(ctx, k.ID, secret, 0); !errors.Is(err, auth.ErrSuperseded) {
			t.Fatalf("self-rotation with the %s secret = %v, want ErrSuperseded", name, err)
		}
	}
	if got := b.actions(t, k.ID); len(got) != len(before) {
		t.Fatalf("refused rotations wrote audit entries: %v", got)
	}
	b.verify(t, leaked, auth.ErrExpired) // the refusal dropped B's stale entry
	a.verify(t, owner, nil)
	b.verify(t, owner, nil)

	if _, _, err := a.keys.RotateSelf(ctx, "key_missing", owner, 0); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("unknown id = %v", err)
	}
	if _, err := a.keys.Revoke(ctx, auth.ActorCLI, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.keys.RotateSelf(ctx, other.ID, otherSecret, 0); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("revoked key = %v", err)
	}
}

// Many holders of one secret rotate at once through two connection pools:
// the check and the change are one transaction, so exactly one wins and
// the others are told why (not "database is locked").
func TestConcurrentSelfRotationsOverTwoPools(t *testing.T) {
	a := newKeyEnv(t, auth.VerifierOptions{})
	b := a.instance(t, auth.VerifierOptions{})
	k, secret := a.create(t, auth.Spec{Name: "a"})
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		e := []*keyEnv{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = e.keys.RotateSelf(context.Background(), k.ID, secret, time.Hour)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, auth.ErrSuperseded):
			t.Fatalf("concurrent self-rotation: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d self-rotations succeeded, want 1", won)
	}
	if n := secretRows(t, a.db, k.ID); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// The limit is counted in the database (both pools see the same count);
// rotations by an admin or the CLI do not count and are not limited.
func TestSelfRotationLimitInTheStore(t *testing.T) {
	a := newKeyEnv(t, auth.VerifierOptions{})
	b := a.instance(t, auth.VerifierOptions{})
	ctx := context.Background()
	k, secret := a.create(t, auth.Spec{Name: "a"})
	start := a.clock.Now()
	for i := range auth.SelfRotateLimit {
		var err error
		if _, secret, err = []*keyEnv{a, b}[i%2].keys.RotateSelf(ctx, k.ID, secret, time.Hour); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
		a.clock.Advance(time.Minute)
	}
	_, _, err := a.keys.RotateSelf(ctx, k.ID, secret, time.Hour)
	var limit *auth.RotateLimitError
	if !errors.As(err, &limit) || limit.Limit != auth.SelfRotateLimit || limit.Window != auth.SelfRotateWindow ||
		limit.RetryAfter != start.Add(auth.SelfRotateWindow).Sub(a.clock.Now()) {
		t.Fatalf("over the limit: %v (%+v)", err, limit)
	}
	if _, secret, err = b.keys.Rotate(ctx, auth.ActorCLI, k.ID, time.Hour); err != nil {
		t.Fatalf("CLI rotation while the key is limited: %v", err)
	}
	a.clock.Advance(limit.RetryAfter - time.Nanosecond)
	if _, _, err := b.keys.RotateSelf(ctx, k.ID, secret, time.Hour); !errors.As(err, &limit) || limit.RetryAfter != time.Nanosecond {
		t.Fatalf("1 ns before the oldest leaves the window: %v", err)
	}
	a.clock.Advance(time.Nanosecond)
	if _, _, err := b.keys.RotateSelf(ctx, k.ID, secret, time.Hour); err != nil {
		t.Fatalf("once the oldest left the window: %v", err)
	}
}

// Databases written before rotations kept two secrets: opening one brings
// every key down to its current secret and the newest other one.
func TestMigrationKeepsTwoSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	ctx := context.Background()
	clock := authtest.NewClock(time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC))
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeys(db, nil, clock.Now)
	k, s0, err := keys.Create(ctx, auth.ActorCLI, auth.Spec{Name: "rotated often"})
	if err != nil {
		t.Fatal(err)
	}
	dup, d0, err := keys.Create(ctx, auth.ActorCLI, auth.Spec{Name: "two current secrets"})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Back to before the migration, with what the old code could leave:
	// four self-rotations with 7 days' grace, every replaced secret still
	// live; and, for the second key, a second current secret.
	raw, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`DROP INDEX key_secrets_current`)
	exec(`DELETE FROM schema_migrations WHERE version = 4`)
	until := clock.Now().Add(7 * 24 * time.Hour).UnixNano()
	exec(`UPDATE key_secrets SET expires_at = ? WHERE key_id = ?`, until, k.ID)
	add := func(keyID string, i int, expires any) string {
		s, _ := auth.Generate()
		exec(`INSERT INTO key_secrets(hash, key_id, prefix, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			auth.Hash(s), keyID, auth.DisplayPrefix(s), clock.Now().Add(time.Duration(i)*time.Minute).UnixNano(), expires)
		return s
	}
	secrets := []string{s0}
	for i := 1; i <= 4; i++ {
		var expires any = until
		if i == 4 {
			expires = nil
		}
		secrets = append(secrets, add(k.ID, i, expires))
	}
	d1 := add(dup.ID, 1, nil)
	clock.Advance(time.Hour)

	db, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := valid(t, db, clock.Now, secrets); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("valid after the migration: %v of 0..4, want 3 (in grace) and 4 (current)", got)
	}
	if got := valid(t, db, clock.Now, []string{d0, d1}); len(got) != 1 || got[0] != 1 {
		t.Fatalf("of two current secrets %v stayed valid, want the newer", got)
	}
	for _, id := range []string{k.ID, dup.ID} {
		if n := secretRows(t, db, id); n != 2 {
			t.Fatalf("%d rows after the migration, want 2", n)
		}
	}
	// The database now refuses a second current secret by itself.
	if _, err = raw.Exec(`UPDATE key_secrets SET expires_at = NULL WHERE key_id = ?`, k.ID); err == nil {
		t.Fatal("two current secrets for one key were accepted")
	}
}
