package handlers_test

import (
	"net/http"
	"testing"

	"tollgate/auth"
)

// TestUsageDatesOutOfRange: report and export dates the store cannot hold
// (usage times are Unix nanoseconds, years 1678-2262) are a 400 naming the
// parameter, not a 200 with nothing in it.
func TestUsageDatesOutOfRange(t *testing.T) {
	_, ts := newFakeServer(t, "10s")
	_, admin := ts.newKey(t, auth.Spec{Scopes: []auth.Scope{auth.ScopeAdmin}})
	for _, tc := range []struct{ path, param string }{
		{"/usage?from=2026-01-01&to=2300-01-01", "to"},
		{"/usage?from=1969-12-31", "from"},
		{"/admin/usage?from=2026-01-01&to=2300-01-01T00:00:00Z", "to"},
		{"/admin/usage?from=0001-01-01&group_by=day", "from"},
		{"/admin/usage/export?from=2026-01-01&to=2300-01-01", "to"},
		{"/admin/usage/export?from=2262-04-12&to=2263-01-01&format=json", "from"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			ts.doError(t, "GET", tc.path, nil, http.StatusBadRequest, "invalid_request",
				[]string{`query parameter "` + tc.param + `"`, "between 1970-01-01 and 2200-01-01"}, "X-API-Key", admin)
		})
	}
	// The edges are fine.
	ts.doJSON(t, "GET", "/admin/usage?from=1970-01-01&to=2200-01-01", nil, http.StatusOK, nil, "X-API-Key", admin)
}
