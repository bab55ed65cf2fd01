package handlers_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
)

// Issue 12, items 2 and 3: self-rotation when two instances share one
// database, and how many secrets rotations may leave alive. Each instance
// has its own verifier cache; both run on one hand-moved clock, so the
// cache lifetime passes only when a test says so.

var rotateStart = time.Date(2031, 3, 12, 9, 0, 0, 0, time.UTC)

type rotatedKey struct {
	Key  string   `json:"key"`
	Info auth.Key `json:"info"`
}

// twoInstances starts instances A and B over one SQLite file, in front of
// one fake Ollama, on one clock. a.key is a key with the default scopes.
func twoInstances(t *testing.T) (a, b *testServer, clock *authtest.Clock) {
	t.Helper()
	clock = authtest.NewClock(rotateStart)
	fake := newFakeOllama(t)
	cat := fakeCatalog(fake.URL, "2s")
	path := filepath.Join(t.TempDir(), "shared.db")
	a = newTestServer(t, cat, withDB(path), withClock(clock.Now))
	b = newTestServer(t, cat, withDB(path), withClock(clock.Now))
	return a, b, clock
}

func (ts *testServer) selfRotate(t *testing.T, secret, grace string) rotatedKey {
	t.Helper()
	var r rotatedKey
	ts.doJSON(t, "POST", "/keys/self/rotate", map[string]string{"grace": grace}, http.StatusOK, &r, "X-API-Key", secret)
	return r
}

func (ts *testServer) models(t *testing.T, secret string) {
	t.Helper()
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil, "X-API-Key", secret)
}

// rotations counts the key's rotations in the audit trail.
func rotations(t *testing.T, ts *testServer, keyID string) int {
	t.Helper()
	entries, err := ts.db.Audit(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == auth.ActionRotate {
			n++
		}
	}
	return n
}

// The takeover: the owner rotates on A; B still has the leaked secret in
// its cache, as current; the attacker asks B for a fresh secret with grace
// 0, which would hand them the key and cut the owner off. B must ask the
// database, not its cache, whether the secret is still the current one.
func TestSelfRotateTakeoverAcrossInstances(t *testing.T) {
	for _, ownerGrace := range []string{"0s", "1h"} {
		t.Run("owner grace "+ownerGrace, func(t *testing.T) {
			a, b, clock := twoInstances(t)
			leaked := a.key
			b.models(t, leaked) // B caches the secret as the key's current one

			owner := a.selfRotate(t, leaked, ownerGrace)
			b.doError(t, "POST", "/keys/self/rotate", map[string]string{"grace": "0s"},
				http.StatusForbidden, "superseded_key", nil, "X-API-Key", leaked)

			if ownerGrace == "0s" {
				// B learnt from the refusal that its cache is stale: the
				// leaked secret stops there at once, not a cache lifetime later.
				b.doError(t, "GET", "/models", nil, http.StatusUnauthorized, "key_expired", nil, "X-API-Key", leaked)
				a.doError(t, "GET", "/models", nil, http.StatusUnauthorized, "key_expired", nil, "X-API-Key", leaked)
			}
			for _, ts := range []*testServer{a, b} {
				ts.models(t, owner.Key)
			}
			clock.Advance(auth.DefaultCacheTTL)
			for _, ts := range []*testServer{a, b} {
				ts.models(t, owner.Key)
			}
			if n := rotations(t, a, owner.Info.ID); n != 1 {
				t.Fatalf("%d rotations in the audit trail, want only the owner's", n)
			}
			if ts := b.logLines(t, "refused self-rotation: the secret is no longer the key's current one", "key_id", owner.Info.ID); len(ts) != 1 {
				t.Errorf("B logged %d warnings about the refused takeover, want 1", len(ts))
			}
		})
	}
}

