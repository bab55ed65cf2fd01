package handlers_test

import (
	"net/http"
	"strings"
	"testing"

	"tollgate/auth"
)

// TestKeyBodyRedacted: the 38 characters of a key after its tg_ prefix
// (recognisable by their checksum) are a secret too: pasted into a URL
// path they are redacted from the error message and the access log, and
// sent as X-Request-ID they are neither echoed nor logged.
func TestKeyBodyRedacted(t *testing.T) {
	fake := newFakeOllama(t)
	ts := newTestServer(t, fakeCatalog(fake.URL, "5s"))
	body := strings.TrimPrefix(ts.key, auth.SecretPrefix)
	other, _ := auth.Generate()
	otherBody := strings.TrimPrefix(other, auth.SecretPrefix)
	secrets := []string{body, otherBody}

	for _, path := range []string{"/" + body, "/models/" + otherBody + "/x", "/keys/" + body + ".json", "/x-" + body} {
		t.Run("path "+strings.Replace(path, body, "BODY", 1), func(t *testing.T) {
			resp, e := ts.doError(t, "GET", path, nil, http.StatusNotFound, "not_found", []string{"[redacted]"})
			for _, s := range secrets {
				if strings.Contains(e.Message, s) {
					t.Errorf("the 404 message holds a key's body: %q", e.Message)
				}
			}
			line := ts.accessLog(t, resp.Header.Get("X-Request-ID"))
			if p, _ := line["path"].(string); !strings.Contains(p, "[redacted]") {
				t.Errorf("access log path %q: want the key's body redacted", p)
			}
		})
	}
	for _, id := range []string{body, "trace-" + body, otherBody + ".1"} {
		t.Run("request id", func(t *testing.T) {
			var gen generateResponse
			resp := ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, &gen, "X-Request-ID", id)
			if got := resp.Header.Get("X-Request-ID"); got == id || !strings.HasPrefix(got, "req_") {
				t.Errorf("X-Request-ID %q: want Tollgate's own, not the key's body echoed", got)
			}
			if line := ts.accessLog(t, gen.ID); line["client_request_id"] != nil {
				t.Errorf("access log client_request_id %v: a key's body", line["client_request_id"])
			}
		})
	}
	// Ordinary ids and paths are left alone, however long their runs of
	// letters and digits.
	plain := strings.Repeat("a1B2", 10)[:38]
	resp := ts.doJSON(t, "POST", "/generate", generateBody, http.StatusOK, nil, "X-Request-ID", plain)
	if got := resp.Header.Get("X-Request-ID"); got != plain {
		t.Errorf("X-Request-ID %q: want %q echoed", got, plain)
	}
	ts.doError(t, "GET", "/"+plain, nil, http.StatusNotFound, "not_found", []string{plain})

	if log := ts.logs.String(); strings.Contains(log, body) || strings.Contains(log, otherBody) {
		t.Errorf("the log holds a key's body:\n%s", log)
	}
}
