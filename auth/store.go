package auth

import (
	"context"
	"time"
)

// Credential is what a CredentialStore knows about one secret: the key it
// belongs to and, for a secret superseded by a rotation, when it stops
// working (zero: no expiry of its own).
type Credential struct {
	Key             Key
	SecretExpiresAt time.Time
}

// CredentialStore looks up the key a secret belongs to, by Hash(secret).
// It returns ErrUnknown when no secret has that hash. Implementations must be
// safe for concurrent use.
type CredentialStore interface {
	Credential(ctx context.Context, hash string) (Credential, error)
}

// LastUsedStore records when keys were last used, by key id. Unknown ids are
// ignored, and a time older than the stored one must not move it back.
type LastUsedStore interface {
	TouchLastUsed(ctx context.Context, usedAt map[string]time.Time) error
}

// StoredSecret is a secret as it is kept at rest: never the secret itself.
type StoredSecret struct {
	Hash      string // Hash(secret)
	Prefix    string // DisplayPrefix(secret)
	CreatedAt time.Time
}

// AuditEntry records one change to a key. Detail never contains a secret or
// a hash.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`  // key id of the caller, or "cli"
	Action string    `json:"action"` // one of the Action* constants
	KeyID  string    `json:"key_id"`
	Detail string    `json:"detail,omitempty"`
}

// Audit actions.
const (
	ActionCreate = "key.create"
	ActionRotate = "key.rotate"
	ActionRevoke = "key.revoke"
	ActionUpdate = "key.update"
)

// ActorCLI is the audit actor for changes made from the command line.
const ActorCLI = "cli"

// Rotation is one rotation of a key, for KeyStore.RotateKey.
type Rotation struct {
	// Secret becomes the key's current secret.
	Secret StoredSecret
	// OldUntil is when the secret being replaced stops working: the end of
	// its grace period.
	OldUntil time.Time
	// Presented, for a self-rotation, is Hash of the secret the caller
	// authenticated with: the rotation happens only if that is still the
	// key's current secret (the one with no expiry of its own) in the store,
	// whatever a verifier's cache believes. Empty for an admin rotation.
	Presented string
	// Limit, if positive, refuses the rotation when the key has rotated
	// itself (ActionRotate audit entries whose actor is the key's own id)
	// Limit times in the Window before the audit entry's time.
	Limit  int
	Window time.Duration
}

// KeyStore persists keys for the Keys manager. Every method that changes a
// key also writes its AuditEntry, in the same transaction: either both are
// stored or neither. Methods taking an id return ErrNotFound when no key has
// it. Implementations must be safe for concurrent use.
type KeyStore interface {
	// CreateKey stores a new key and its first secret.
	CreateKey(ctx context.Context, k Key, s StoredSecret, a AuditEntry) error
	// ListKeys returns every key, oldest first.
	ListKeys(ctx context.Context) ([]Key, error)
	// KeyByID returns one key.
	KeyByID(ctx context.Context, id string) (Key, error)
	// RevokeKey marks the key revoked at the given time (keeping an earlier
	// revocation time if it was already revoked) and returns it.
	RevokeKey(ctx context.Context, id string, at time.Time, a AuditEntry) (Key, error)
	// RotateKey applies rotation r to the key and returns the updated key.
	// In one transaction, with the audit entry: it returns ErrRevoked for a
	// revoked key; for a self-rotation (r.Presented set) ErrSuperseded unless
	// r.Presented is the key's current secret, then a *RotateLimitError if
	// r.Limit is reached; otherwise it makes r.Secret the current secret,
	// lets the secret it replaces work until r.OldUntil, and deletes every
	// older secret, whether still in a grace period or past it. A key thus
	// never has more than two secrets.
	RotateKey(ctx context.Context, id string, r Rotation, a AuditEntry) (Key, error)
	// UpdateKey loads the key, calls apply on it and, if apply returns nil,
	// stores its Name, Scopes, Models, Plan, AccountID, Limits and ExpiresAt (other
	// fields are not changed) and returns the stored key. An error from
	// apply is returned as is and nothing is written.
	UpdateKey(ctx context.Context, id string, apply func(*Key) error, a AuditEntry) (Key, error)
}
