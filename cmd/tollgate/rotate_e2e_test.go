package main

import (
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
)

// sharingDB starts another `tollgate serve` on r's database file, as a
// second host sharing it would, with its own fake Ollama and clock now.
func sharingDB(t *testing.T, now func() time.Time, r *running) *running {
	t.Helper()
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	b := startServeAt(t, now, env("TOLLGATE_MODELS", cat), "--db", r.db) // the last --db wins
	b.db = r.db
	return b
}

// Issue 12, item 2, as two processes would see it: the owner rotates on A;
// B still has the leaked secret cached as current; the attacker's
// self-rotation on B must be refused, and the owner's new secret must work
// on both, before and after B's cache lifetime.
func TestSelfRotateTakeoverAcrossInstancesE2E(t *testing.T) {
	t.Parallel()
	clock := authtest.NewClock(clockStart)
	a := serveOnFakeAt(t, clock.Now)
	b := sharingDB(t, clock.Now, a)
	leaked := createKeyAt(t, clock.Now, a.db, "--name", "owner")
	models := func(r *running, key string) exchange { return send(t, nil, "GET", r.url+"/models", "", withKey(key)) }
	rotate := func(r *running, key string) exchange {
		return send(t, nil, "POST", r.url+"/keys/self/rotate", `{"grace":"0s"}`, withKey(key))
	}

	wantStatus(t, "leaked secret on B (now cached there)", models(b, leaked), 200, nil)
	var owner createdKey
	wantStatus(t, "owner rotates on A", rotate(a, leaked), 200, &owner)
	wantError(t, "attacker self-rotates on B with the leaked secret", rotate(b, leaked), 403, "superseded_key")
	for _, when := range []string{"at once", "after B's cache lifetime"} {
		wantStatus(t, "owner's new secret on A "+when, models(a, owner.Key), 200, nil)
		wantStatus(t, "owner's new secret on B "+when, models(b, owner.Key), 200, nil)
		wantError(t, "leaked secret on A "+when, models(a, leaked), 401, "key_expired")
		wantError(t, "leaked secret on B "+when, models(b, leaked), 401, "key_expired")
		clock.Advance(auth.DefaultCacheTTL)
	}
}
