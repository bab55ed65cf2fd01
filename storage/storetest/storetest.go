// Package storetest is the one conformance suite every storage.Store
// passes: the SQLite store and the PostgreSQL store run it alike, so
// whatever a single node relies on holds for several replicas too.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/idempotency"
	"tollgate/jobs"
	"tollgate/metering"
	"tollgate/storage"
)

// Opener opens a new, empty store for one test; it closes it at cleanup.
type Opener func(t *testing.T) storage.Store

// day0 is the suite's start time: mid-month, so month boundaries are near.
var day0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

// Run runs every conformance test against stores from open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, storage.Store)
	}{
		{"KeysRoundTrip", keysRoundTrip},
		{"RevocationKeepsFirstTime", revocation},
		{"RotationKeepsTwoSecrets", rotation},
		{"SelfRotationCheckedInTheTransaction", selfRotation},
		{"SelfRotationLimit", selfRotationLimit},
		{"Audit", audit},
		{"LastUsedOnlyMovesForward", lastUsed},
		{"UsageBatchAndRequestIDUniqueness", usageBatch},
		{"UsageClaimRewritesBeforeInsert", usageClaim},
		{"UsageReportsAndExport", usageReports},
		{"UsageRecentAndModelFilter", usageRecent},
		{"Sessions", sessions},
		{"Accounts", accounts},
		{"BillingExport", billingExport},
		{"BillingLease", billingLease},
		{"AccountMonthTotals", accountMonthTotals},
		{"Idempotency", idempotencyLifecycle},
		{"IdempotencyConcurrentClaims", idempotencyRace},
		{"JobsLifecycle", jobsLifecycle},
		{"JobsConcurrentClaims", jobsRace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

type keyEnv struct {
	store storage.Store
	clock *authtest.Clock
	keys  *auth.Keys
	ver   *auth.Verifier
}

func newKeyEnv(s storage.Store) *keyEnv {
	c := authtest.NewClock(day0)
	v := auth.NewVerifier(s, auth.VerifierOptions{CacheTTL: -1, NegativeTTL: -1, Now: c.Now})
	return &keyEnv{store: s, clock: c, keys: auth.NewKeys(s, v, c.Now), ver: v}
}

func (e *keyEnv) create(t *testing.T, spec auth.Spec) (auth.Key, string) {
	t.Helper()
	k, secret, err := e.keys.Create(context.Background(), auth.ActorCLI, spec)
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

func keysRoundTrip(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	spec := auth.Spec{Name: "acme", Scopes: []auth.Scope{auth.ScopeGenerate, auth.ScopeEmbed}, Models: []string{"llama3.2", "nomic"},
		Limits:    tollgate.Limits{RequestsPerSecond: 2.5, Burst: 7, TokensPerMinute: 9000, MaxConcurrent: 3, MonthlyTokens: 1 << 40, MonthlyRequests: 20, MonthlyBudget: 25_500_000},
		ExpiresAt: day0.Add(48 * time.Hour)}
	k, secret := e.create(t, spec)
	got, err := s.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "acme" || !slices.Equal(got.Scopes, spec.Scopes) || !slices.Equal(got.Models, spec.Models) ||
		got.Limits != spec.Limits || !got.ExpiresAt.Equal(spec.ExpiresAt) || !got.CreatedAt.Equal(day0) ||
		!got.RevokedAt.IsZero() || got.Prefix != k.Prefix {
		t.Fatalf("KeyByID = %+v, want the created %+v", got, k)
	}
	cred, err := s.Credential(ctx, auth.Hash(secret))
	if err != nil || cred.Key.ID != k.ID || !cred.SecretExpiresAt.IsZero() {
		t.Fatalf("Credential = %+v, %v", cred, err)
	}
	if _, err := s.Credential(ctx, auth.Hash("tg_nothing")); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("Credential(unknown) = %v, want ErrUnknown", err)
	}
	if _, err := s.KeyByID(ctx, "key_missing"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("KeyByID(missing) = %v, want ErrNotFound", err)
	}
	e.clock.Advance(time.Second)
	k2, _ := e.create(t, auth.Spec{Name: "second"})
	list, err := s.ListKeys(ctx)
	if err != nil || len(list) != 2 || list[0].ID != k.ID || list[1].ID != k2.ID {
		t.Fatalf("ListKeys = %v, %v; want [%s %s]", list, err, k.ID, k2.ID)
	}
	name := "renamed"
	never := time.Time{}
	up, err := e.keys.Update(ctx, auth.ActorCLI, k.ID, auth.Patch{Name: &name, ExpiresAt: &never})
	if err != nil || up.Name != "renamed" || !up.ExpiresAt.IsZero() {
		t.Fatalf("Update = %+v, %v", up, err)
	}
	if _, err := e.keys.Update(ctx, auth.ActorCLI, "key_missing", auth.Patch{Name: &name}); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("Update(missing) = %v, want ErrNotFound", err)
	}
}

func revocation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, secret := e.create(t, auth.Spec{Name: "r"})
	if _, err := e.ver.Verify(ctx, secret); err != nil {
		t.Fatal(err)
	}
	first := e.clock.Now()
	if _, err := e.keys.Revoke(ctx, auth.ActorCLI, k.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	got, err := e.keys.Revoke(ctx, auth.ActorCLI, k.ID)
	if err != nil || !got.RevokedAt.Equal(first) {
		t.Fatalf("second Revoke = %v, %v; want the first time %v kept", got.RevokedAt, err, first)
	}
	if _, err := e.ver.Verify(ctx, secret); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("Verify after revoke = %v, want ErrRevoked", err)
	}
	if _, _, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, time.Hour); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("Rotate(revoked) = %v, want ErrRevoked", err)
	}
	if _, err := e.keys.Revoke(ctx, auth.ActorCLI, "key_missing"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("Revoke(missing) = %v, want ErrNotFound", err)
	}
}

