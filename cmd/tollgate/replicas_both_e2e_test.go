package main

import (
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

	hammerQuota(t, rs, key)
	rows := exportUsage(t, pg, "--key", id)
	if n, _, _ := billedTotals(rows); n != 20 || len(rows) != 20 {
		t.Fatalf("%d usage rows in PostgreSQL (%d billed), want 20", len(rows), n)
	}
	wantNoRequestsLeft(t, rs, key)

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
