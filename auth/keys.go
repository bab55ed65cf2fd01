package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"tollgate"
)

// Bounds on key fields.
const (
	MaxNameLen  = 100
	MaxPlanLen  = 64
	MaxModelLen = 200
	maxModels   = 100
)

// Spec describes a key to create.
type Spec struct {
	Name      string
	Scopes    []Scope   // empty: DefaultScopes
	Models    []string  // empty: every model
	Plan      string    // optional plan name from the catalog
	Account   string    // optional id of the Account owning the key
	Limits    Limits    // zero fields: unlimited or from the plan
	ExpiresAt time.Time // zero: never; otherwise must be in the future
}

// Patch changes some fields of a key; nil fields are left alone.
// ExpiresAt pointing at the zero time removes the expiry.
type Patch struct {
	Name      *string
	Scopes    *[]Scope
	Models    *[]string
	Plan      *string
	Account   *string // an account id; "" detaches the key from its account
	Limits    *Limits
	ExpiresAt *time.Time
}

// Keys manages keys: every change is validated, stored together with an
// audit entry, and dropped from the verifier's cache. Safe for concurrent
// use if its store is.
type Keys struct {
	store    KeyStore
	verifier *Verifier
	now      func() time.Time
	notify   ChangeNotifier
}

// NotifyChanges makes every change also tell n (other replicas' caches),
// after it is stored. Call it before the Keys is used; it returns m.
func (m *Keys) NotifyChanges(n ChangeNotifier) *Keys {
	m.notify = n
	return m
}

// NewKeys returns a manager over store. verifier may be nil (e.g. the CLI,
// which verifies nothing); now nil means time.Now.
func NewKeys(store KeyStore, verifier *Verifier, now func() time.Time) *Keys {
	if now == nil {
		now = time.Now
	}
	return &Keys{store: store, verifier: verifier, now: now}
}

// Create validates spec and stores a new key. It returns the key and its
// secret, which exists nowhere else: show it once and drop it. Invalid input
// gives a *FieldError.
func (m *Keys) Create(ctx context.Context, actor string, spec Spec) (Key, string, error) {
	now := m.now().UTC()
	k := Key{CreatedAt: now}
	if err := checkActor(actor); err != nil {
		return Key{}, "", err
	}
	if len(spec.Scopes) == 0 {
		spec.Scopes = DefaultScopes()
	}
	p := Patch{Name: &spec.Name, Scopes: &spec.Scopes, Models: &spec.Models,
		Plan: &spec.Plan, Limits: &spec.Limits, ExpiresAt: &spec.ExpiresAt, Account: &spec.Account}
	if err := p.apply(&k, now); err != nil {
		return Key{}, "", err
	}
	if err := m.checkAccount(ctx, k.AccountID); err != nil {
		return Key{}, "", err
	}
	id, err := newID()
	if err != nil {
		return Key{}, "", err
	}
	k.ID = id
	secret, stored, err := m.newSecret(now)
	if err != nil {
		return Key{}, "", err
	}
	k.Prefix = stored.Prefix
	detail := fmt.Sprintf("name=%q scopes=%s models=%s plan=%q prefix=%s",
		k.Name, JoinScopes(k.Scopes), strings.Join(k.Models, ","), k.Plan, k.Prefix)
	if k.AccountID != "" {
		detail += " account=" + k.AccountID
	}
	if err := m.store.CreateKey(ctx, k, stored, m.entry(now, actor, ActionCreate, k.ID, detail)); err != nil {
		return Key{}, "", err
	}
	if m.verifier != nil {
		m.verifier.forget(secret)
	}
	return k, secret, nil
}

// List returns every key, oldest first.
func (m *Keys) List(ctx context.Context) ([]Key, error) { return m.store.ListKeys(ctx) }

// Get returns the key with id, or ErrNotFound.
func (m *Keys) Get(ctx context.Context, id string) (Key, error) { return m.store.KeyByID(ctx, id) }

// Revoke revokes key id at once (ErrNotFound if there is none). Revoking a
// revoked key keeps the first revocation time.
func (m *Keys) Revoke(ctx context.Context, actor, id string) (Key, error) {
	if err := checkActor(actor); err != nil {
		return Key{}, err
	}
	now := m.now().UTC()
	k, err := m.store.RevokeKey(ctx, id, now, m.entry(now, actor, ActionRevoke, id, ""))
	m.invalidate(id)
	return k, err
}

// Limit on self-rotation: a key may rotate itself at most SelfRotateLimit
// times in any SelfRotateWindow. The store counts them from the audit trail,
// so the limit holds across every instance sharing the database.
const (
	SelfRotateLimit  = 10
	SelfRotateWindow = time.Hour
)

