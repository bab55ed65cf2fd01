package handlers_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"tollgate/auth"
)

// sendHeaders sends GET path with exactly the given header fields (name,
// value pairs; a name may repeat) and nothing else that authenticates.
func (ts *testServer) sendHeaders(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readAll(t, resp)
}

// TestTwoDifferentCredentials: a request that presents two different keys
// (X-API-Key and Authorization: Bearer, or X-API-Key twice) is refused with
// 400 instead of being served with whichever came first; the same key sent
// twice is fine. Neither key appears in the answer or the log.
func TestTwoDifferentCredentials(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	_, other, err := auth.NewKeys(ts.db, nil, nil).Create(context.Background(), auth.ActorCLI, auth.Spec{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	guess, _ := auth.Generate()
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"X-API-Key and a different Bearer", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + other}, http.StatusBadRequest},
		{"X-API-Key and an unknown Bearer", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + guess}, http.StatusBadRequest},
		{"a bad X-API-Key and a valid Bearer", []string{"X-API-Key", guess, "Authorization", "Bearer " + ts.key}, http.StatusBadRequest},
		{"two different X-API-Key", []string{"X-API-Key", ts.key, "X-API-Key", other}, http.StatusBadRequest},
		{"two different Bearer", []string{"Authorization", "Bearer " + ts.key, "Authorization", "Bearer " + other}, http.StatusBadRequest},
		{"the same key in both", []string{"X-API-Key", ts.key, "Authorization", "Bearer " + ts.key}, http.StatusOK},
		{"the same X-API-Key twice", []string{"X-API-Key", ts.key, "X-API-Key", ts.key}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.sendHeaders(t, "/models", tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == http.StatusBadRequest {
				e := checkEnvelope(t, body, "invalid_request", "different API keys")
				for _, k := range []string{ts.key, other, guess} {
					if strings.Contains(e.Message, k) || strings.Contains(e.Message, auth.DisplayPrefix(k)) {
						t.Errorf("the message shows a key: %q", e.Message)
					}
				}
			}
		})
	}
	if log := ts.logs.String(); strings.Contains(log, ts.key) || strings.Contains(log, other) || strings.Contains(log, guess) {
		t.Errorf("the log holds a key:\n%s", log)
	}
}
