package auth

import "time"

// ChangeNotifier is told, after a key change is stored, the id of the key
// that changed, so that other replicas drop it from their caches (Redis
// pub/sub, PostgreSQL NOTIFY).
type ChangeNotifier interface {
	KeyChanged(keyID string)
}

// CacheControl is what a change listener does to this replica's key cache;
// *Verifier satisfies it. Invalidate drops one key; InvalidateAll and
// ShortenCache are for a lost connection, when changes may have been
// missed: drop everything and trust the cache less until it is back.
type CacheControl interface {
	Invalidate(keyID string)
	InvalidateAll()
	ShortenCache(d time.Duration)
}
