package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/auth/authtest"
)

// Black-box tests of API keys (issue 3): `tollgate serve` through run(), keys
// made with the CLI or the admin API, the fake Ollama behind it.
//
// Expiry, the verifier's cache lifetime and rotation grace periods are tested
// on a hand-moved clock shared by the server and the CLI (run's now), so
// nothing here sleeps or polls for key state. Only that clock moves: HTTP
// timeouts, the last-used flusher's ticker and the like stay on real time.

// clockStart is where the hand-moved clocks start: a whole second (expiries
// computed from it are exact) in the middle of a month (advancing by a week
// crosses no month boundary, so monthly counters stay put).
var clockStart = time.Date(2031, 3, 12, 9, 0, 0, 0, time.UTC)

// serveOnFakeAt is serveOnFake with clock now for the server.
func serveOnFakeAt(t *testing.T, now func() time.Time) *running {
	t.Helper()
	fake := newFake(t)
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	return startServeAt(t, now, env("TOLLGATE_MODELS", cat))
}

// cliAt is cli with clock now: `keys create --expires 2s` counts from it,
// revocations and rotations are stamped with it.
func cliAt(t *testing.T, now func() time.Time, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, env(), now, &out, &errOut); err != nil {
		t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// createKeyWithIDAt is createKeyWithID with clock now.
func createKeyWithIDAt(t *testing.T, now func() time.Time, db string, args ...string) (id, secret string) {
	t.Helper()
	out := cliAt(t, now, append([]string{"keys", "create", "--db", db, "--json"}, args...)...)
	var created struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" || created.Key == "" {
		t.Fatalf("keys create --json printed %q (%v)", out, err)
	}
	return created.ID, created.Key
}

// createKeyAt is createKey with clock now.
func createKeyAt(t *testing.T, now func() time.Time, db string, args ...string) string {
	t.Helper()
	_, secret := createKeyWithIDAt(t, now, db, args...)
	return secret
}

// protectedRoute is a route that needs a key, with a body that succeeds.
type protectedRoute struct {
	method, path, body string
	scope              string // "" = any valid key
	model              bool   // the body names model "tiny"
}

var protectedRoutes = []protectedRoute{
	{"POST", "/generate", `{"model":"tiny","prompt":"hi"}`, "generate", true},
	{"POST", "/embed", `{"model":"tiny","input":"hi"}`, "embed", true},
	{"POST", "/predict", `{"model":"tiny","labels":["yes","no"],"input":"hi"}`, "predict", true},
	{"GET", "/models", "", "", false},
	{"GET", "/usage", "", "", false},
	{"GET", "/admin/keys", "", "admin", false},
}

// otherScope is a scope that is not s (s may be "").
func otherScope(s string) string {
	if s == "embed" {
		return "generate"
	}
	return "embed"
}