// Rotate issues a new secret for key id and returns the key and the new
// secret. The secret it replaces keeps working until now+grace (grace 0 ends
// it at once) and is rejected with ErrExpired from then on; any older secret
// stops working at once, even if it was in a grace period of its own, so a
// key has at most two working secrets. A revoked key cannot be rotated
// (ErrRevoked); an unknown id gives ErrNotFound.
func (m *Keys) Rotate(ctx context.Context, actor, id string, grace time.Duration) (Key, string, error) {
	if err := checkActor(actor); err != nil {
		return Key{}, "", err
	}
	return m.rotate(ctx, actor, id, grace, Rotation{})
}

// RotateSelf is Rotate done by the key itself (the audit actor is its id)
// with secret, the secret it authenticated with. The store checks that
// secret, not a cache: if a rotation, on any instance, has replaced it,
// the answer is ErrSuperseded and nothing changes. A key that has rotated
// itself SelfRotateLimit times within SelfRotateWindow gets a
// *RotateLimitError.
func (m *Keys) RotateSelf(ctx context.Context, id, secret string, grace time.Duration) (Key, string, error) {
	return m.RotateSelfHash(ctx, id, Hash(secret), grace)
}

// RotateSelfHash is RotateSelf for a caller that holds Hash of the secret
// rather than the secret itself: a dashboard session, which keeps only the
// hash of the secret it was signed in with.
func (m *Keys) RotateSelfHash(ctx context.Context, id, hash string, grace time.Duration) (Key, string, error) {
	return m.rotate(ctx, id, id, grace, Rotation{Presented: hash, Limit: SelfRotateLimit, Window: SelfRotateWindow})
}

// rotate fills in r's new secret and grace end and hands it to the store.
// The key leaves the verifier's cache whatever the outcome: a refused
// self-rotation is news that the cached key may be stale.
func (m *Keys) rotate(ctx context.Context, actor, id string, grace time.Duration, r Rotation) (Key, string, error) {
	if grace < 0 {
		return Key{}, "", fieldErr("grace", "must not be negative")
	}
	now := m.now().UTC()
	secret, stored, err := m.newSecret(now)
	if err != nil {
		return Key{}, "", err
	}
	r.Secret, r.OldUntil = stored, now.Add(grace)
	detail := fmt.Sprintf("grace=%s prefix=%s", grace, stored.Prefix)
	k, err := m.store.RotateKey(ctx, id, r, m.entry(now, actor, ActionRotate, id, detail))
	m.invalidate(id)
	if err != nil {
		return Key{}, "", err
	}
	if m.verifier != nil {
		m.verifier.forget(secret)
	}
	return k, secret, nil
}

// Update applies patch to key id after validating it (a *FieldError if
// invalid, ErrNotFound if there is no such key) and returns the stored key.
func (m *Keys) Update(ctx context.Context, actor, id string, patch Patch) (Key, error) {
	if err := checkActor(actor); err != nil {
		return Key{}, err
	}
	now := m.now().UTC()
	if patch.Account != nil {
		if err := m.checkAccount(ctx, strings.TrimSpace(*patch.Account)); err != nil {
			return Key{}, err
		}
	}
	a := m.entry(now, actor, ActionUpdate, id, "fields="+strings.Join(patch.fields(), ","))
	k, err := m.store.UpdateKey(ctx, id, func(k *Key) error { return patch.apply(k, now) }, a)
	m.invalidate(id)
	return k, err
}

// checkAccount refuses an account id that names no account (a
// *FieldError), when the store keeps accounts.
func (m *Keys) checkAccount(ctx context.Context, id string) error {
	as, ok := m.store.(AccountStore)
	if id == "" || !ok {
		return nil
	}
	if _, err := as.AccountByID(ctx, id); errors.Is(err, ErrAccountNotFound) {
		return fieldErr("account_id", "no account has id %q", id)
	} else if err != nil {
		return err
	}
	return nil
}

func (m *Keys) invalidate(id string) {
	if m.verifier != nil {
		m.verifier.Invalidate(id)
	}
	if m.notify != nil {
		m.notify.KeyChanged(id)
	}
}

func (m *Keys) entry(now time.Time, actor, action, id, detail string) AuditEntry {
	return AuditEntry{Time: now, Actor: actor, Action: action, KeyID: id, Detail: detail}
}

