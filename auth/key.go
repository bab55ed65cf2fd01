package auth

import (
	"slices"
	"time"
	"tollgate"
)

// Limits are a key's explicit limits (tollgate.Limits). A zero field means
// "unlimited, or whatever the key's plan says"; enforcing them is the
// gateway's business.
type Limits = tollgate.Limits

// Key is an API key as the rest of Tollgate sees it. It never holds the
// secret or its hash. Zero times mean "not set" (no expiry, not revoked,
// never used).
//
// A Key returned by Verifier.Verify shares its Scopes and Models slices with
// the verifier's cache: treat them as read-only.
type Key struct {
	ID         string    `json:"id"`     // "key_" + 16 base62; stable across rotations
	Name       string    `json:"name"`   // owner or purpose, 1..100 characters
	Prefix     string    `json:"prefix"` // DisplayPrefix of the current secret
	Scopes     []Scope   `json:"scopes"`
	Models     []string  `json:"models,omitempty"` // empty: every model
	Plan       string    `json:"plan,omitempty"`
	AccountID  string    `json:"account_id,omitempty"` // the subscriber account owning the key; "" for none
	Limits     Limits    `json:"limits,omitzero"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
}

// HasScope reports whether the key carries scope s exactly.
func (k Key) HasScope(s Scope) bool { return slices.Contains(k.Scopes, s) }

// AllowsModel reports whether the key may use the public model name m: true
// when the key has no model list, or m is on it.
func (k Key) AllowsModel(m string) bool {
	return len(k.Models) == 0 || slices.Contains(k.Models, m)
}

// Usable returns ErrRevoked if the key is revoked, ErrExpired if it has
// expired at now, and nil otherwise.
func (k Key) Usable(now time.Time) error {
	if !k.RevokedAt.IsZero() {
		return ErrRevoked
	}
	if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		return ErrExpired
	}
	return nil
}
