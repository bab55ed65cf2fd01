package handlers_test

// Helpers for the safety-net tests (safetynet_*_test.go): black-box tests,
// through HTTP and the database only, that pin down admission and metering
// rules which would otherwise break silently when that logic moves out of
// the Gin chain. They use no handler internals, only the harness, the
// withRecorder hook, auth.Keys to create keys and storage to read usage rows.

import (
	"context"
	"testing"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/metering"
)

// newKey creates a key with spec directly in the server's database and
// returns its id and secret (send it with "X-API-Key", secret).
func (ts *testServer) newKey(t testing.TB, spec auth.Spec) (id, secret string) {
	t.Helper()
	if spec.Name == "" {
		spec.Name = t.Name()
	}
	k, secret, err := auth.NewKeys(ts.db, nil, nil).Create(context.Background(), auth.ActorCLI, spec)
	if err != nil {
		t.Fatalf("creating a key: %v", err)
	}
	return k.ID, secret
}

// usageRows returns the committed usage rows of key id, oldest first.
func (ts *testServer) usageRows(t testing.TB, id string) []metering.Event {
	t.Helper()
	ts.flushUsage(t)
	var rows []metering.Event
	err := ts.db.ExportEvents(context.Background(), metering.Query{KeyID: id}, func(ev metering.Event) error {
		rows = append(rows, ev)
		return nil
	})
	if err != nil {
		t.Fatalf("reading usage rows: %v", err)
	}
	return rows
}

// recordFunc is a gateway.Recorder made of a function, for withRecorder.
type recordFunc func(ctx context.Context, ev metering.Event) error

func (f recordFunc) Record(ctx context.Context, ev metering.Event) error { return f(ctx, ev) }

var _ gateway.Recorder = recordFunc(nil)