func TestEveryProtectedRouteRejectsBadKeys(t *testing.T) {
	for _, rt := range protectedRoutes {
		t.Run(strings.TrimPrefix(rt.path, "/"), func(t *testing.T) {
			t.Parallel()
			clock := authtest.NewClock(clockStart)
			r := serveOnFakeAt(t, clock.Now)
			url := r.url + rt.path
			call := func(opts ...reqOpt) exchange { return send(t, nil, rt.method, url, rt.body, opts...) }

			all := "--scopes=generate,embed,predict,admin"
			good := createKeyAt(t, clock.Now, r.db, "--name", "good", all)
			wantStatus(t, "valid X-API-Key", call(withKey(good)), 200, nil)
			wantStatus(t, "valid Authorization: Bearer", call(withHeader("Authorization", "Bearer "+good)), 200, nil)

			e := wantError(t, "no key", call(), 401, "missing_api_key")
			if !strings.Contains(e.Message, "X-API-Key") {
				t.Errorf("missing_api_key message %q does not say where the key goes", e.Message)
			}
			wantError(t, "garbled key", call(withKey("tg_not-a-key")), 401, "invalid_api_key")
			wantError(t, "key with a typo", call(withKey(mistype(good))), 401, "invalid_api_key")
			unknown, err := auth.Generate()
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, "well-formed unknown key", call(withKey(unknown)), 401, "invalid_api_key")
			wantError(t, "Bearer with a garbled key", call(withHeader("Authorization", "Bearer nope")), 401, "invalid_api_key")

			// A key in the URL is refused, even next to a valid header.
			for _, q := range []string{"?api_key=" + good, "?x=" + good} {
				x := send(t, nil, rt.method, url+q, rt.body, withKey(good))
				if e := wantError(t, "key in query "+q[:3], x, 401, "key_in_query"); !strings.Contains(e.Message, "X-API-Key") {
					t.Errorf("key_in_query message %q does not say to use the X-API-Key header", e.Message)
				}
			}

			revokedID, revoked := createKeyWithIDAt(t, clock.Now, r.db, "--name", "revoked", all)
			cliAt(t, clock.Now, "keys", "revoke", "--db", r.db, revokedID)
			wantError(t, "key revoked with the CLI", call(withKey(revoked)), 401, "key_revoked")

			if rt.scope != "" {
				narrow := createKeyAt(t, clock.Now, r.db, "--name", "narrow", "--scopes", otherScope(rt.scope))
				if e := wantError(t, "key without the "+rt.scope+" scope", call(withKey(narrow)), 403, "insufficient_scope"); !strings.Contains(e.Message, rt.scope) {
					t.Errorf("insufficient_scope message %q does not name the scope", e.Message)
				}
			} else {
				narrow := createKeyAt(t, clock.Now, r.db, "--name", "narrow", "--scopes", "embed")
				wantStatus(t, "any valid key", call(withKey(narrow)), 200, nil)
			}
			if rt.model {
				other := createKeyAt(t, clock.Now, r.db, "--name", "other-model", all, "--models", "othermodel")
				if e := wantError(t, "key for another model", call(withKey(other)), 403, "model_not_allowed"); !strings.Contains(e.Message, "tiny") {
					t.Errorf("model_not_allowed message %q does not name the model", e.Message)
				}
			}

			// Expiry: the key works until its time, then fails with
			// key_expired: a key in the verifier's cache (used before) and
			// one looked up for the first time after it expired.
			expiring := createKeyAt(t, clock.Now, r.db, "--name", "expiring", all, "--expires", "2s")
			unused := createKeyAt(t, clock.Now, r.db, "--name", "expiring-unused", all, "--expires", "2s")
			wantStatus(t, "expiring key before its time", call(withKey(expiring)), 200, nil)
			clock.Advance(2*time.Second - time.Nanosecond)
			wantStatus(t, "expiring key 1 ns before its time", call(withKey(expiring)), 200, nil)
			clock.Advance(time.Nanosecond)
			wantError(t, "expired key", call(withKey(expiring)), 401, "key_expired")
			wantError(t, "key that expired unused", call(withKey(unused)), 401, "key_expired")
			wantStatus(t, "key without expiry after another's", call(withKey(good)), 200, nil)
		})
	}
}

func TestRevocationTakesEffect(t *testing.T) {
	t.Parallel()
	clock := authtest.NewClock(clockStart)
	r := serveOnFakeAt(t, clock.Now)
	admin := createKeyAt(t, clock.Now, r.db, "--name", "ops", "--scopes", "admin")
	models := func(key string) exchange { return send(t, nil, "GET", r.url+"/models", "", withKey(key)) }

	// Through the admin API: on the very next request, though the key is
	// cached (the clock stands still, so its cache entry is fresh).
	for _, how := range []struct{ method, suffix string }{{"POST", "/revoke"}, {"DELETE", ""}} {
		id, key := createKeyWithIDAt(t, clock.Now, r.db, "--name", "victim")
		wantStatus(t, "before revocation", models(key), 200, nil)
		var k auth.Key
		wantStatus(t, how.method+" revoke", send(t, nil, how.method, r.url+"/admin/keys/"+id+how.suffix, "", withKey(admin)), 200, &k)
		if k.ID != id || k.RevokedAt.IsZero() {
			t.Fatalf("revoke answered %+v", k)
		}
		wantError(t, "next request after "+how.method+" revoke", models(key), 401, "key_revoked")
	}

	// Through the CLI (another process as far as the server knows): within
	// the cache lifetime README promises (10 s), counted from the request
	// that put the key in the server's cache. Until then the cached key
	// still passes: that is the promise's other side, and it shows the
	// server's clock, not some other path, decides when the change is seen.
	// (Should the server learn of other processes' revocations sooner, the
	// two "still cached" checks are the ones to drop.)
	id, key := createKeyWithIDAt(t, clock.Now, r.db, "--name", "victim")
	wantStatus(t, "before revocation (caches the key)", models(key), 200, nil)
	cliAt(t, clock.Now, "keys", "revoke", "--db", r.db, id)
	wantStatus(t, "just after CLI revoke, still cached", models(key), 200, nil)
	clock.Advance(auth.DefaultCacheTTL - time.Nanosecond)
	wantStatus(t, "1 ns before the cache lifetime ends, still cached", models(key), 200, nil)
	clock.Advance(time.Nanosecond)
	wantError(t, "after CLI revoke, once the cache lifetime is over", models(key), 401, "key_revoked")
}

