package handlers_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"tollgate"
	"tollgate/inference/ollamatest"
	"tollgate/storage"
)

// /readyz says whether usage records reach the database: "ok", or, while
// loading fails, degraded (200: answers go on, their usage waits safely in
// the journal) with how much waits and why, naming no secret.
func TestReadyzReportsTheUsageJournal(t *testing.T) {
	fake := newFakeOllama(t, ollamatest.WithModels("llama3.2:3b", "nomic-embed-text"))
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	var ready struct {
		Status       string
		UsageJournal string `json:"usage_journal"`
	}
	ts.doJSON(t, http.MethodGet, "/readyz", nil, 200, &ready)
	if ready.UsageJournal != "ok" {
		t.Fatalf("usage_journal = %q with a healthy journal, want ok", ready.UsageJournal)
	}

	down := &storage.UnavailableError{System: "PostgreSQL", Addr: "db.internal:5432", Err: errors.New("dial tcp: connection refused")}
	stalled := newTestServer(t, fakeCatalog(fake.URL, "5s"), withJournalHealth(func() (int64, error) { return 4096, down }))
	stalled.doJSON(t, http.MethodGet, "/readyz", nil, 200, &ready)
	if ready.Status != "degraded" || !strings.Contains(ready.UsageJournal, "4096 bytes") ||
		!strings.Contains(ready.UsageJournal, "PostgreSQL at db.internal:5432 is not reachable") {
		t.Fatalf("/readyz with a stalled journal: status %q, usage_journal %q", ready.Status, ready.UsageJournal)
	}
	if tollgate.ErrorCode(down) != tollgate.CodeDatabaseUnavailable {
		t.Fatal("the test's error is not a database_unavailable")
	}
}
