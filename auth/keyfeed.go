package auth

import (
	"context"
	"time"
)

// KeyChangeFeed tells this replica about changes to keys made anywhere
// (revocations, rotations, updates, on any replica or through the CLI), so
// that its verification cache drops them at once instead of when their
// CacheTTL ends. The PostgreSQL store's LISTEN/NOTIFY listener is one
// (postgres.KeyFeed); a Redis pub/sub subscriber can be another.
//
// Run delivers changes to sink until ctx ends, reconnecting on its own. It
// calls sink.FeedDown whenever it cannot be sure to hear every change (not
// yet connected, connection lost) and sink.FeedUp once it listens again.
type KeyChangeFeed interface {
	Run(ctx context.Context, sink KeyChangeSink) error
}

// KeyChangeSink receives what a KeyChangeFeed hears; *Verifier satisfies it.
type KeyChangeSink interface {
	// Invalidate drops every cached entry of key id.
	Invalidate(id string)
	// FeedDown drops the whole cache and keeps entries only for the short
	// lifetime until FeedUp: changes may be missed meanwhile.
	FeedDown()
	// FeedUp restores the normal cache lifetime.
	FeedUp()
}

// Verifier satisfies KeyChangeSink.
var _ KeyChangeSink = (*Verifier)(nil)

// DefaultFeedDownTTL is how long a key stays cached while a KeyChangeFeed
// is down (VerifierOptions.FeedDownTTL): the bound on how late a change
// made elsewhere is seen then.
const DefaultFeedDownTTL = time.Second

// FeedDown drops every cached key and unknown secret, and caches new
// lookups for FeedDownTTL only, until FeedUp: while the feed of changes is
// down, a revocation elsewhere is seen within FeedDownTTL instead of
// CacheTTL.
func (v *Verifier) FeedDown() {
	v.feedDown.Store(true)
	v.InvalidateAll()
}

// FeedUp restores the normal cache lifetimes after FeedDown. Entries cached
// meanwhile keep their short lifetime.
func (v *Verifier) FeedUp() { v.feedDown.Store(false) }

// cacheTTL is the lifetime of a new positive entry.
func (v *Verifier) cacheTTL() int64 {
	if v.feedDown.Load() && v.feedDownTTL < v.ttl {
		return v.feedDownTTL
	}
	return v.ttl
}

// negativeTTL is the lifetime of a new "unknown" entry.
func (v *Verifier) negativeTTL() int64 {
	if v.feedDown.Load() && v.feedDownTTL < v.negTTL {
		return v.feedDownTTL
	}
	return v.negTTL
}