// createdKey is the answer of POST /admin/keys and of rotations.
type createdKey struct {
	Key  string   `json:"key"`
	Info auth.Key `json:"info"`
}

func TestRotation(t *testing.T) {
	t.Parallel()
	clock := authtest.NewClock(clockStart)
	r := serveOnFakeAt(t, clock.Now)
	admin := createKeyAt(t, clock.Now, r.db, "--name", "ops", "--scopes", "admin")
	models := func(key string) exchange { return send(t, nil, "GET", r.url+"/models", "", withKey(key)) }

	t.Run("admin with grace", func(t *testing.T) {
		id, old := createKeyWithIDAt(t, clock.Now, r.db, "--name", "svc")
		wantStatus(t, "old key", models(old), 200, nil)
		var rot createdKey
		x := send(t, nil, "POST", r.url+"/admin/keys/"+id+"/rotate", `{"grace":"2s"}`, withKey(admin))
		wantStatus(t, "admin rotate", x, 200, &rot)
		if rot.Info.ID != id || !strings.HasPrefix(rot.Key, "tg_") || rot.Key == old || x.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("rotate answered %s (Cache-Control %q)", x.body, x.header.Get("Cache-Control"))
		}
		wantStatus(t, "new key", models(rot.Key), 200, nil)
		wantStatus(t, "old key in its grace period", models(old), 200, nil)
		clock.Advance(2*time.Second - time.Nanosecond)
		wantStatus(t, "old key 1 ns before its grace ends", models(old), 200, nil)
		wantStatus(t, "new key 1 ns before the old one's grace ends", models(rot.Key), 200, nil)
		clock.Advance(time.Nanosecond)
		wantError(t, "old key after grace", models(old), 401, "key_expired")
		wantStatus(t, "new key after grace", models(rot.Key), 200, nil)
		wantError(t, "rotate an unknown key", send(t, nil, "POST", r.url+"/admin/keys/key_nope/rotate", "", withKey(admin)), 404, "key_not_found")
	})

	t.Run("self", func(t *testing.T) {
		old := createKeyAt(t, clock.Now, r.db, "--name", "holder", "--scopes", "generate")
		self := func(key, body string) exchange {
			return send(t, nil, "POST", r.url+"/keys/self/rotate", body, withKey(key))
		}
		e := wantError(t, "self rotate with 8 days' grace", self(old, `{"grace":"192h"}`), 400, "invalid_request")
		if !strings.Contains(e.Message, "grace") {
			t.Errorf("message %q does not name the field", e.Message)
		}
		wantError(t, "self rotate with a bad grace", self(old, `{"grace":"soon"}`), 400, "invalid_request")
		wantStatus(t, "refused rotations leave the key alone", models(old), 200, nil)

		var rot createdKey
		wantStatus(t, "self rotate 7 days", self(old, `{"grace":"168h"}`), 200, &rot)
		wantStatus(t, "old key in grace", models(old), 200, nil)
		clock.Advance(168*time.Hour - time.Nanosecond)
		wantStatus(t, "old key 1 ns before its 7 days' grace ends", models(old), 200, nil)
		clock.Advance(time.Nanosecond)
		wantError(t, "old key after its 7 days' grace", models(old), 401, "key_expired")
		wantStatus(t, "rotated key after the old one's grace", models(rot.Key), 200, nil)
		var again createdKey
		wantStatus(t, "self rotate at once", self(rot.Key, `{"grace":"0s"}`), 200, &again)
		wantError(t, "secret retired with grace 0", models(rot.Key), 401, "key_expired")
		wantStatus(t, "newest key", models(again.Key), 200, nil)
		if again.Info.ID != rot.Info.ID {
			t.Errorf("rotation changed the key id: %s -> %s", rot.Info.ID, again.Info.ID)
		}
	})
}

