package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
	"tollgate/internal/redistest"
	"tollgate/storage/postgres/pgtest"
)

// Three replicas on one PostgreSQL and one Redis, behind round-robin, as
// README's "Run several replicas" sets them up: a 20-request monthly quota
// answers exactly 20 across them, each answer has its one usage row in
// PostgreSQL, every replica's /usage agrees, and a key revoked through one
// replica's admin API is refused by all three within a second.
func TestThreeReplicasOnPostgresAndRedis(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewDatabase(t)
	rurl := redistest.URL(t)
	fake := ollamatest.NewServer()
	defer fake.Close()
	admin := createKeyAt(t, time.Now, pg, "--name", "ops", "--scopes", "admin")
	id, key := createKeyWithID(t, pg, "--name", "subscriber", "--monthly-requests", "20")
	var rs []*running
	for range 3 {
		rs = append(rs, serveOn(t, fake, "--db", pg, "--redis", rurl, "--replicas", "3"))
	}

	var ok, refused, next atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 10 {
				r := rs[next.Add(1)%3]
				got := post(t, r.url+"/generate", key, `{"prompt":"hi"}`)
				switch {
				case got.status == 200:
					ok.Add(1)
				case got.status == 402 && got.code == "quota_exceeded":
					refused.Add(1)
				default:
					t.Errorf("unexpected answer %d %s", got.status, got.body)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 20 || refused.Load() != 40 {
		t.Fatalf("answered %d and refused %d of 60, want exactly 20 and 40", ok.Load(), refused.Load())
	}
	rows := exportUsage(t, pg, "--key", id)
	if n, _, _ := billedTotals(rows); n != 20 || len(rows) != 20 {
		t.Fatalf("%d usage rows in PostgreSQL (%d billed), want 20", len(rows), n)
	}
	for i, r := range rs {
		x := send(t, http.DefaultClient, "GET", r.url+"/usage", "", withKey(key))
		var u struct {
			Quota struct {
				RemainingRequests *int64 `json:"remaining_requests"`
			} `json:"quota"`
		}
		wantStatus(t, "GET /usage", x, 200, &u)
		if u.Quota.RemainingRequests == nil || *u.Quota.RemainingRequests != 0 {
			t.Errorf("replica %d: /usage quota %+v, want remaining_requests 0", i, u.Quota)
		}
	}

	otherID, other := createKeyWithID(t, pg, "--name", "leaving")
	for _, r := range rs { // cached everywhere
		if got := post(t, r.url+"/generate", other, `{"prompt":"hi"}`); got.status != 200 {
			t.Fatalf("before revocation: %d %s", got.status, got.body)
		}
	}
	start := time.Now()
	wantStatus(t, "revoke on replica 0", send(t, nil, "POST", rs[0].url+"/admin/keys/"+otherID+"/revoke", "", withKey(admin)), 200, nil)
	for i, r := range rs {
		for post(t, r.url+"/generate", other, `{"prompt":"hi"}`).status != 401 {
			if time.Since(start) > time.Second {
				t.Fatalf("replica %d still answers the revoked key %v after the revocation", i, time.Since(start))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("revoked on all 3 replicas within %v", time.Since(start))
}
