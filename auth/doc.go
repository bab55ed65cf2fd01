// Package auth owns Tollgate's API keys: their format and generation, the
// Key type (scopes, models, limits, expiry, revocation), verification of a
// presented secret through a short-lived in-memory cache, and the Keys
// manager that creates, rotates, revokes and updates keys with an audit entry
// for every change.
//
// A secret looks like tg_ + 32 base62 characters from crypto/rand (about 190
// bits) + 6 base62 characters of a CRC-32 checksum, so a mistyped or random
// string fails CheckFormat before any lookup and secret scanners can
// recognise a leaked key. Only Hash(secret) (hex SHA-256) and DisplayPrefix
// (the first 11 characters) are ever stored.
//
// The package imports neither Gin nor storage: persistence goes through the
// small interfaces in store.go, which package storage satisfies.
package auth