func TestAdminAPI(t *testing.T) {
	r, _ := serveOnFake(t)
	adminID, admin := createKeyWithID(t, r.db, "--name", "ops", "--scopes", "admin")
	user := createKey(t, r.db, "--name", "user", "--scopes", "generate,embed,predict")
	api := func(method, path, body string, key string) exchange {
		return send(t, nil, method, r.url+path, body, withKey(key))
	}

	// Create: the secret comes back once, never a hash.
	var created createdKey
	x := api("POST", "/admin/keys", `{"name":"svc","scopes":["generate"],"models":["tiny"],"expires_in":"720h","limits":{"max_concurrent":4}}`, admin)
	wantStatus(t, "create", x, 201, &created)
	id := created.Info.ID
	if !strings.HasPrefix(created.Key, "tg_") || !strings.HasPrefix(id, "key_") || created.Info.Name != "svc" ||
		created.Info.ExpiresAt.IsZero() || created.Info.Limits.MaxConcurrent != 4 || x.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create answered %s", x.body)
	}
	if strings.Contains(string(x.body), `"hash`) {
		t.Errorf("create answer mentions a hash: %s", x.body)
	}
	wantStatus(t, "created key generates", api("POST", "/generate", `{"prompt":"hi"}`, created.Key), 200, nil)
	wantError(t, "created key has no embed scope", api("POST", "/embed", `{"input":"hi"}`, created.Key), 403, "insufficient_scope")
	wantError(t, "create with no name", api("POST", "/admin/keys", `{"name":""}`, admin), 400, "invalid_request")
	wantError(t, "create with a bad scope", api("POST", "/admin/keys", `{"name":"x","scopes":["root"]}`, admin), 400, "invalid_request")

	// List and show never carry a secret.
	var list struct{ Keys []auth.Key }
	x = api("GET", "/admin/keys", "", admin)
	wantStatus(t, "list", x, 200, &list)
	if len(list.Keys) != 3 || strings.Contains(string(x.body), created.Key) || strings.Contains(string(x.body), admin) {
		t.Fatalf("list = %s", x.body)
	}
	var shown auth.Key
	wantStatus(t, "show", api("GET", "/admin/keys/"+id, "", admin), 200, &shown)
	if shown.ID != id || shown.Name != "svc" || shown.Prefix != created.Key[:len(shown.Prefix)] {
		t.Fatalf("show = %+v", shown)
	}
	wantError(t, "show unknown", api("GET", "/admin/keys/key_nope", "", admin), 404, "key_not_found")

	// Patch takes effect on the next request.
	var patched auth.Key
	wantStatus(t, "patch", api("PATCH", "/admin/keys/"+id, `{"name":"svc2","scopes":["generate","embed"]}`, admin), 200, &patched)
	if patched.Name != "svc2" || len(patched.Scopes) != 2 {
		t.Fatalf("patch = %+v", patched)
	}
	wantStatus(t, "patched key embeds", api("POST", "/embed", `{"input":"hi"}`, created.Key), 200, nil)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	wantError(t, "patch expiry into the past", api("PATCH", "/admin/keys/"+id, `{"expires_at":"`+past+`"}`, admin), 400, "invalid_request")
	wantError(t, "patch an unknown field", api("PATCH", "/admin/keys/"+id, `{"nmae":"x"}`, admin), 400, "invalid_request")

	// Revoke, then the CLI sees it.
	var revoked auth.Key
	wantStatus(t, "revoke", api("POST", "/admin/keys/"+id+"/revoke", "", admin), 200, &revoked)
	wantError(t, "revoked key", api("POST", "/generate", `{"prompt":"hi"}`, created.Key), 401, "key_revoked")
	wantError(t, "rotate a revoked key", api("POST", "/admin/keys/"+id+"/rotate", "", admin), 409, "key_already_revoked")
	var fromCLI auth.Key
	if err := json.Unmarshal([]byte(cli(t, "keys", "show", "--db", r.db, "--json", id)), &fromCLI); err != nil || fromCLI.RevokedAt.IsZero() || fromCLI.Name != "svc2" {
		t.Fatalf("keys show after revoke: %+v (%v)", fromCLI, err)
	}

	// A key without the admin scope gets 403 on every admin route.
	for _, rt := range [][2]string{{"POST", "/admin/keys"}, {"GET", "/admin/keys"}, {"GET", "/admin/keys/" + id},
		{"PATCH", "/admin/keys/" + id}, {"POST", "/admin/keys/" + id + "/rotate"}, {"POST", "/admin/keys/" + id + "/revoke"},
		{"DELETE", "/admin/keys/" + id}, {"GET", "/admin/audit"}, {"GET", "/admin/usage"}, {"GET", "/admin/usage/export"}} {
		wantError(t, "non-admin "+rt[0]+" "+rt[1], api(rt[0], rt[1], `{}`, user), 403, "insufficient_scope")
	}

	// The audit trail: CLI actions as "cli", API actions as the admin's key id.
	type entry = auth.AuditEntry
	var audit struct{ Entries []entry }
	wantStatus(t, "audit", api("GET", "/admin/audit", "", admin), 200, &audit)
	has := func(entries []entry, actor, action, keyID string) bool {
		for _, e := range entries {
			if e.Actor == actor && e.Action == action && e.KeyID == keyID && !e.Time.IsZero() {
				return true
			}
		}
		return false
	}
	for _, w := range []struct{ actor, action, key string }{
		{"cli", auth.ActionCreate, adminID},
		{adminID, auth.ActionCreate, id},
		{adminID, auth.ActionUpdate, id},
		{adminID, auth.ActionRevoke, id},
	} {
		if !has(audit.Entries, w.actor, w.action, w.key) {
			t.Errorf("audit has no %s by %s on %s: %+v", w.action, w.actor, w.key, audit.Entries)
		}
	}
	var one struct{ Entries []entry }
	wantStatus(t, "audit for one key", api("GET", "/admin/audit?key_id="+id, "", admin), 200, &one)
	for _, e := range one.Entries {
		if e.KeyID != id {
			t.Errorf("audit?key_id=%s lists %+v", id, e)
		}
	}
	if len(one.Entries) != 3 {
		t.Errorf("audit for %s has %d entries, want 3 (create, update, revoke): %+v", id, len(one.Entries), one.Entries)
	}
}