func rotation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, s0 := e.create(t, auth.Spec{Name: "rot"})
	_, s1, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// s0 lives out its grace; s1 is current.
	c0, err := s.Credential(ctx, auth.Hash(s0))
	if err != nil || !c0.SecretExpiresAt.Equal(day0.Add(time.Hour)) {
		t.Fatalf("old secret = %+v, %v; want it to expire at %v", c0, err, day0.Add(time.Hour))
	}
	if c1, err := s.Credential(ctx, auth.Hash(s1)); err != nil || !c1.SecretExpiresAt.IsZero() {
		t.Fatalf("new secret = %+v, %v", c1, err)
	}
	e.clock.Advance(time.Minute)
	_, s2, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second rotation ends s0 at once (deleted) and s1 now (grace 0).
	if _, err := s.Credential(ctx, auth.Hash(s0)); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("the secret two rotations back = %v, want it deleted", err)
	}
	if _, err := e.ver.Verify(ctx, s1); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("Verify(replaced with grace 0) = %v, want ErrExpired", err)
	}
	if got, err := e.ver.Verify(ctx, s2); err != nil || got.ID != k.ID {
		t.Fatalf("Verify(current) = %v, %v", got, err)
	}
	if got, _ := s.KeyByID(ctx, k.ID); got.Prefix != auth.DisplayPrefix(s2) {
		t.Fatalf("prefix = %q, want the current secret's %q", got.Prefix, auth.DisplayPrefix(s2))
	}
}

// Two self-rotations presenting the same secret at once: the store, not a
// cache, decides, so exactly one wins and the other is ErrSuperseded.
func selfRotation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, secret := e.create(t, auth.Spec{Name: "self"})
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = e.keys.RotateSelf(ctx, k.ID, secret, time.Hour)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, auth.ErrSuperseded):
			t.Fatalf("concurrent self-rotation: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent self-rotations with one secret won, want exactly 1", won, n)
	}
	if _, _, err := e.keys.RotateSelf(ctx, k.ID, secret, time.Hour); !errors.Is(err, auth.ErrSuperseded) {
		t.Fatalf("self-rotation with a replaced secret = %v, want ErrSuperseded", err)
	}
}

func selfRotationLimit(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, secret := e.create(t, auth.Spec{Name: "lim"})
	for i := range auth.SelfRotateLimit {
		var err error
		if _, secret, err = e.keys.RotateSelf(ctx, k.ID, secret, 0); err != nil {
			t.Fatalf("self-rotation %d: %v", i+1, err)
		}
		e.clock.Advance(time.Minute)
	}
	_, _, err := e.keys.RotateSelf(ctx, k.ID, secret, 0)
	var limit *auth.RotateLimitError
	if !errors.As(err, &limit) {
		t.Fatalf("self-rotation %d = %v, want *RotateLimitError", auth.SelfRotateLimit+1, err)
	}
	// The first of the ten leaves the window 50 minutes later.
	if want := auth.SelfRotateWindow - time.Duration(auth.SelfRotateLimit)*time.Minute; limit.RetryAfter != want {
		t.Fatalf("RetryAfter = %v, want %v", limit.RetryAfter, want)
	}
	e.clock.Advance(limit.RetryAfter + time.Second)
	if _, _, err := e.keys.RotateSelf(ctx, k.ID, secret, 0); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	// An admin rotation is not limited.
	if _, _, err := e.keys.Rotate(ctx, auth.ActorCLI, k.ID, 0); err != nil {
		t.Fatal(err)
	}
}

