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
	// RotateKey adds secret s as the key's current secret, makes every older
	// secret of the key stop working at oldUntil (or earlier, if it already
	// expires earlier), and returns the updated key. It returns ErrRevoked
	// for a revoked key.
	RotateKey(ctx context.Context, id string, s StoredSecret, oldUntil time.Time, a AuditEntry) (Key, error)
	// UpdateKey loads the key, calls apply on it and, if apply returns nil,
	// stores its Name, Scopes, Models, Plan, Limits and ExpiresAt (other
	// fields are not changed) and returns the stored key. An error from
	// apply is returned as is and nothing is written.
	UpdateKey(ctx context.Context, id string, apply func(*Key) error, a AuditEntry) (Key, error)
}