func TestFailedAuthIsThrottledPerAddressNotCharged(t *testing.T) {
	r, _ := serveOnFake(t)
	id, good := createKeyWithID(t, r.db, "--name", "victim")
	unknown, _ := auth.Generate()
	local := clientFrom(t, "127.0.0.1", 2)

	failures, limitedAt := 0, 0
	var limited exchange
	for i := 1; i <= 30 && limitedAt == 0; i++ {
		bad := unknown
		if i%2 == 0 {
			bad = "tg_garbled"
		}
		x := send(t, local, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(bad))
		switch x.status {
		case 401:
			failures++
		case 429:
			limitedAt, limited = i, x
		default:
			t.Fatalf("attempt %d = %d %s", i, x.status, x.body)
		}
	}
	if failures < 20 || limitedAt == 0 || limitedAt > 22 {
		t.Fatalf("%d failures answered 401, first 429 at attempt %d; want 20 allowed, then 429", failures, limitedAt)
	}
	wantError(t, "after 20 failures", limited, 429, "too_many_auth_failures")
	if ra := limited.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("429 has Retry-After %q", ra)
	}
	// The address is blocked even with a good key, and nothing reaches Ollama or the bill.
	wantError(t, "good key from the blocked address", send(t, local, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(good)), 429, "too_many_auth_failures")

	// Another address is not blocked; the key was charged nothing.
	var u struct {
		Totals struct {
			Requests    int64
			TotalTokens int64 `json:"total_tokens"`
		}
	}
	other := clientFrom(t, "127.0.0.2", 2)
	wantStatus(t, "usage from another address", send(t, other, "GET", r.url+"/usage", "", withKey(good)), 200, &u)
	if u.Totals.Requests != 0 || u.Totals.TotalTokens != 0 {
		t.Errorf("key charged for failed attempts: %+v", u.Totals)
	}
	if rows := exportUsage(t, r.db, "--key", id); len(rows) != 0 {
		t.Errorf("usage records for the key: %+v", rows)
	}
}