func (m *Keys) newSecret(now time.Time) (string, StoredSecret, error) {
	secret, err := Generate()
	if err != nil {
		return "", StoredSecret{}, err
	}
	return secret, StoredSecret{Hash: Hash(secret), Prefix: DisplayPrefix(secret), CreatedAt: now}, nil
}

func checkActor(actor string) error {
	if strings.TrimSpace(actor) == "" {
		return fieldErr("actor", "must not be empty")
	}
	return nil
}

// fields names the fields a patch sets, for the audit trail.
func (p Patch) fields() []string {
	var f []string
	add := func(set bool, name string) {
		if set {
			f = append(f, name)
		}
	}
	add(p.Name != nil, "name")
	add(p.Scopes != nil, "scopes")
	add(p.Models != nil, "models")
	add(p.Plan != nil, "plan")
	add(p.Account != nil, "account")
	add(p.Limits != nil, "limits")
	add(p.ExpiresAt != nil, "expires_at")
	return f
}

// apply validates the set fields of p and writes them into k.
func (p Patch) apply(k *Key, now time.Time) error {
	if err := setText(&k.Name, p.Name, "name", MaxNameLen, true); err != nil {
		return err
	}
	if p.Scopes != nil {
		s, err := normalizeScopes(*p.Scopes)
		if err != nil {
			return err
		}
		if len(s) == 0 {
			return fieldErr("scopes", "at least one scope is required")
		}
		k.Scopes = s
	}
	if p.Models != nil {
		models, err := normalizeModels(*p.Models)
		if err != nil {
			return err
		}
		k.Models = models
	}
	if err := setText(&k.Plan, p.Plan, "plan", MaxPlanLen, false); err != nil {
		return err
	}
	if err := setText(&k.AccountID, p.Account, "account_id", MaxNameLen, false); err != nil {
		return err
	}
	if p.Limits != nil {
		if err := validateLimits(*p.Limits); err != nil {
			return err
		}
		k.Limits = *p.Limits
	}
	if p.ExpiresAt != nil {
		if !p.ExpiresAt.IsZero() && !p.ExpiresAt.After(now) {
			return fieldErr("expires_at", "must be in the future")
		}
		k.ExpiresAt = p.ExpiresAt.UTC()
	}
	return nil
}

// setText trims *src, validates it and stores it in dst; nil src is a no-op.
func setText(dst, src *string, field string, max int, required bool) error {
	if src == nil {
		return nil
	}
	s := strings.TrimSpace(*src)
	if err := checkText(field, s, max, required); err != nil {
		return err
	}
	*dst = s
	return nil
}

// checkText validates a short single-line field.
func checkText(field, s string, max int, required bool) error {
	switch {
	case required && s == "":
		return fieldErr(field, "must not be empty")
	case !utf8.ValidString(s):
		return fieldErr(field, "must be valid UTF-8")
	case utf8.RuneCountInString(s) > max:
		return fieldErr(field, "must be at most %d characters", max)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fieldErr(field, "must not contain control characters")
	}
	return nil
}

// normalizeModels trims and de-duplicates model names. Names are stored as
// a comma-separated list, so they may not contain commas.
func normalizeModels(in []string) ([]string, error) {
	if len(in) > maxModels {
		return nil, fieldErr("models", "at most %d models", maxModels)
	}
	var out []string
	for _, m := range in {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if err := checkText("models", m, MaxModelLen, true); err != nil {
			return nil, err
		}
		if strings.Contains(m, ",") {
			return nil, fieldErr("models", "model name %q must not contain a comma", m)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

func validateLimits(l Limits) error {
	if math.IsNaN(l.RequestsPerSecond) || math.IsInf(l.RequestsPerSecond, 0) || l.RequestsPerSecond < 0 {
		return fieldErr("limits.requests_per_second", "must be a non-negative number")
	}
	if l.RequestsPerSecond > 0 && l.RequestsPerSecond < tollgate.MinRequestsPerSecond {
		return fieldErr("limits.requests_per_second", "must be 0 (no rate limit) or at least %g (one request per %g s); for fewer requests set monthly_requests",
			tollgate.MinRequestsPerSecond, 1/tollgate.MinRequestsPerSecond)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"limits.burst", int64(l.Burst)},
		{"limits.tokens_per_minute", l.TokensPerMinute},
		{"limits.max_concurrent", int64(l.MaxConcurrent)},
		{"limits.monthly_tokens", l.MonthlyTokens},
		{"limits.monthly_requests", l.MonthlyRequests},
		{"limits.monthly_budget", int64(l.MonthlyBudget)},
	} {
		if f.v < 0 {
			return fieldErr(f.name, "must not be negative")
		}
	}
	return nil
}
