package sqlite_test

import (
	"context"
	"testing"
	"time"

	"tollgate/idempotency"
)

// TestIdempotencyLifecycle: a claim wins once; the record is in progress
// for others until finished, then replayable; a stale in-progress record is
// taken over; a released one is free again; an expired one is purged.
func TestIdempotencyLifecycle(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(owner string) idempotency.Record {
		return idempotency.Record{KeyID: "k1", Key: "abc", Fingerprint: "fp", Owner: owner}
	}
	claim := func(owner string, now time.Time) (idempotency.Record, bool) {
		t.Helper()
		got, ok, err := db.Claim(ctx, rec(owner), now)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return got, ok
	}
	if _, ok := claim("r1", t0); !ok {
		t.Fatal("first claim lost")
	}
	if got, ok := claim("r2", t0.Add(time.Minute)); ok || got.Done || got.Owner != "r1" {
		t.Fatalf("second claim: %+v %v, want r1's record in progress", got, ok)
	}
	// Another API key's record of the same Idempotency-Key is its own.
	other := rec("r9")
	other.KeyID = "k2"
	if _, ok, err := db.Claim(ctx, other, t0); err != nil || !ok {
		t.Fatalf("another key's claim: %v %v", ok, err)
	}
	// A stale in-progress record is taken over, and its old owner cannot
	// finish it any more.
	if _, ok := claim("r3", t0.Add(idempotency.StaleAfter+time.Second)); !ok {
		t.Fatal("stale record not taken over")
	}
	done := rec("r1")
	done.Status, done.Header, done.Body = 200, map[string]string{"Content-Type": "application/json"}, []byte("old")
	if err := db.Finish(ctx, done); err != nil {
		t.Fatal(err)
	}
	done.Owner, done.Body = "r3", []byte("new")
	if err := db.Finish(ctx, done); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(idempotency.StaleAfter + 2*time.Second)
	got, ok := claim("r4", now)
	if ok || !got.Done || got.Status != 200 || string(got.Body) != "new" || got.Header["Content-Type"] != "application/json" {
		t.Fatalf("after Finish: %+v %v", got, ok)
	}
	// Released records are free; done ones are not released.
	if err := db.Release(ctx, "k1", "abc", "r3"); err != nil {
		t.Fatal(err)
	}
	if _, ok := claim("r5", now); ok {
		t.Fatal("Release deleted a done record")
	}
	// After the TTL the record is gone and the key can be used afresh.
	if _, ok := claim("r6", got.Created.Add(idempotency.TTL+time.Second)); !ok {
		t.Fatal("expired record still replayed")
	}
	if err := db.Release(ctx, "k1", "abc", "r6"); err != nil {
		t.Fatal(err)
	}
	if _, ok := claim("r7", got.Created.Add(idempotency.TTL+time.Second)); !ok {
		t.Fatal("released record still held")
	}
}

// A request still running keeps its record alive with Touch: past
// StaleAfter from its claim, but not from its last touch, a retry finds it
// in progress instead of taking it over (and running it a second time).
func TestIdempotencyTouchKeepsALongRequest(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	r := idempotency.Record{KeyID: "k1", Key: "long", Fingerprint: "fp", Owner: "r1"}
	if _, ok, err := db.Claim(ctx, r, t0); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	for i := 1; i <= 8; i++ { // a 20-minute stream, touched every 2.5 minutes
		if err := db.Touch(ctx, "k1", "long", "r1", t0.Add(time.Duration(i)*idempotency.StaleAfter/4)); err != nil {
			t.Fatal(err)
		}
	}
	retry := r
	retry.Owner = "r2"
	got, ok, err := db.Claim(ctx, retry, t0.Add(2*idempotency.StaleAfter+time.Minute))
	if err != nil || ok || got.Owner != "r1" {
		t.Fatalf("retry 21 minutes in: %+v %v %v; want r1's record still in progress", got, ok, err)
	}
	// A touch by someone else's owner id changes nothing.
	if err := db.Touch(ctx, "k1", "long", "r2", t0.Add(3*idempotency.StaleAfter)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.Claim(ctx, retry, t0.Add(3*idempotency.StaleAfter+time.Minute)); !ok {
		t.Fatal("a record untouched for more than StaleAfter was not taken over")
	}
}
