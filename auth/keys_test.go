package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tollgate/auth/authtest"
)

type keysFixture struct {
	store *memStore
	clock *authtest.Clock
	v     *Verifier
	keys  *Keys
}

func newKeysFixture() *keysFixture {
	f := &keysFixture{store: newMemStore(), clock: newClock()}
	f.v = NewVerifier(f.store, VerifierOptions{CacheTTL: time.Hour, Now: f.clock.Now})
	f.keys = NewKeys(f.store, f.v, f.clock.Now)
	return f
}

func (f *keysFixture) create(t *testing.T, spec Spec) (Key, string) {
	t.Helper()
	k, secret, err := f.keys.Create(context.Background(), ActorCLI, spec)
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

// createUsed creates a key and verifies it once, so that it is cached.
func (f *keysFixture) createUsed(t *testing.T, spec Spec) (Key, string) {
	t.Helper()
	k, secret := f.create(t, spec)
	f.verify(t, secret, nil)
	return k, secret
}

func (f *keysFixture) verify(t *testing.T, secret string, want error) {
	t.Helper()
	if _, err := f.v.Verify(context.Background(), secret); !errors.Is(err, want) || (want == nil && err != nil) {
		t.Fatalf("Verify = %v, want %v", err, want)
	}
}

func TestCreateDefaultsAndAudit(t *testing.T) {
	f := newKeysFixture()
	k, secret := f.create(t, Spec{Name: "  acme  ", Models: []string{"llama3.2", " llama3.2 "}})
	if k.Name != "acme" || !strings.HasPrefix(k.ID, "key_") || k.Prefix != DisplayPrefix(secret) {
		t.Fatalf("key = %+v", k)
	}
	if JoinScopes(k.Scopes) != "generate,embed,predict" {
		t.Fatalf("default scopes = %v", k.Scopes)
	}
	if len(k.Models) != 1 || !k.CreatedAt.Equal(f.clock.Now()) {
		t.Fatalf("models %v created %v", k.Models, k.CreatedAt)
	}
	got, err := f.keys.Get(context.Background(), k.ID)
	if err != nil || got.ID != k.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	f.verify(t, secret, nil)
	if len(f.store.audit) != 1 {
		t.Fatalf("audit = %+v", f.store.audit)
	}
	a := f.store.audit[0]
	if a.Action != ActionCreate || a.Actor != ActorCLI || a.KeyID != k.ID {
		t.Fatalf("audit entry = %+v", a)
	}
	if strings.Contains(a.Detail, secret[DisplayPrefixLen:]) || strings.Contains(a.Detail, Hash(secret)) {
		t.Fatalf("audit detail leaks the secret: %q", a.Detail)
	}
}

func TestCreateValidates(t *testing.T) {
	f := newKeysFixture()
	past := f.clock.Now()
	cases := map[string]struct {
		spec  Spec
		field string
	}{
		"empty name":      {Spec{Name: " "}, "name"},
		"long name":       {Spec{Name: strings.Repeat("é", 101)}, "name"},
		"control char":    {Spec{Name: "a\nb"}, "name"},
		"bad scope":       {Spec{Name: "a", Scopes: []Scope{"root"}}, "scopes"},
		"expiry now":      {Spec{Name: "a", ExpiresAt: past}, "expires_at"},
		"negative rate":   {Spec{Name: "a", Limits: Limits{RequestsPerSecond: -1}}, "limits.requests_per_second"},
		"rate too low":    {Spec{Name: "a", Limits: Limits{RequestsPerSecond: 0.0009}}, "limits.requests_per_second"},
		"negative burst":  {Spec{Name: "a", Limits: Limits{Burst: -1}}, "limits.burst"},
		"model w/ comma":  {Spec{Name: "a", Models: []string{"a,b"}}, "models"},
		"long plan":       {Spec{Name: "a", Plan: strings.Repeat("p", 65)}, "plan"},
		"monthly tokens":  {Spec{Name: "a", Limits: Limits{MonthlyTokens: -5}}, "limits.monthly_tokens"},
		"max concurrent":  {Spec{Name: "a", Limits: Limits{MaxConcurrent: -5}}, "limits.max_concurrent"},
		"tokens/min":      {Spec{Name: "a", Limits: Limits{TokensPerMinute: -5}}, "limits.tokens_per_minute"},
		"monthly request": {Spec{Name: "a", Limits: Limits{MonthlyRequests: -5}}, "limits.monthly_requests"},
	}
	for name, c := range cases {
		_, secret, err := f.keys.Create(context.Background(), ActorCLI, c.spec)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalid) || secret != "" {
			t.Errorf("%s: err = %v, want FieldError on %s", name, err, c.field)
		}
	}
	if _, _, err := f.keys.Create(context.Background(), "", Spec{Name: "a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty actor: %v", err)
	}
	if len(f.store.keys) != 0 || len(f.store.audit) != 0 {
		t.Fatal("invalid creates reached the store")
	}
	if _, _, err := f.keys.Create(context.Background(), ActorCLI, Spec{Name: strings.Repeat("é", 100)}); err != nil {
		t.Fatalf("100-character name rejected: %v", err)
	}
}

