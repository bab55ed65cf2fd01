package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/storage/sqlite"
)

// keyEnv is a real database with a verifier and a key manager on one clock.
type keyEnv struct {
	db    *sqlite.DB
	clock *authtest.Clock
	v     *auth.Verifier
	keys  *auth.Keys
}

func newKeyEnv(t *testing.T, opts auth.VerifierOptions) *keyEnv {
	t.Helper()
	e := &keyEnv{db: openTest(t), clock: authtest.NewClock(time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.UTC))}
	opts.Now = e.clock.Now
	e.v = auth.NewVerifier(e.db, opts)
	e.keys = auth.NewKeys(e.db, e.v, e.clock.Now)
	return e
}

func (e *keyEnv) create(t *testing.T, spec auth.Spec) (auth.Key, string) {
	t.Helper()
	k, secret, err := e.keys.Create(context.Background(), auth.ActorCLI, spec)
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

func (e *keyEnv) verify(t *testing.T, secret string, want error) auth.Key {
	t.Helper()
	k, err := e.v.Verify(context.Background(), secret)
	if !errors.Is(err, want) || (want == nil && err != nil) {
		t.Fatalf("Verify = %v, want %v", err, want)
	}
	return k
}

func (e *keyEnv) actions(t *testing.T, keyID string) []string {
	t.Helper()
	entries, err := e.db.Audit(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range entries {
		out = append(out, a.Actor+" "+a.Action)
	}
	return out
}

func TestKeyRoundTripsEveryField(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{})
	ctx := context.Background()
	spec := auth.Spec{
		Name:      "acme billing",
		Scopes:    []auth.Scope{auth.ScopeGenerate, auth.ScopeAdmin},
		Models:    []string{"llama3.2", "nomic-embed-text"},
		Plan:      "pro",
		Limits:    auth.Limits{RequestsPerSecond: 2.5, Burst: 5, TokensPerMinute: 1000, MaxConcurrent: 2, MonthlyTokens: 1e6, MonthlyRequests: 5000},
		ExpiresAt: e.clock.Now().Add(720 * time.Hour),
	}
	created, secret := e.create(t, spec)
	got, err := e.db.KeyByID(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("stored key differs:\n got %+v\nwant %+v", got, created)
	}
	cred, err := e.db.Credential(ctx, auth.Hash(secret))
	if err != nil || !reflect.DeepEqual(cred.Key, created) || !cred.SecretExpiresAt.IsZero() {
		t.Fatalf("Credential = %+v, %v", cred, err)
	}
	list, err := e.db.ListKeys(ctx)
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], created) {
		t.Fatalf("ListKeys = %+v, %v", list, err)
	}
	if _, err := e.db.KeyByID(ctx, "key_missing"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("KeyByID(missing) = %v", err)
	}
	other, _ := auth.Generate()
	if _, err := e.db.Credential(ctx, auth.Hash(other)); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("Credential(unknown) = %v", err)
	}
}

func TestKeyLifecycle(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{CacheTTL: time.Hour})
	ctx := context.Background()
	k, old := e.create(t, auth.Spec{Name: "a"})
	e.verify(t, old, nil)

	// Rotate with a grace period: both work until it ends, then only the new.
	rk, fresh, err := e.keys.Rotate(ctx, k.ID, k.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rk.ID != k.ID || rk.Prefix != auth.DisplayPrefix(fresh) {
		t.Fatalf("rotated = %+v", rk)
	}
	e.verify(t, old, nil)
	e.verify(t, fresh, nil)
	e.clock.Advance(24*time.Hour - time.Nanosecond)
	e.verify(t, old, nil)
	e.clock.Advance(time.Nanosecond)
	e.verify(t, old, auth.ErrExpired)
	e.verify(t, fresh, nil)

	// A second rotation with a longer grace must not revive the first
	// secret: it deletes it, its grace being over.
	_, third, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.verify(t, old, auth.ErrUnknown)
	e.verify(t, fresh, nil)
	e.verify(t, third, nil)

	if _, err := e.keys.Revoke(ctx, auth.ActorCLI, k.ID); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fresh, third} {
		e.verify(t, s, auth.ErrRevoked)
	}
	if _, _, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 0); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("rotate revoked = %v", err)
	}
	want := []string{"cli key.create", k.ID + " key.rotate", "cli key.rotate", "cli key.revoke"}
	if got := e.actions(t, k.ID); !reflect.DeepEqual(got, want) {
		t.Fatalf("audit = %v, want %v", got, want)
	}
	if _, err := e.keys.Revoke(ctx, auth.ActorCLI, "key_missing"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("revoke missing = %v", err)
	}
}

func TestKeyExpiry(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{CacheTTL: time.Hour})
	_, secret := e.create(t, auth.Spec{Name: "a", ExpiresAt: e.clock.Now().Add(time.Hour)})
	e.verify(t, secret, nil)
	e.clock.Advance(time.Hour)
	e.verify(t, secret, auth.ErrExpired)
}