// Two holders of the same current secret (the owner and whoever leaked it)
// rotate at once, on both instances: exactly one gets a new secret. (With a
// grace period every request passes authentication, so each loser reaches
// the rotation and must be refused there.)
func TestConcurrentSelfRotationsOneWins(t *testing.T) {
	a, b, _ := twoInstances(t)
	leaked := a.key
	a.models(t, leaked)
	b.models(t, leaked)
	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		ts := []*testServer{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := ts.send(t.Context(), "POST", "/keys/self/rotate", `{"grace":"1h"}`, "X-API-Key", leaked)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	ok, refused := 0, 0
	for _, c := range codes {
		switch c {
		case http.StatusOK:
			ok++
		case http.StatusForbidden:
			refused++
		}
	}
	if ok != 1 || refused != n-1 {
		t.Fatalf("statuses %v: want one 200 and %d 403", codes, n-1)
	}
}

// The figures: rotations 41 s apart. The limit counts in the
// database, so rotations on A and on B add up; a new secret does not reset
// it; an admin is not limited; it lifts exactly when the oldest rotation
// leaves the window.
func TestSelfRotationLimit(t *testing.T) {
	a, b, clock := twoInstances(t)
	secret := a.key
	const step = 41 * time.Second
	for i := range auth.SelfRotateLimit {
		secret = []*testServer{a, b}[i%2].selfRotate(t, secret, "168h").Key
		clock.Advance(step)
	}
	wait := auth.SelfRotateWindow - auth.SelfRotateLimit*step
	for _, ts := range []*testServer{a, b} {
		resp, _ := ts.doError(t, "POST", "/keys/self/rotate", map[string]string{"grace": "0s"},
			http.StatusTooManyRequests, "rate_limited", []string{"rotated itself"}, "X-API-Key", secret)
		if got, want := resp.Header.Get("Retry-After"), strconv.Itoa(int(wait.Seconds())); got != want {
			t.Fatalf("Retry-After %q, want %q", got, want)
		}
	}
	a.models(t, secret) // a refused rotation changes nothing

	// An admin may still rotate the key; its new secret is as limited.
	admin := newAdmin(t, a, clock)
	id := rotatedKeyID(t, a, secret)
	var r rotatedKey
	a.doJSON(t, "POST", "/admin/keys/"+id+"/rotate", map[string]string{"grace": "1h"}, http.StatusOK, &r, "X-API-Key", admin)
	secret = r.Key
	b.doError(t, "POST", "/keys/self/rotate", nil, http.StatusTooManyRequests, "rate_limited", nil, "X-API-Key", secret)

	clock.Advance(wait - time.Nanosecond)
	b.doError(t, "POST", "/keys/self/rotate", nil, http.StatusTooManyRequests, "rate_limited", nil, "X-API-Key", secret)
	clock.Advance(time.Nanosecond)
	b.selfRotate(t, secret, "0s")
}

// 300 self-rotations, each with the longest grace, spaced to stay within
// the limit: only the newest secret and the one it replaced still work.
func TestManySelfRotationsLeaveTwoSecrets(t *testing.T) {
	a, _, clock := twoInstances(t)
	secrets := []string{a.key}
	for range 300 {
		secrets = append(secrets, a.selfRotate(t, secrets[len(secrets)-1], "168h").Key)
		clock.Advance(auth.SelfRotateWindow/auth.SelfRotateLimit + time.Second)
	}
	// A verifier without a cache: what the database says about each secret.
	v := auth.NewVerifier(a.db, auth.VerifierOptions{CacheTTL: -1, NegativeTTL: -1, Now: clock.Now})
	var valid []int
	for i, s := range secrets {
		if _, err := v.Verify(context.Background(), s); err == nil {
			valid = append(valid, i)
		}
	}
	if len(valid) != 2 || valid[0] != 299 || valid[1] != 300 {
		t.Fatalf("secrets still valid: %v of 0..300, want only 299 and 300", valid)
	}
}

// newAdmin creates an admin key in ts's database and returns its secret.
func newAdmin(t *testing.T, ts *testServer, clock *authtest.Clock) string {
	t.Helper()
	_, secret, err := auth.NewKeys(ts.db, nil, clock.Now).Create(context.Background(), auth.ActorCLI,
		auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// rotatedKeyID returns the id of the key secret belongs to.
func rotatedKeyID(t *testing.T, ts *testServer, secret string) string {
	t.Helper()
	cred, err := ts.db.Credential(context.Background(), auth.Hash(secret))
	if err != nil {
		t.Fatal(err)
	}
	return cred.Key.ID
}