func TestRotateWithGrace(t *testing.T) {
	f := newKeysFixture()
	ctx := context.Background()
	k, old := f.createUsed(t, Spec{Name: "a"})
	rk, fresh, err := f.keys.Rotate(ctx, k.ID, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rk.ID != k.ID || fresh == old || rk.Prefix != DisplayPrefix(fresh) {
		t.Fatalf("rotated key %+v", rk)
	}
	f.verify(t, fresh, nil)
	f.verify(t, old, nil)
	f.clock.Advance(time.Hour - time.Nanosecond)
	f.verify(t, old, nil)
	f.clock.Advance(time.Nanosecond)
	f.verify(t, old, ErrExpired)
	f.verify(t, fresh, nil)

	// Grace 0: the previous secret stops at once.
	_, third, err := f.keys.Rotate(ctx, ActorCLI, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.verify(t, fresh, ErrExpired)
	f.verify(t, third, nil)
	last := f.store.audit[len(f.store.audit)-1]
	if last.Action != ActionRotate || last.Actor != ActorCLI || strings.Contains(last.Detail, third[DisplayPrefixLen:]) {
		t.Fatalf("audit = %+v", last)
	}
	if _, _, err := f.keys.Rotate(ctx, ActorCLI, k.ID, -time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative grace: %v", err)
	}
	if _, _, err := f.keys.Rotate(ctx, ActorCLI, "key_nope", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestRevokeIsImmediate(t *testing.T) {
	f := newKeysFixture()
	ctx := context.Background()
	k, secret := f.createUsed(t, Spec{Name: "a"})
	rk, err := f.keys.Revoke(ctx, "key_admin", k.ID)
	if err != nil || rk.RevokedAt.IsZero() {
		t.Fatalf("Revoke = %+v, %v", rk, err)
	}
	f.verify(t, secret, ErrRevoked)
	if _, _, err := f.keys.Rotate(ctx, ActorCLI, k.ID, time.Hour); !errors.Is(err, ErrRevoked) {
		t.Fatalf("rotate revoked: %v", err)
	}
	f.clock.Advance(time.Minute)
	again, err := f.keys.Revoke(ctx, ActorCLI, k.ID)
	if err != nil || !again.RevokedAt.Equal(rk.RevokedAt) {
		t.Fatalf("second revoke moved the time: %v, %v", again.RevokedAt, err)
	}
	if _, err := f.keys.Revoke(ctx, ActorCLI, "key_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if a := f.store.audit[1]; a.Action != ActionRevoke || a.Actor != "key_admin" {
		t.Fatalf("audit = %+v", a)
	}
}

func TestUpdate(t *testing.T) {
	f := newKeysFixture()
	ctx := context.Background()
	k, secret := f.createUsed(t, Spec{Name: "a"})
	name := "b"
	scopes := []Scope{ScopeEmbed}
	limits := Limits{RequestsPerSecond: 2, Burst: 4}
	exp := f.clock.Now().Add(time.Minute)
	uk, err := f.keys.Update(ctx, ActorCLI, k.ID, Patch{Name: &name, Scopes: &scopes, Limits: &limits, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if uk.Name != "b" || JoinScopes(uk.Scopes) != "embed" || uk.Limits != limits || !uk.ExpiresAt.Equal(exp) {
		t.Fatalf("updated = %+v", uk)
	}
	got, _ := f.v.Verify(ctx, secret) // the cache saw the update at once
	if got.Name != "b" || got.HasScope(ScopeGenerate) {
		t.Fatalf("verifier still has the old key: %+v", got)
	}
	if a := f.store.audit[1]; a.Action != ActionUpdate || a.Detail != "fields=name,scopes,limits,expires_at" {
		t.Fatalf("audit = %+v", a)
	}

	empty := []Scope{}
	if _, err := f.keys.Update(ctx, ActorCLI, k.ID, Patch{Scopes: &empty}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty scopes: %v", err)
	}
	var never time.Time
	if uk, err = f.keys.Update(ctx, ActorCLI, k.ID, Patch{ExpiresAt: &never}); err != nil || !uk.ExpiresAt.IsZero() {
		t.Fatalf("clear expiry: %+v, %v", uk.ExpiresAt, err)
	}
	if _, err := f.keys.Update(ctx, ActorCLI, "key_nope", Patch{Name: &name}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	list, err := f.keys.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
}

func TestRotateSelf(t *testing.T) {
	f := newKeysFixture()
	ctx := context.Background()
	k, old := f.createUsed(t, Spec{Name: "a"})
	_, cur, err := f.keys.RotateSelf(ctx, k.ID, old, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if a := f.store.audit[len(f.store.audit)-1]; a.Action != ActionRotate || a.Actor != k.ID {
		t.Fatalf("audit = %+v, want the key as actor", a)
	}
	f.verify(t, old, nil) // in its grace period...
	f.verify(t, cur, nil) // (and now both are cached)
	before := len(f.store.audit)
	if _, _, err := f.keys.RotateSelf(ctx, k.ID, old, 0); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("self-rotation with the replaced secret: %v", err)
	}
	if len(f.store.audit) != before {
		t.Fatal("a refused rotation was audited")
	}
	// A refusal drops the key from the cache: it may be stale.
	lookups := f.store.lookups.Load()
	f.verify(t, cur, nil)
	if f.store.lookups.Load() == lookups {
		t.Fatal("the key stayed cached after a refused self-rotation")
	}
	for i := 1; i < SelfRotateLimit; i++ {
		f.clock.Advance(time.Minute)
		if _, cur, err = f.keys.RotateSelf(ctx, k.ID, cur, time.Hour); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	_, _, err = f.keys.RotateSelf(ctx, k.ID, cur, time.Hour)
	var limit *RotateLimitError
	if !errors.As(err, &limit) || limit.RetryAfter != SelfRotateWindow-time.Duration(SelfRotateLimit-1)*time.Minute {
		t.Fatalf("over the limit: %v", err)
	}
	if _, _, err := f.keys.Rotate(ctx, ActorCLI, k.ID, 0); err != nil {
		t.Fatalf("an admin rotation is not limited: %v", err)
	}
}
