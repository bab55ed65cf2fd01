package auth

import (
	"testing"
	"time"
)

// A lost feed of key changes drops the whole cache and shortens its
// lifetime until the feed is back: a revocation elsewhere is then seen
// within FeedDownTTL, not CacheTTL.
func TestFeedDownDropsTheCacheAndShortensIt(t *testing.T) {
	f := newFixture(t, VerifierOptions{CacheTTL: time.Hour, FeedDownTTL: time.Second})
	f.verify(t, f.secret, nil)
	revoked := f.key
	revoked.RevokedAt = f.clock.Now()
	f.store.setKey(revoked)
	f.verify(t, f.secret, nil) // cached for an hour

	f.v.FeedDown()
	f.verify(t, f.secret, ErrRevoked) // the cache was dropped

	// Un-revoked in the store (a stand-in for any change made elsewhere):
	// the cached revocation lasts FeedDownTTL, not the hour.
	f.store.setKey(f.key)
	f.clock.Advance(999 * time.Millisecond)
	f.verify(t, f.secret, ErrRevoked)
	f.clock.Advance(time.Millisecond)
	f.verify(t, f.secret, nil)

	f.v.FeedUp()
	f.clock.Advance(time.Second) // what was cached while down expires
	f.verify(t, f.secret, nil)   // cached for the hour again
	f.store.setKey(revoked)
	f.clock.Advance(time.Minute)
	f.verify(t, f.secret, nil) // the normal hour again
}
