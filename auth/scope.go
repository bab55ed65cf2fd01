package auth

import (
	"slices"
	"strings"

	"tollgate"
)

// Scope is a permission a key carries: a tollgate.Capability. Scopes are
// exact: ScopeAdmin does not imply the others.
type Scope = tollgate.Capability

// The scopes Tollgate knows.
const (
	ScopeGenerate = tollgate.Generate
	ScopeEmbed    = tollgate.Embed
	ScopePredict  = tollgate.Predict
	ScopeAdmin    = tollgate.Admin
)

// AllScopes lists every known scope, in a stable order.
func AllScopes() []Scope { return []Scope{ScopeGenerate, ScopeEmbed, ScopePredict, ScopeAdmin} }

// DefaultScopes are given to a key created without explicit scopes: every
// inference scope, not admin.
func DefaultScopes() []Scope { return []Scope{ScopeGenerate, ScopeEmbed, ScopePredict} }

// ParseScopes parses a comma-separated list such as "generate,embed".
// Spaces around items are ignored, duplicates are dropped, and an empty
// string gives an empty list. An unknown scope gives a *FieldError for
// field "scopes".
func ParseScopes(list string) ([]Scope, error) {
	var out []Scope
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		out = append(out, Scope(part))
	}
	return normalizeScopes(out)
}

// normalizeScopes validates scopes and drops duplicates, keeping order.
func normalizeScopes(in []Scope) ([]Scope, error) {
	out := make([]Scope, 0, len(in))
	for _, s := range in {
		if !s.Valid() {
			return nil, fieldErr("scopes", "unknown scope %q (known: generate, embed, predict, admin)", string(s))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// JoinScopes renders scopes as a comma-separated list, the inverse of
// ParseScopes.
func JoinScopes(scopes []Scope) string {
	parts := make([]string, len(scopes))
	for i, s := range scopes {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}