func audit(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	a, _ := e.create(t, auth.Spec{Name: "a"})
	e.clock.Advance(time.Second)
	b, _ := e.create(t, auth.Spec{Name: "b"})
	e.clock.Advance(time.Second)
	if _, _, err := e.keys.Rotate(ctx, a.ID, a.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	if _, err := e.keys.Revoke(ctx, auth.ActorCLI, a.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Audit(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, x := range got {
		acts = append(acts, x.Actor+" "+x.Action)
	}
	want := []string{"cli " + auth.ActionCreate, a.ID + " " + auth.ActionRotate, "cli " + auth.ActionRevoke}
	if !slices.Equal(acts, want) {
		t.Fatalf("audit of %s = %q, want %q", a.ID, acts, want)
	}
	if !got[1].Time.Equal(day0.Add(2*time.Second)) || got[1].KeyID != a.ID {
		t.Fatalf("rotate entry = %+v", got[1])
	}
	all, err := s.Audit(ctx, "")
	if err != nil || len(all) != 4 || all[1].KeyID != b.ID {
		t.Fatalf("whole audit = %+v, %v", all, err)
	}
}

func lastUsed(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, _ := e.create(t, auth.Spec{Name: "u"})
	later, earlier := day0.Add(time.Hour), day0.Add(time.Minute)
	if err := s.TouchLastUsed(ctx, map[string]time.Time{k.ID: later, "key_unknown": later}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchLastUsed(ctx, map[string]time.Time{k.ID: earlier}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.KeyByID(ctx, k.ID); !got.LastUsedAt.Equal(later) {
		t.Fatalf("last used = %v, want %v (never moved back)", got.LastUsedAt, later)
	}
}

func event(id, key, model string, at time.Time, prompt, completion int64, status int) metering.Event {
	return metering.Event{RequestID: id, KeyID: key, Endpoint: metering.EndpointGenerate, Model: model,
		Surface: metering.SurfaceOpenAI, PromptTokens: prompt, CompletionTokens: completion, Status: status,
		Latency: 1500 * time.Microsecond, Cost: tollgate.Money(prompt*10 + completion), Time: at}
}

func usageBatch(t *testing.T, s storage.Store) {
	ctx := context.Background()
	first := []metering.Event{event("r1", "k1", "m", day0, 1, 2, 200), event("r2", "k1", "m", day0, 3, 4, 200)}
	ins, err := s.InsertEvents(ctx, first, nil)
	if err != nil || !slices.Equal(ins, []bool{true, true}) {
		t.Fatalf("InsertEvents = %v, %v", ins, err)
	}
	// r1 again (stored), r3 twice in one batch: only the first r3 counts.
	second := []metering.Event{event("r1", "k1", "m", day0, 100, 100, 200), event("r3", "k2", "m", day0, 5, 6, 200),
		event("r3", "k2", "m", day0, 500, 600, 200)}
	ins, err = s.InsertEvents(ctx, second, nil)
	if err != nil || !slices.Equal(ins, []bool{false, true, false}) {
		t.Fatalf("InsertEvents with duplicates = %v, %v; want [false true false]", ins, err)
	}
	if ins, err := s.InsertEvents(ctx, nil, nil); err != nil || len(ins) != 0 {
		t.Fatalf("empty batch = %v, %v", ins, err)
	}
	var got []metering.Event
	if err := s.ExportEvents(ctx, metering.Query{}, func(e metering.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []metering.Event{first[0], first[1], second[1]}
	if len(got) != len(want) {
		t.Fatalf("stored %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	billed, err := s.Billed(ctx, "r3")
	if err != nil || !billed {
		t.Fatalf("Billed(r3) = %v, %v", billed, err)
	}
	if billed, _ := s.Billed(ctx, "nope"); billed {
		t.Fatal("Billed(nope) = true")
	}
}

// claim is called exactly once, before any event is read: what it writes
// into the batch is what is stored (a Recorder's withdrawn events).
func usageClaim(t *testing.T, s storage.Store) {
	ctx := context.Background()
	events := []metering.Event{event("c1", "k", "m", day0, 10, 20, 200), event("c2", "k", "m", day0, 1, 1, 200)}
	calls := 0
	ins, err := s.InsertEvents(ctx, events, func() {
		calls++
		events[0].Status, events[0].PromptTokens, events[0].CompletionTokens, events[0].Cost = 503, 0, 0, 0
	})
	if err != nil || calls != 1 || !slices.Equal(ins, []bool{true, true}) {
		t.Fatalf("InsertEvents = %v, %v, claim called %d times", ins, err, calls)
	}
	rows, err := s.Summary(ctx, metering.Query{KeyID: "k"})
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	if r := rows[0]; r.Requests != 2 || r.ChargedRequests != 1 || r.PromptTokens != 1 || r.Cost != 11 {
		t.Fatalf("summary = %+v: the claim's rewrite was not what got stored", r)
	}
	// A context that has ended: nothing is claimed or stored.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	called := false
	if _, err := s.InsertEvents(cctx, []metering.Event{event("c3", "k", "m", day0, 1, 1, 200)}, func() { called = true }); err == nil {
		t.Fatal("InsertEvents with an ended context succeeded")
	}
	if called {
		t.Fatal("claim called although the transaction could not begin")
	}
	if billed, _ := s.Billed(ctx, "c3"); billed {
		t.Fatal("c3 stored by a failed InsertEvents")
	}
}

func usageReports(t *testing.T, s storage.Store) {
	ctx := context.Background()
	d1, d2 := day0, day0.Add(24*time.Hour)
	prevMonth := time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC)
	events := []metering.Event{
		event("a1", "ka", "llama", d1, 10, 5, 200),
		event("a2", "ka", "llama", d2, 20, 5, 200),
		event("a3", "ka", "nomic", d2, 7, 0, 502), // a server failure: not a charged request
		event("b1", "kb", "llama", d1, 1, 1, 429),
		event("old", "ka", "llama", prevMonth, 1000, 1000, 200),
	}
	if _, err := s.InsertEvents(ctx, events, nil); err != nil {
		t.Fatal(err)
	}
	month := metering.Query{From: metering.MonthStart(day0), To: metering.NextMonthStart(day0)}
	q := month
	q.GroupBy = metering.GroupKey
	rows, err := s.Summary(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	want := []metering.Row{
		{Group: "ka", Requests: 3, ChargedRequests: 2, PromptTokens: 37, CompletionTokens: 10, Cost: 380},
		{Group: "kb", Requests: 1, ChargedRequests: 1, PromptTokens: 1, CompletionTokens: 1, Cost: 11},
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("by key = %+v\nwant      %+v", rows, want)
	}
	q.GroupBy = metering.GroupDay
	rows, err = s.Summary(ctx, q)
	if err != nil || len(rows) != 2 || rows[0].Group != "2026-03-14" || rows[1].Group != "2026-03-15" || rows[1].Requests != 2 {
		t.Fatalf("by day = %+v, %v", rows, err)
	}
	q.GroupBy, q.KeyID = metering.GroupModel, "ka"
	rows, err = s.Summary(ctx, q)
	if err != nil || len(rows) != 2 || rows[0].Group != "llama" || rows[1].Group != "nomic" || rows[0].PromptTokens != 30 {
		t.Fatalf("by model for ka = %+v, %v", rows, err)
	}
	rows, err = s.Summary(ctx, metering.Query{KeyID: "nobody"})
	if err != nil || len(rows) != 1 || rows[0] != (metering.Row{}) {
		t.Fatalf("ungrouped over nothing = %+v, %v; want one row of zeros", rows, err)
	}
	totals, err := s.MonthTotals(ctx, day0)
	if err != nil {
		t.Fatal(err)
	}
	if got := totals["ka"]; got != (metering.Totals{Requests: 2, PromptTokens: 37, CompletionTokens: 10, Cost: 380}) {
		t.Fatalf("MonthTotals[ka] = %+v", got)
	}
	var ids []string
	err = s.ExportEvents(ctx, metering.Query{KeyID: "ka", From: metering.MonthStart(day0)}, func(e metering.Event) error {
		ids = append(ids, e.RequestID)
		return nil
	})
	if err != nil || !slices.Equal(ids, []string{"a1", "a2", "a3"}) {
		t.Fatalf("export for ka = %v, %v", ids, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ExportEvents(ctx, metering.Query{}, func(metering.Event) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("export stopped by its callback = %v after %d rows", err, n)
	}
}

func idemRecord(owner string) idempotency.Record {
	return idempotency.Record{KeyID: "key_1", Key: "idem-1", Fingerprint: "POST /generate abc", Owner: owner}
}

func idempotencyLifecycle(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := day0
	got, claimed, err := s.Claim(ctx, idemRecord("req-1"), now)
	if err != nil || !claimed || got.Owner != "req-1" {
		t.Fatalf("first Claim = %+v, %v, %v", got, claimed, err)
	}
	got, claimed, err = s.Claim(ctx, idemRecord("req-2"), now.Add(time.Second))
	if err != nil || claimed || got.Owner != "req-1" || got.Done {
		t.Fatalf("Claim while in progress = %+v, %v, %v; want req-1's record", got, claimed, err)
	}
	done := idemRecord("req-1")
	done.Status, done.Header, done.Body = 200, map[string]string{"Content-Type": "application/json"}, []byte{0, 1, 2, 0xff}
	if err := s.Finish(ctx, done); err != nil {
		t.Fatal(err)
	}
	got, claimed, err = s.Claim(ctx, idemRecord("req-3"), now.Add(2*time.Second))
	if err != nil || claimed || !got.Done || got.Status != 200 || string(got.Body) != string(done.Body) ||
		got.Header["Content-Type"] != "application/json" || got.Fingerprint != done.Fingerprint || !got.Created.Equal(now) {
		t.Fatalf("Claim after Finish = %+v, %v, %v; want the finished answer", got, claimed, err)
	}
	// Past the TTL the record is purged and the key is new again.
	later := now.Add(idempotency.TTL + time.Second)
	if _, claimed, err := s.Claim(ctx, idemRecord("req-4"), later); err != nil || !claimed {
		t.Fatalf("Claim after the TTL = %v, %v", claimed, err)
	}
	// Touch keeps a long request alive; without it, it goes stale.
	if err := s.Touch(ctx, "key_1", "idem-1", "req-4", later.Add(idempotency.StaleAfter)); err != nil {
		t.Fatal(err)
	}
	if _, claimed, _ := s.Claim(ctx, idemRecord("req-5"), later.Add(idempotency.StaleAfter+time.Second)); claimed {
		t.Fatal("a touched record was taken over")
	}
	got, claimed, err = s.Claim(ctx, idemRecord("req-6"), later.Add(2*idempotency.StaleAfter+time.Second))
	if err != nil || !claimed || got.Owner != "req-6" {
		t.Fatalf("Claim of a stale record = %+v, %v, %v; want taken over", got, claimed, err)
	}
	// The old owner can neither finish nor release it now.
	if err := s.Finish(ctx, idemRecord("req-4")); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "key_1", "idem-1", "req-4"); err != nil {
		t.Fatal(err)
	}
	if got, claimed, _ := s.Claim(ctx, idemRecord("req-7"), later.Add(2*idempotency.StaleAfter+2*time.Second)); claimed || got.Owner != "req-6" || got.Done {
		t.Fatalf("after the old owner's Finish and Release: %+v, claimed %v", got, claimed)
	}
	if err := s.Release(ctx, "key_1", "idem-1", "req-6"); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := s.Claim(ctx, idemRecord("req-8"), later.Add(2*idempotency.StaleAfter+3*time.Second)); err != nil || !claimed {
		t.Fatalf("Claim after Release = %v, %v", claimed, err)
	}
}

func idempotencyRace(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	won := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, won[i], errs[i] = s.Claim(ctx, idemRecord(fmt.Sprintf("req-%d", i)), day0)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if c := countTrue(won); c != 1 {
		t.Fatalf("%d of %d concurrent claims won, want 1", c, n)
	}
}

func countTrue(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}

// newJob stores a key (for the webhook secret's foreign key) and a job.
func newJob(t *testing.T, s storage.Store, id string, runAfter time.Time, callback string) jobs.Job {
	t.Helper()
	j := jobs.Job{ID: id, KeyID: "key_j", Endpoint: "generate", Request: json.RawMessage(`{"model":"m","prompt":"hi"}`),
		CallbackURL: callback, Status: jobs.Queued, RunAfter: runAfter, CreatedAt: day0}
	if callback != "" {
		j.Delivery = ""
	}
	if err := s.InsertJob(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j
}

func jobsLifecycle(t *testing.T, s storage.Store) {
	ctx := context.Background()
	newJob(t, s, "job_a", day0, "https://example.com/hook")
	newJob(t, s, "job_later", day0.Add(time.Hour), "")
	if _, ok, err := s.ClaimJob(ctx, day0.Add(-time.Second), "w0", day0.Add(time.Minute)); err != nil || ok {
		t.Fatalf("ClaimJob before any is due = %v, %v", ok, err)
	}
	j, ok, err := s.ClaimJob(ctx, day0, "w1", day0.Add(time.Minute))
	if err != nil || !ok || j.ID != "job_a" || j.Status != jobs.Running || j.Attempt != 1 || j.RequestID != "job_a-1" ||
		j.Owner != "w1" || !j.LeaseUntil.Equal(day0.Add(time.Minute)) || string(j.Request) != `{"model":"m","prompt":"hi"}` {
		t.Fatalf("ClaimJob = %+v, %v, %v", j, ok, err)
	}
	if exp, err := s.Expired(ctx, day0.Add(2*time.Minute)); err != nil || len(exp) != 1 || exp[0].ID != "job_a" {
		t.Fatalf("Expired = %+v, %v", exp, err)
	}
	if ok, err := s.RequeueJob(ctx, "job_a", "w1", day0.Add(time.Second), 1, true); err != nil || !ok {
		t.Fatalf("RequeueJob = %v, %v", ok, err)
	}
	j, ok, err = s.ClaimJob(ctx, day0.Add(time.Second), "w2", day0.Add(time.Minute))
	if err != nil || !ok || j.Attempt != 2 || j.RequestID != "job_a-2" || j.Retries != 1 || !j.Recovered {
		t.Fatalf("second claim = %+v, %v, %v", j, ok, err)
	}
	// Fencing: the first run's owner cannot finish it.
	if ok, err := s.FinishJob(ctx, "job_a", "w1", jobs.Finish{Status: jobs.Succeeded, At: day0}); err != nil || ok {
		t.Fatalf("FinishJob by a former owner = %v, %v", ok, err)
	}
	fin := jobs.Finish{Status: jobs.Failed, Error: &jobs.ErrorInfo{Code: "backend_error", Message: "boom"},
		At: day0.Add(2 * time.Second), Delivery: jobs.DeliveryPending}
	if ok, err := s.FinishJob(ctx, "job_a", "w2", fin); err != nil || !ok {
		t.Fatalf("FinishJob = %v, %v", ok, err)
	}
	d, ok, err := s.ClaimDelivery(ctx, day0.Add(3*time.Second), day0.Add(time.Minute))
	if err != nil || !ok || d.ID != "job_a" || d.Status != jobs.Failed || d.Error == nil || d.Error.Message != "boom" {
		t.Fatalf("ClaimDelivery = %+v, %v, %v", d, ok, err)
	}
	if _, ok, _ := s.ClaimDelivery(ctx, day0.Add(3*time.Second), day0.Add(time.Minute)); ok {
		t.Fatal("a claimed delivery was claimed again before its lease ended")
	}
	if err := s.RecordDelivery(ctx, "job_a", jobs.Attempt{At: day0.Add(4 * time.Second), Status: 500, Error: "HTTP 500"},
		jobs.DeliveryPending, day0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordDelivery(ctx, "job_a", jobs.Attempt{At: day0.Add(61 * time.Second), Status: 200},
		jobs.DeliveryDelivered, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ctx, "job_a")
	if err != nil || len(got.Deliveries) != 2 || got.Deliveries[0].Status != 500 || got.Deliveries[1].Status != 200 ||
		got.Delivery != jobs.DeliveryDelivered {
		t.Fatalf("Job = %+v, %v", got, err)
	}
	// Cancel: a queued job ends at once.
	c, err := s.CancelJob(ctx, "job_later", day0.Add(5*time.Second))
	if err != nil || c.Status != jobs.Cancelled || !c.CancelRequested || c.Error == nil {
		t.Fatalf("CancelJob = %+v, %v", c, err)
	}
	if _, err := s.Job(ctx, "job_missing"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("Job(missing) = %v, want ErrNotFound", err)
	}
	n, err := s.PurgeJobs(ctx, day0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeJobs = %d, %v; want 2", n, err)
	}
	// Webhook secrets hang off a key.
	e := newKeyEnv(s)
	k, _ := e.create(t, auth.Spec{Name: "hooks"})
	if sec, err := s.WebhookSecret(ctx, k.ID); err != nil || sec != "" {
		t.Fatalf("WebhookSecret before = %q, %v", sec, err)
	}
	for _, sec := range []string{"whsec_1", "whsec_2"} {
		if err := s.SetWebhookSecret(ctx, k.ID, sec, day0); err != nil {
			t.Fatal(err)
		}
	}
	if sec, err := s.WebhookSecret(ctx, k.ID); err != nil || sec != "whsec_2" {
		t.Fatalf("WebhookSecret = %q, %v", sec, err)
	}
}

// Workers on several replicas claim at once: every job runs once.
func jobsRace(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const jobsN, workers = 12, 4
	for i := range jobsN {
		newJob(t, s, fmt.Sprintf("job_%02d", i), day0, "")
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j, ok, err := s.ClaimJob(ctx, day0, fmt.Sprintf("w%d", w), day0.Add(time.Minute))
				if err != nil {
					errs <- err
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				seen[j.ID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != jobsN {
		t.Fatalf("%d jobs claimed, want %d", len(seen), jobsN)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("job %s claimed %d times", id, n)
		}
	}
}

// usageRecent: the latest requests, newest first, limited, filtered by key
// and model (the dashboard's "recent requests").
func usageRecent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	events := []metering.Event{
		event("r1", "ka", "llama", day0, 1, 1, 200),
		event("r2", "ka", "nomic", day0.Add(time.Minute), 2, 0, 200),
		event("r3", "ka", "llama", day0.Add(2*time.Minute), 3, 3, 499),
		event("r4", "kb", "llama", day0.Add(3*time.Minute), 4, 4, 200),
	}
	events[2].AccountID = "acct_a" // the account the key had then is kept with the row
	if _, err := s.InsertEvents(ctx, events, nil); err != nil {
		t.Fatal(err)
	}
	ids := func(evs []metering.Event) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.RequestID
		}
		return out
	}
	got, err := s.RecentEvents(ctx, metering.Query{KeyID: "ka"}, 2)
	if err != nil || !slices.Equal(ids(got), []string{"r3", "r2"}) {
		t.Fatalf("recent for ka, 2 = %v, %v; want [r3 r2]", ids(got), err)
	}
	if got[0].Status != 499 || got[0].TotalTokens() != 6 || !got[0].Time.Equal(day0.Add(2*time.Minute)) || got[0].Surface != metering.SurfaceOpenAI || got[0].AccountID != "acct_a" || got[1].AccountID != "" {
		t.Fatalf("recent event read back as %+v", got[0])
	}
	got, err = s.RecentEvents(ctx, metering.Query{Model: "llama"}, 10)
	if err != nil || !slices.Equal(ids(got), []string{"r4", "r3", "r1"}) {
		t.Fatalf("recent for model llama = %v, %v; want [r4 r3 r1]", ids(got), err)
	}
	byAccount, err := s.Summary(ctx, metering.Query{GroupBy: metering.GroupAccount})
	if err != nil || len(byAccount) != 2 || byAccount[0].Group != "" || byAccount[0].Requests != 3 ||
		byAccount[1].Group != "acct_a" || byAccount[1].Requests != 1 || byAccount[1].TotalTokens() != 6 {
		t.Fatalf("summary by account = %+v, %v; want 3 requests without one, 1 of 6 tokens for acct_a", byAccount, err)
	}
	if got, err := s.AccountMonthTotals(ctx, "acct_a", day0); err != nil || got.PromptTokens+got.CompletionTokens != 6 || got.Requests != 1 {
		t.Fatalf("AccountMonthTotals(acct_a) = %+v, %v; want its one row, 6 tokens", got, err)
	}
	rows, err := s.Summary(ctx, metering.Query{KeyID: "ka", Model: "llama"})
	if err != nil || len(rows) != 1 || rows[0].Requests != 2 || rows[0].TotalTokens() != 8 {
		t.Fatalf("summary for ka and llama = %+v, %v; want 2 requests, 8 tokens", rows, err)
	}
}

// sessions: stored by id, read back whole, swept once ended, deleted one
// by one.
func sessions(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	k, _ := e.create(t, auth.Spec{Name: "dash"})
	hex64 := func(c string) string { return strings.Repeat(c, 64) }
	a := auth.Session{ID: hex64("a"), KeyID: k.ID, SecretHash: hex64("1"), CreatedAt: day0, ExpiresAt: day0.Add(time.Hour)}
	b := auth.Session{ID: hex64("b"), KeyID: k.ID, SecretHash: hex64("2"), CreatedAt: day0, ExpiresAt: day0.Add(12 * time.Hour)}
	for _, x := range []auth.Session{a, b} {
		if err := s.CreateSession(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.SessionByID(ctx, a.ID); err != nil || got != a {
		t.Fatalf("SessionByID = %+v, %v; want %+v", got, err, a)
	}
	if _, err := s.SessionByID(ctx, hex64("c")); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("unknown session: %v; want auth.ErrNoSession", err)
	}
	if err := s.DeleteSessionsBefore(ctx, day0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SessionByID(ctx, a.ID); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("an ended session survived the sweep: %v", err)
	}
	if err := s.DeleteSession(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SessionByID(ctx, b.ID); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("a deleted session is still there: %v", err)
	}
}

func accounts(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	m := auth.NewAccounts(s, nil, e.clock.Now)
	a, err := m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: "Acme Ltd", StripeCustomerID: "cus_123", Plan: "pro",
		Limits: tollgate.Limits{MonthlyTokens: 1 << 40, MonthlyRequests: 7, MonthlyBudget: 1_000_001}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.AccountByID(ctx, a.ID)
	if err != nil || got != a || !strings.HasPrefix(a.ID, "acct_") || !got.CreatedAt.Equal(day0) {
		t.Fatalf("AccountByID = %+v, %v; want %+v", got, err, a)
	}
	if _, err := s.AccountByID(ctx, "acct_missing"); !errors.Is(err, auth.ErrAccountNotFound) {
		t.Fatalf("AccountByID(missing) = %v, want ErrAccountNotFound", err)
	}
	e.clock.Advance(time.Second)
	b, err := m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: "Beta"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAccounts(ctx)
	if err != nil || len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID {
		t.Fatalf("ListAccounts = %v, %v", list, err)
	}
	cus := "cus_456"
	up, err := m.Update(ctx, "key_admin", b.ID, auth.AccountPatch{StripeCustomerID: &cus, Limits: &tollgate.Limits{MonthlyRequests: 3, MonthlyBudget: 42}})
	if err != nil || up.StripeCustomerID != "cus_456" || up.Limits.MonthlyRequests != 3 || up.Limits.MonthlyBudget != 42 || up.Name != "Beta" {
		t.Fatalf("Update = %+v, %v", up, err)
	}
	if got, _ := s.AccountByID(ctx, b.ID); got != up {
		t.Fatalf("after Update AccountByID = %+v, want %+v", got, up)
	}
	if _, err := m.Update(ctx, auth.ActorCLI, b.ID, auth.AccountPatch{Limits: &tollgate.Limits{TokensPerMinute: 5}}); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("Update(rate limit on an account) = %v, want ErrInvalid", err)
	}
	if _, err := m.Update(ctx, auth.ActorCLI, "acct_missing", auth.AccountPatch{}); !errors.Is(err, auth.ErrAccountNotFound) {
		t.Fatalf("Update(missing) = %v, want ErrAccountNotFound", err)
	}

	// Keys: one in the account, one without; the account travels with the
	// key to the verifier (Credential), and a key can be moved or detached.
	k, secret := e.create(t, auth.Spec{Name: "acme-prod", Account: a.ID})
	plain, _ := e.create(t, auth.Spec{Name: "no account"})
	if k.AccountID != a.ID || plain.AccountID != "" {
		t.Fatalf("created keys' accounts = %q, %q", k.AccountID, plain.AccountID)
	}
	cred, err := s.Credential(ctx, auth.Hash(secret))
	if err != nil || cred.Key.AccountID != a.ID {
		t.Fatalf("Credential = %+v, %v; want account %s", cred.Key, err, a.ID)
	}
	if got, _ := s.KeyByID(ctx, plain.ID); got.AccountID != "" {
		t.Fatalf("key without account reads back account %q", got.AccountID)
	}
	if _, _, err := e.keys.Create(ctx, auth.ActorCLI, auth.Spec{Name: "x", Account: "acct_missing"}); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("Create with an unknown account = %v, want ErrInvalid", err)
	}
	moved, err := e.keys.Update(ctx, auth.ActorCLI, k.ID, auth.Patch{Account: &b.ID})
	if err != nil || moved.AccountID != b.ID {
		t.Fatalf("move key = %+v, %v", moved, err)
	}
	none := ""
	if moved, err = e.keys.Update(ctx, auth.ActorCLI, k.ID, auth.Patch{Account: &none}); err != nil || moved.AccountID != "" {
		t.Fatalf("detach key = %+v, %v", moved, err)
	}
	trail, err := s.Audit(ctx, a.ID)
	if err != nil || len(trail) != 1 || trail[0].Action != auth.ActionAccountCreate {
		t.Fatalf("Audit(account) = %+v, %v", trail, err)
	}
}

// An account's month totals are those of the usage made under it: each row
// keeps the account its key had then, so a key moved in later does not bring
// its past usage along (nor take it away from its old account).
func accountMonthTotals(t *testing.T, s storage.Store) {
	ctx := context.Background()
	e := newKeyEnv(s)
	m := auth.NewAccounts(s, nil, e.clock.Now)
	a, err := m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: "Acme"})
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := e.create(t, auth.Spec{Name: "one", Account: a.ID})
	k2, _ := e.create(t, auth.Spec{Name: "two", Account: a.ID})
	other, _ := e.create(t, auth.Spec{Name: "other"})
	prevMonth := time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC)
	events := []metering.Event{
		event("a1", k1.ID, "llama", day0, 10, 5, 200),
		event("a2", k2.ID, "llama", day0, 20, 5, 200),
		event("a3", k2.ID, "llama", day0, 7, 0, 502), // not a charged request
		event("b1", other.ID, "llama", day0, 100, 100, 200),
		event("old", k1.ID, "llama", prevMonth, 1000, 1000, 200),
	}
	for _, i := range []int{0, 1, 2, 4} {
		events[i].AccountID = a.ID // as the gateway records them
	}
	if _, err := s.InsertEvents(ctx, events, nil); err != nil {
		t.Fatal(err)
	}
	want := metering.Totals{Requests: 2, PromptTokens: 37, CompletionTokens: 10,
		Cost: events[0].Cost + events[1].Cost + events[2].Cost}
	if got, err := s.AccountMonthTotals(ctx, a.ID, day0); err != nil || got != want {
		t.Fatalf("AccountMonthTotals = %+v, %v; want %+v", got, err, want)
	}
	if got, err := s.AccountMonthTotals(ctx, "acct_none", day0); err != nil || got != (metering.Totals{}) {
		t.Fatalf("AccountMonthTotals(no keys) = %+v, %v; want zeros", got, err)
	}
	if _, err := e.keys.Update(ctx, auth.ActorCLI, other.ID, auth.Patch{Account: &a.ID}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AccountMonthTotals(ctx, a.ID, day0); err != nil || got != want {
		t.Fatalf("after a key moved in: AccountMonthTotals = %+v, %v; want %+v (its past usage stays where it was made)", got, err, want)
	}
	moved := event("b2", other.ID, "llama", day0.Add(time.Hour), 1, 1, 200)
	moved.AccountID = a.ID
	if _, err := s.InsertEvents(ctx, []metering.Event{moved}, nil); err != nil {
		t.Fatal(err)
	}
	want.Requests, want.PromptTokens, want.CompletionTokens = 3, 38, 11
	want.Cost += moved.Cost
	if got, err := s.AccountMonthTotals(ctx, a.ID, day0); err != nil || got != want {
		t.Fatalf("after the moved key's first request: AccountMonthTotals = %+v, %v; want %+v", got, err, want)
	}
}
