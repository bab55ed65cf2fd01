// Package idempotency is the vocabulary of Idempotency-Key
// (draft-ietf-httpapi-idempotency-key-header, Stripe's semantics): a
// client-chosen key that makes a retried POST replay the first answer
// instead of running the model (and billing) again. It holds the stored
// record, the store interface the HTTP layer uses, the header's syntax and
// the sealing of stored answers. It imports neither Gin nor storage.
package idempotency

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

const (
	// TTL is how long a finished answer is replayed; older records are
	// purged and the key may be used afresh.
	TTL = 24 * time.Hour
	// StaleAfter is how long a record may stay in progress before it is
	// presumed orphaned (the process died mid-request) and a retry may take
	// it over and run again.
	StaleAfter = 10 * time.Minute
	// MaxKeyLen is the longest Idempotency-Key accepted.
	MaxKeyLen = 255
	// MaxBody is the largest answer stored; a larger one is not replayable
	// and its record is released (a retry runs again).
	MaxBody = 8 << 20
)

// Record is one Idempotency-Key of one API key: the request it was first
// used for and, once done, the answer.
type Record struct {
	KeyID string // the API key's id: records are scoped per key
	Key   string // the Idempotency-Key
	// Fingerprint is Fingerprint(method, path, body) of the first request.
	Fingerprint string
	// Owner is the request id that holds (or held) the record.
	Owner   string
	Done    bool
	Status  int
	Header  map[string]string // the replayed headers (Content-Type, ...)
	Body    []byte            // the answer, sealed (Seal)
	Created time.Time
}

// Store keeps records durably; *sqlite.DB and *postgres.DB (package storage) satisfy it.
type Store interface {
	// Claim makes r (in progress, owned by r.Owner) the record of
	// (r.KeyID, r.Key) unless a live one exists: records created before
	// now-TTL are purged first, and one left in progress since before
	// now-StaleAfter is taken over. It returns the existing record and
	// false when there is one, or r and true.
	Claim(ctx context.Context, r Record, now time.Time) (Record, bool, error)
	// Finish stores the answer in the record r.Owner holds, and marks it done.
	Finish(ctx context.Context, r Record) error
	// Release deletes the in-progress record owner holds, so a retry runs
	// afresh.
	Release(ctx context.Context, keyID, key, owner string) error
	// Touch marks the in-progress record owner holds as alive at now, so a
	// request that runs longer than StaleAfter is not taken over.
	Touch(ctx context.Context, keyID, key, owner string, now time.Time) error
}

// ValidKey reports whether k is an acceptable Idempotency-Key: 1 to
// MaxKeyLen visible ASCII characters (a UUID, a Zapier task id, ...).
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Fingerprint identifies a request: its method, path, a SHA-256 of its
// body and any headers that change what it does (extra, e.g. Prefer),
// hex-encoded.
func Fingerprint(method, path string, body []byte, extra ...string) string {
	sum := sha256.Sum256(body)
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(sum[:])
	for _, x := range extra {
		h.Write([]byte{0})
		h.Write([]byte(x))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ErrOpen is Open's error for a sealed body that the given secret cannot
// open: the record was stored by a request with another secret.
var ErrOpen = errors.New("idempotency: the stored answer was sealed with another secret")

// Seal encrypts an answer (AES-256-GCM) with a key derived from the
// caller's secret and the Idempotency-Key, so that the database holds no
// readable answer: neither generated text nor a new API key shown once by
// POST /keys/.../rotate. Only a retry presenting the same secret can
// replay it.
func Seal(secret, key string, plain []byte) ([]byte, error) {
	aead, err := newAEAD(secret, key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, []byte(key)), nil
}

// Open decrypts what Seal returned; ErrOpen if secret or key differ.
func Open(secret, key string, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(secret, key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, ErrOpen
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(key))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

func newAEAD(secret, key string) (cipher.AEAD, error) {
	h := sha256.New()
	h.Write([]byte("tollgate idempotency v1\x00"))
	h.Write([]byte(secret))
	h.Write([]byte{0})
	h.Write([]byte(key))
	block, err := aes.NewCipher(h.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
