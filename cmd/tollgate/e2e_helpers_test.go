package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// Helpers shared by the black-box tests: HTTP exchanges read in full, the
// error envelope, the CLI run in-process, and polling with a deadline.

// exchange is one HTTP request and its response, read in full.
type exchange struct {
	status int
	header http.Header
	body   []byte
}

type reqOpt func(*http.Request)

func withKey(k string) reqOpt { return func(r *http.Request) { r.Header.Set("X-API-Key", k) } }

func withHeader(name, value string) reqOpt {
	return func(r *http.Request) { r.Header.Set(name, value) }
}

// send makes one request with hc (nil: http.DefaultClient) and reads the
// whole answer.
func send(t *testing.T, hc *http.Client, method, url, body string, opts ...reqOpt) exchange {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return exchange{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantStatus fails unless x has status and decodes its JSON body into out
// (when out is not nil).
func wantStatus(t *testing.T, what string, x exchange, status int, out any) {
	t.Helper()
	if x.status != status {
		t.Fatalf("%s = %d %s; want %d", what, x.status, x.body, status)
	}
	if out != nil {
		if err := json.Unmarshal(x.body, out); err != nil {
			t.Fatalf("%s: body %s: %v", what, x.body, err)
		}
	}
}

// errorDetail is the inside of the error envelope.
type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// wantError checks that x is the error envelope
// {"error":{"code","message","request_id"}} with status and code, that the
// request id is Tollgate's own (the X-Request-ID header when the client sent
// none), and that a 401 carries WWW-Authenticate.
func wantError(t *testing.T, what string, x exchange, status int, code string) errorDetail {
	t.Helper()
	var env map[string]map[string]any
	if x.status != status || json.Unmarshal(x.body, &env) != nil || len(env) != 1 || len(env["error"]) != 3 {
		t.Fatalf("%s = %d %s; want %d and the error envelope with code %q", what, x.status, x.body, status, code)
	}
	var e struct{ Error errorDetail }
	_ = json.Unmarshal(x.body, &e)
	d := e.Error
	if d.Code != code || d.Message == "" || !strings.HasPrefix(d.RequestID, "req_") {
		t.Fatalf("%s: error %+v; want code %q, a message and a req_ id", what, d, code)
	}
	if h := x.header.Get("X-Request-ID"); h == "" || strings.HasPrefix(h, "req_") && h != d.RequestID {
		t.Errorf("%s: X-Request-ID %q, envelope request_id %q", what, h, d.RequestID)
	}
	if ct := x.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	if got := x.header.Get("WWW-Authenticate"); (status == http.StatusUnauthorized) != (got != "") {
		t.Errorf("%s: status %d with WWW-Authenticate %q", what, status, got)
	}
	return d
}

// cli runs a tollgate command in-process and returns its stdout.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, env(), time.Now, &out, &errOut); err != nil {
		t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// createKeyWithID runs `tollgate keys create --json` on db and returns the
// key's id and secret.
func createKeyWithID(t *testing.T, db string, args ...string) (id, secret string) {
	t.Helper()
	out := cli(t, append([]string{"keys", "create", "--db", db, "--json"}, args...)...)
	var created struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" || created.Key == "" {
		t.Fatalf("keys create --json printed %q (%v)", out, err)
	}
	return created.ID, created.Key
}

// usageRow is one record of `tollgate usage export --format json`.
type usageRow struct {
	RequestID        string `json:"request_id"`
	KeyID            string `json:"key_id"`
	Endpoint         string `json:"endpoint"`
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	Cost             string `json:"cost"`
	CostMicros       int64  `json:"cost_micros"`
	Status           int    `json:"status"`
	CreatedAt        string `json:"created_at"`
}

// exportUsage runs `tollgate usage export --format json` on db and returns
// the records by request id.
func exportUsage(t *testing.T, db string, args ...string) map[string]usageRow {
	t.Helper()
	out := cli(t, append([]string{"usage", "export", "--db", db, "--format", "json"}, args...)...)
	var rows []usageRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("usage export printed %q: %v", out, err)
	}
	byID := make(map[string]usageRow, len(rows))
	for _, r := range rows {
		if _, dup := byID[r.RequestID]; dup {
			t.Fatalf("usage export has two records for %s", r.RequestID)
		}
		byID[r.RequestID] = r
	}
	return byID
}

// eventually polls cond every 20 ms until it holds, failing after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newFake starts a fake Ollama that closes when the test ends (after a
// server started later has stopped).
func newFake(t *testing.T, opts ...ollamatest.Option) *ollamatest.Server {
	fake := ollamatest.NewServer(opts...)
	t.Cleanup(fake.Close)
	return fake
}

// serveOn starts `tollgate serve` in front of fake with the tiny catalog.
func serveOn(t *testing.T, fake *ollamatest.Server, args ...string) *running {
	t.Helper()
	cat := writeFile(t, "models.yaml", tinyCatalog(fake.URL, "tiny"))
	return startServe(t, env("TOLLGATE_MODELS", cat), args...)
}

// serveOnFake starts a fake Ollama and `tollgate serve` in front of it.
func serveOnFake(t *testing.T, opts ...ollamatest.Option) (*running, *ollamatest.Server) {
	t.Helper()
	fake := newFake(t, opts...)
	return serveOn(t, fake), fake
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip (e.g. 127.0.0.2), so a test can be a second client
// address; maxIdle is kept per host.
func clientFrom(t *testing.T, ip string, maxIdle int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: maxIdle}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