func TestUpdateKey(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{CacheTTL: time.Hour})
	ctx := context.Background()
	k, secret := e.create(t, auth.Spec{Name: "a", Models: []string{"m1"}})
	e.verify(t, secret, nil)
	models := []string{}
	plan := "free"
	lim := auth.Limits{MonthlyTokens: 10}
	uk, err := e.keys.Update(ctx, "key_admin", k.ID, auth.Patch{Models: &models, Plan: &plan, Limits: &lim})
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := e.db.KeyByID(ctx, k.ID)
	if !reflect.DeepEqual(uk, stored) || len(stored.Models) != 0 || stored.Plan != "free" || stored.Limits != lim {
		t.Fatalf("updated = %+v, stored = %+v", uk, stored)
	}
	if got := e.verify(t, secret, nil); !got.AllowsModel("m2") {
		t.Fatal("verifier kept the old model list")
	}
	bad := ""
	if _, err := e.keys.Update(ctx, "key_admin", k.ID, auth.Patch{Name: &bad}); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("invalid update = %v", err)
	}
	if _, err := e.keys.Update(ctx, "key_admin", "key_missing", auth.Patch{Plan: &plan}); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("update missing = %v", err)
	}
	want := []string{"cli key.create", "key_admin key.update"}
	if got := e.actions(t, k.ID); !reflect.DeepEqual(got, want) {
		t.Fatalf("audit = %v, want %v (a rejected update must write nothing)", got, want)
	}
}

func TestLastUsedFlush(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{})
	ctx := context.Background()
	k, secret := e.create(t, auth.Spec{Name: "a"})
	e.clock.Advance(time.Minute)
	e.verify(t, secret, nil)
	usedAt := e.clock.Now()
	if got, _ := e.db.KeyByID(ctx, k.ID); !got.LastUsedAt.IsZero() {
		t.Fatal("Verify wrote last_used_at without a flush")
	}
	if err := e.v.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.db.KeyByID(ctx, k.ID); !got.LastUsedAt.Equal(usedAt) {
		t.Fatalf("last used = %v, want %v", got.LastUsedAt, usedAt)
	}
	// Older times and unknown ids change nothing.
	err := e.db.TouchLastUsed(ctx, map[string]time.Time{k.ID: usedAt.Add(-time.Hour), "key_missing": usedAt})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.db.KeyByID(ctx, k.ID); !got.LastUsedAt.Equal(usedAt) {
		t.Fatalf("last used moved back to %v", got.LastUsedAt)
	}
}

func TestConcurrentVerifyBurst(t *testing.T) {
	// Short cache so the burst reaches SQLite, not just the map.
	e := newKeyEnv(t, auth.VerifierOptions{CacheTTL: -1, NegativeTTL: -1})
	var secrets []string
	for i := 0; i < 5; i++ {
		_, s := e.create(t, auth.Spec{Name: "burst"})
		secrets = append(secrets, s)
	}
	unknown, _ := auth.Generate()
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := e.v.Verify(ctx, secrets[(g+i)%len(secrets)]); err != nil {
					t.Error(err)
					return
				}
				if _, err := e.v.Verify(ctx, unknown); !errors.Is(err, auth.ErrUnknown) {
					t.Errorf("unknown key: %v", err)
					return
				}
				if i%10 == 0 {
					if err := e.v.FlushLastUsed(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// Only hashes may reach the disk: grep the database, its WAL and shared
// memory file for every secret (and its random part) and find none.
func TestNoSecretAtRest(t *testing.T) {
	e := newKeyEnv(t, auth.VerifierOptions{})
	ctx := context.Background()
	var secrets, hashes []string
	for i := 0; i < 5; i++ {
		k, s := e.create(t, auth.Spec{Name: "leak check"})
		_, s2, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e.verify(t, s, nil)
		secrets = append(secrets, s, s2)
		hashes = append(hashes, auth.Hash(s), auth.Hash(s2))
	}
	if err := e.v.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(stage string) {
		var all []byte
		for _, suffix := range []string{"", "-wal", "-shm"} {
			b, err := os.ReadFile(e.db.Path() + suffix)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if stage == "open" && suffix == "-wal" && len(b) == 0 {
				t.Fatal("no WAL content to check while the database is open")
			}
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s[auth.DisplayPrefixLen:])) {
					t.Fatalf("%s: file %s contains a key secret", stage, e.db.Path()+suffix)
				}
			}
			all = append(all, b...)
		}
		for _, h := range hashes {
			if !bytes.Contains(all, []byte(h)) {
				t.Fatalf("%s: hash not found on disk: the check itself is broken", stage)
			}
		}
	}
	check("open")
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	check("closed")
}

// BenchmarkVerifyMissSQLite is a verification that always reaches SQLite.
func BenchmarkVerifyMissSQLite(b *testing.B) {
	db, err := sqlite.Open(context.Background(), b.TempDir()+"/b.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	_, secret, err := auth.NewKeys(db, nil, nil).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	v := auth.NewVerifier(db, auth.VerifierOptions{CacheTTL: -1})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), secret); err != nil {
			b.Fatal(err)
		}
	}
}
