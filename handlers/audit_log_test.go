package handlers_test

import (
	"context"
	"strings"
	"testing"

	"tollgate/auth"
)

// Admin actions leave an audit line in the log naming actor, action and key,
// and the log never holds a created or rotated secret.
func TestAdminActionsAreLogged(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	admin, adminSecret, err := auth.NewKeys(ts.db, nil, nil).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	as := []string{"X-API-Key", adminSecret}
	var created struct {
		Key  string
		Info auth.Key
	}
	ts.doJSON(t, "POST", "/admin/keys", `{"name":"zap"}`, 201, &created, as...)
	var rotated struct{ Key string }
	ts.doJSON(t, "POST", "/admin/keys/"+created.Info.ID+"/rotate", `{"grace":"1h"}`, 200, &rotated, as...)
	ts.doJSON(t, "POST", "/admin/keys/"+created.Info.ID+"/revoke", nil, 200, nil, as...)

	lines := ts.logLines(t, "audit", "key_id", created.Info.ID)
	var actions []string
	for _, l := range lines {
		if l["actor"] != admin.ID {
			t.Errorf("audit line actor = %v, want %s", l["actor"], admin.ID)
		}
		actions = append(actions, l["action"].(string))
	}
	if got := strings.Join(actions, ","); got != "key.create,key.rotate,key.revoke" {
		t.Fatalf("audit lines for the key: %q", got)
	}
	logs := ts.logs.String()
	for _, secret := range []string{adminSecret, created.Key, rotated.Key} {
		if secret == "" || strings.Contains(logs, secret) {
			t.Fatalf("a secret (%d chars) is missing from the answers or present in the log", len(secret))
		}
	}
}