func TestConcurrentBurstOfVerifications(t *testing.T) {
	r, _ := serveOnFake(t)
	var keys []string
	for i := range 5 {
		keys = append(keys, createKey(t, r.db, "--name", "burst"+string(rune('a'+i))))
	}
	hc := clientFrom(t, "127.0.0.1", 64)
	const workers, each = 50, 20
	var (
		mu   sync.Mutex
		ids  = map[string]bool{}
		errs []string
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := keys[(w+i)%len(keys)]
				path, body := "/models", ""
				if i%2 == 0 {
					path, body = "/generate", `{"prompt":"hi"}`
				}
				req, _ := http.NewRequest(map[bool]string{true: "POST", false: "GET"}[body != ""], r.url+path, strings.NewReader(body))
				req.Header.Set("X-API-Key", key)
				resp, err := hc.Do(req)
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				var out struct{ ID string }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				mu.Lock()
				switch {
				case resp.StatusCode != 200 || err != nil:
					errs = append(errs, path+": "+resp.Status)
				case body != "":
					if ids[out.ID] {
						errs = append(errs, "duplicate id "+out.ID)
					}
					ids[out.ID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, e.g. %v", len(errs), workers*each, errs[:min(5, len(errs))])
	}
	rows := exportUsage(t, r.db)
	if len(rows) != len(ids) || len(ids) != workers*each/2 {
		t.Fatalf("%d generate answers, %d usage records; want %d of each", len(ids), len(rows), workers*each/2)
	}
	for id := range ids {
		if rows[id].Status != 200 {
			t.Errorf("answer %s has record %+v", id, rows[id])
		}
	}
}

// mistype changes one character of key's random part: a typo its checksum
// catches.
func mistype(key string) string {
	c := byte('A')
	if key[10] == c {
		c = 'B'
	}
	return key[:10] + string(c) + key[11:]
}

// TestNoSecretIsStoredOrLogged greps the database, its WAL and shared-memory
// files and the server's whole log for every secret it has seen: created by
// the CLI and the admin API, rotated, used, misused in a URL, and mistyped.
func TestNoSecretIsStoredOrLogged(t *testing.T) {
	r := serveOn(t, newFake(t), "--log-level", "debug")
	admin := createKey(t, r.db, "--name", "ops", "--scopes", "admin,generate,embed,predict")
	cliKey := createKey(t, r.db, "--name", "cli-made")
	var apiKey createdKey
	wantStatus(t, "create via API", send(t, nil, "POST", r.url+"/admin/keys", `{"name":"api-made"}`, withKey(admin)), 201, &apiKey)
	var rotated createdKey
	wantStatus(t, "self rotate", send(t, nil, "POST", r.url+"/keys/self/rotate", `{"grace":"1h"}`, withKey(cliKey)), 200, &rotated)
	typo := mistype(apiKey.Key)
	secrets := []string{admin, cliKey, apiKey.Key, rotated.Key, typo}

	for _, k := range secrets[:4] {
		wantStatus(t, "generate", send(t, nil, "POST", r.url+"/generate", `{"prompt":"hi"}`, withKey(k), withHeader("Authorization", "Bearer "+k)), 200, nil)
	}
	wantError(t, "key in query", send(t, nil, "GET", r.url+"/models?api_key="+apiKey.Key, ""), 401, "key_in_query")
	wantError(t, "mistyped key", send(t, nil, "GET", r.url+"/models", "", withKey(typo)), 401, "invalid_api_key")
	wantError(t, "key as a model name", send(t, nil, "POST", r.url+"/generate", `{"model":"`+admin+`","prompt":"hi"}`, withKey(admin)), 404, "model_not_found")
	for _, x := range []exchange{send(t, nil, "GET", r.url+"/"+cliKey, "", withKey(cliKey)), send(t, nil, "PUT", r.url+"/generate/../x/"+cliKey, "")} {
		wantError(t, "key in a path", x, 404, "not_found")
		if strings.Contains(string(x.body), cliKey) {
			t.Errorf("error message echoes a key from the path: %s", x.body)
		}
	}

	grep := func(when string) {
		t.Helper()
		files := map[string][]byte{"log": []byte(r.out.String())}
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if b, err := os.ReadFile(r.db + suffix); err == nil {
				files["db"+suffix] = b
			}
		}
		for _, s := range secrets {
			for name, b := range files {
				// The random part alone too: a key stored without its prefix is still a key.
				if strings.Contains(string(b), s) || strings.Contains(string(b), s[len(auth.SecretPrefix):]) {
					t.Errorf("%s: %s holds a secret (%s…):\n%s", when, name, s[:auth.DisplayPrefixLen], b)
				}
			}
		}
	}
	grep("while serving")
	if _, err := os.Stat(r.db + "-wal"); err != nil {
		t.Errorf("no WAL while serving: %v", err)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	grep("after stop")
}
