package handlers_test

// The test harness: every test builds its server with newTestServer and
// sends every request through testServer.send (directly or through do,
// doJSON, doError), which adds the test key; a test that needs another key
// or none overrides the X-API-Key header.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
	"tollgate/jobs"
	"tollgate/limits"
	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// testServer is a Tollgate server on a loopback port, wired as cmd/tollgate
// wires it: a real inference client, SQLite, the key verifier, the usage
// recorder. key is an API key with the default scopes, sent with every
// request.
type testServer struct {
	URL    string
	client *http.Client
	db     *sqlite.DB
	logs   *logSink
	key    string
	keys   *auth.Keys
	jobs   *jobs.Manager
	dbPath string
	gw     *gateway.Gateway
	// journal is the usage journal in front of db: flushUsage before
	// reading usage rows from db directly.
	journal *metering.Journal
}

// flushUsage waits until every usage record journaled so far is in the
// database.
func (ts *testServer) flushUsage(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.journal.Flush(ctx); err != nil {
		t.Fatalf("flushing the usage journal: %v", err)
	}
}

type serverConfig struct {
	maxBody       int64
	bodyTimeout   time.Duration
	proxies       []string
	wrap          func(gateway.Inferencer) gateway.Inferencer
	record        func(gateway.Recorder) gateway.Recorder
	dbPath        string
	now           func() time.Time
	jobs          func(*jobs.Config)
	jobsStopped   bool
	logTo         func(io.Writer) io.Writer
	loadEvery     time.Duration
	journalHealth handlers.JournalHealth
	tls           bool
}

type serverOpt func(*serverConfig)

// withMaxBody sets Config.MaxBodyBytes.
func withMaxBody(n int64) serverOpt { return func(c *serverConfig) { c.maxBody = n } }

// withBodyTimeout sets Config.BodyTimeout.
func withBodyTimeout(d time.Duration) serverOpt { return func(c *serverConfig) { c.bodyTimeout = d } }

// withTrustedProxies sets Config.TrustedProxies.
func withTrustedProxies(p ...string) serverOpt { return func(c *serverConfig) { c.proxies = p } }

// withClock gives the server, the key verifier and the gateway a clock
// (an authtest.Clock's Now), so that tests advance time instead of sleeping.
func withClock(now func() time.Time) serverOpt { return func(c *serverConfig) { c.now = now } }

// withInferencer wraps the real inference client, e.g. to make it panic.
func withInferencer(wrap func(gateway.Inferencer) gateway.Inferencer) serverOpt {
	return func(c *serverConfig) { c.wrap = wrap }
}

// withRecorder wraps the real usage recorder, e.g. to make it block or fail.
func withRecorder(wrap func(gateway.Recorder) gateway.Recorder) serverOpt {
	return func(c *serverConfig) { c.record = wrap }
}

// withJobs changes the job manager's config (after the harness's: 2
// workers, 20 ms polls, no allowed networks).
func withJobs(mod func(*jobs.Config)) serverOpt { return func(c *serverConfig) { c.jobs = mod } }

// withJobsStopped leaves the job manager unstarted: jobs stay queued until
// the test calls ts.jobs.Start.
func withJobsStopped() serverOpt { return func(c *serverConfig) { c.jobsStopped = true } }

// withJournalHealth replaces what /readyz is told of the usage journal.
func withJournalHealth(h handlers.JournalHealth) serverOpt {
	return func(c *serverConfig) { c.journalHealth = h }
}

// withJournalLoadEvery sets the usage journal's LoadEvery: a long one
// leaves records in the journal until something flushes it.
func withJournalLoadEvery(d time.Duration) serverOpt {
	return func(c *serverConfig) { c.loadEvery = d }
}

// withLogWriter routes the server log through wrap (which must pass it on
// to the writer it is given).
func withLogWriter(wrap func(io.Writer) io.Writer) serverOpt {
	return func(c *serverConfig) { c.logTo = wrap }
}

// withTLS serves HTTPS (the test client trusts its certificate).
func withTLS() serverOpt { return func(c *serverConfig) { c.tls = true } }

// withDB opens the database file at path instead of a fresh one, so that
// two servers can share it as two instances would.
func withDB(path string) serverOpt { return func(c *serverConfig) { c.dbPath = path } }

// newTestServer starts a server for the catalog in catalogYAML. It is closed
// when the test ends.
func newTestServer(t testing.TB, catalogYAML string, opts ...serverOpt) *testServer {
	t.Helper()
	var cfg serverConfig
	for _, o := range opts {
		o(&cfg)
	}
	cat, err := inference.Parse("test.yaml", []byte(catalogYAML))
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	ctx := context.WithoutCancel(t.Context())
	if cfg.dbPath == "" {
		cfg.dbPath = filepath.Join(t.TempDir(), "t.db")
	}
	db, err := sqlite.Open(ctx, cfg.dbPath)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ollama := inference.NewClient(cat)
	var inf gateway.Inferencer = ollama
	if cfg.wrap != nil {
		inf = cfg.wrap(inf)
	}
	logs := &logSink{}
	var logTo io.Writer = logs
	if cfg.logTo != nil {
		logTo = cfg.logTo(logs)
	}
	log := slog.New(slog.NewJSONHandler(logTo, &slog.HandlerOptions{Level: slog.LevelDebug}))
	counters := metering.NewCounters(nil)
	metrics := handlers.NewMetrics()
	// The usage journal, as serve wires it by default.
	journal, err := metering.OpenJournal(ctx, cfg.dbPath+".journal", metering.JournalOptions{Store: db,
		OnRecord: counters.Add, OnLoad: metrics.ObserveBatch, Logger: log, LoadEvery: cfg.loadEvery})
	if err != nil {
		t.Fatalf("metering.OpenJournal: %v", err)
	}
	t.Cleanup(func() { journal.Close(ctx) }) // after the server, before the database
	var rec gateway.Recorder = journal
	usage := journal.Reports(db)
	journalHealth := handlers.JournalHealth(journal.Backlog)
	if cfg.journalHealth != nil {
		journalHealth = cfg.journalHealth
	}
	if cfg.record != nil {
		rec = cfg.record(rec)
	}
	verifier := auth.NewVerifier(db, auth.VerifierOptions{LastUsed: db, Now: cfg.now})
	keys := auth.NewKeys(db, verifier, cfg.now)
	_, secret, err := keys.Create(ctx, "test", auth.Spec{Name: "test"})
	if err != nil {
		t.Fatalf("creating a key: %v", err)
	}
	accounts := auth.NewAccountCache(db, cfg.now)
	gw := gateway.New(gateway.Config{Inference: inf, Recorder: rec, Limiter: limits.New(counters, 0),
		Ledger: counters, Usage: usage, Accounts: accounts, Logger: log, InFlight: metrics.InFlight, Now: cfg.now,
		OnBudgetAlert: metrics.BudgetAlert})
	jcfg := jobs.Config{Store: db, Keys: db, Run: handlers.JobRunner(gw), Workers: 2, Poll: 20 * time.Millisecond, Now: cfg.now, Logger: log,
		FlushUsage: journal.Flush}
	if cfg.jobs != nil {
		cfg.jobs(&jcfg)
	}
	jm := jobs.New(jcfg)
	if !cfg.jobsStopped {
		jm.Start()
	}
	t.Cleanup(func() { // before the recorder closes
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		jm.Stop(sctx)
	})
	h := handlers.NewServer(handlers.Config{
		Gateway: gw, Ollama: ollama, DB: db, Verifier: verifier, Keys: keys, Audit: db, Usage: usage, Jobs: jm,
		Metrics: metrics, MetricsRoute: true, TrustedProxies: cfg.proxies, Idempotency: db, Journal: journalHealth,
		Logger: log, MaxBodyBytes: cfg.maxBody, BodyTimeout: cfg.bodyTimeout, Now: cfg.now,
		Sessions: auth.NewSessions(db, verifier, auth.SessionOptions{Now: cfg.now}),
		Accounts: auth.NewAccounts(db, accounts, cfg.now),
	})
	srv := httptest.NewUnstartedServer(h)
	if cfg.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 15 * time.Second // a hang fails the test instead of stalling it
	return &testServer{URL: srv.URL, client: client, db: db, logs: logs, key: secret, keys: keys, jobs: jm, dbPath: cfg.dbPath, gw: gw, journal: journal}
}

// newFakeServer starts a fake Ollama and a Tollgate server in front of it,
// using fakeCatalog with the given first_byte_timeout.
func newFakeServer(t testing.TB, firstByteTimeout string, opts ...ollamatest.Option) (*ollamatest.Server, *testServer) {
	t.Helper()
	fake := newFakeOllama(t, opts...)
	ts := newTestServer(t, fakeCatalog(fake.URL, firstByteTimeout))
	// Registered again after the Tollgate server, so it runs first: it
	// releases held requests before the Tollgate server waits for its
	// handlers to return.
	t.Cleanup(fake.Close)
	return fake, ts
}

// newFakeOllama starts a fake Ollama, closed when the test ends.
func newFakeOllama(t testing.TB, opts ...ollamatest.Option) *ollamatest.Server {
	t.Helper()
	fake := ollamatest.NewServer(opts...)
	t.Cleanup(fake.Close)
	return fake
}

// fakeCatalog is a catalog for the fake Ollama: public names differ from
// Ollama's so that tests can tell which one a message uses.
func fakeCatalog(url, firstByteTimeout string) string {
	return fmt.Sprintf(`
backends:
  - url: %s
    connect_timeout: 2s
    first_byte_timeout: %s
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate, predict]
    limits: {max_num_predict: 64, max_keep_alive: 10m, max_inputs: 3, prompt_overhead: 4}
    price: {input_per_1k: 0.0002, output_per_1k: 0.0006}
  embedder:
    ollama: nomic-embed-text
    endpoints: [embed]
    limits: {max_inputs: 3}
tasks:
  sentiment: {model: chat, labels: [positive, negative, neutral]}
`, url, firstByteTimeout)
}

// send is the one place a test request is built and sent. body is nil (no
// body), a string or []byte (sent as is, with a Content-Length), an
// io.Reader (streamed with chunked transfer encoding) or any other value
// (encoded as JSON). hdr holds header name/value pairs, set after the
// defaults. It returns the transport's error, so it may be called from any
// goroutine.
func (ts *testServer) send(ctx context.Context, method, path string, body any, hdr ...string) (*http.Response, error) {
	if len(hdr)%2 != 0 {
		return nil, fmt.Errorf("hdr must be name/value pairs, got %q", hdr)
	}
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = struct{ io.Reader }{b} // hide the type: no Content-Length, chunked
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-API-Key", ts.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return ts.client.Do(req)
}

// do sends a request and checks what every response must have: an
// X-Request-ID. The body is closed when the test ends.
func (ts *testServer) do(t testing.TB, method, path string, body any, hdr ...string) *http.Response {
	t.Helper()
	resp, err := ts.send(t.Context(), method, path, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("%s %s: %s without X-Request-ID", method, path, resp.Status)
	}
	return resp
}

// doJSON sends a request, requires status want and a JSON body, and decodes
// it into out (when out is not nil).
func (ts *testServer) doJSON(t testing.TB, method, path string, body any, want int, out any, hdr ...string) *http.Response {
	t.Helper()
	resp := ts.do(t, method, path, body, hdr...)
	data := readAll(t, resp)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, resp.StatusCode, want, data)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	return resp
}

// errorDetail is the inside of the error envelope.
type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// doError sends a request that must fail with status and code, in the error
// envelope, with a message containing each of msgs.
func (ts *testServer) doError(t testing.TB, method, path string, body any, status int, code string, msgs []string, hdr ...string) (*http.Response, errorDetail) {
	t.Helper()
	var raw json.RawMessage
	resp := ts.doJSON(t, method, path, body, status, &raw, hdr...)
	e := checkEnvelope(t, raw, code, msgs...)
	if resp.Request.Header.Get("X-Request-ID") == "" && e.RequestID != resp.Header.Get("X-Request-ID") {
		t.Errorf("request_id %q, X-Request-ID %q: want the same", e.RequestID, resp.Header.Get("X-Request-ID"))
	}
	return resp, e
}

// checkEnvelope requires raw to be exactly {"error":{"code","message",
// "request_id"}} with the given code and a message containing each of msgs.
func checkEnvelope(t testing.TB, raw []byte, code string, msgs ...string) errorDetail {
	t.Helper()
	var env struct {
		Error *errorDetail `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || env.Error == nil {
		t.Fatalf("not the error envelope (%v): %s", err, raw)
	}
	e := *env.Error
	if e.Code != code {
		t.Errorf("code %q, want %q (message %q)", e.Code, code, e.Message)
	}
	for _, m := range msgs {
		if !strings.Contains(e.Message, m) {
			t.Errorf("message %q does not contain %q", e.Message, m)
		}
	}
	if !strings.HasPrefix(e.RequestID, "req_") {
		t.Errorf("request_id %q, want Tollgate's own req_...", e.RequestID)
	}
	return e
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return data
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	Name string // "" for the default "message"
	Data string
}

// readEvent reads one event: lines up to a blank line. It returns io.EOF
// at a clean end of stream.
func readEvent(r *bufio.Reader) (sseEvent, error) {
	var (
		ev    sseEvent
		data  []string
		lines int
	)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" && lines == 0 {
				return ev, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // an event must end with a blank line
			}
			return ev, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if lines == 0 {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		}
		lines++
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Name = value
		case "data":
			data = append(data, value)
		}
	}
}

// readEvents reads a whole event stream.
func readEvents(t testing.TB, body io.Reader) []sseEvent {
	t.Helper()
	r := bufio.NewReader(body)
	var out []sseEvent
	for {
		ev, err := readEvent(r)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading events after %v: %v", out, err)
		}
		out = append(out, ev)
	}
}

// logSink is the server log: written by handlers, read by the test. slog
// writes each record with one Write, so each entry is one line.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

// String returns the whole log.
func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "")
}

// records returns the log lines decoded.
func (l *logSink) records(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	lines := slices.Clone(l.lines)
	l.mu.Unlock()
	out := make([]map[string]any, len(lines))
	for i, line := range lines {
		if err := json.Unmarshal([]byte(line), &out[i]); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
	}
	return out
}

// logLines returns the log lines whose msg is msg and whose field is value.
func (ts *testServer) logLines(t testing.TB, msg, field, value string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range ts.logs.records(t) {
		if m["msg"] == msg && m[field] == value {
			out = append(out, m)
		}
	}
	return out
}

// accessLog waits for the access log line of request id and returns it.
func (ts *testServer) accessLog(t testing.TB, id string) map[string]any {
	t.Helper()
	return ts.accessLogBy(t, "request_id", id)
}

// accessLogBy waits for the one access log line whose field is value. The
// line is written when the handler returns, which may be just after the
// client has its answer (or has gone).
func (ts *testServer) accessLogBy(t testing.TB, field, value string) map[string]any {
	t.Helper()
	var lines []map[string]any
	waitFor(t, "the access log line with "+field+" "+value, func() bool {
		lines = ts.logLines(t, "request", field, value)
		return len(lines) > 0
	})
	if len(lines) != 1 {
		t.Errorf("%d access log lines with %s %s, want 1: %v", len(lines), field, value, lines)
	}
	return lines[0]
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFake waits until cond holds for the fake's stats.
func waitFake(t testing.TB, fake *ollamatest.Server, what string, cond func(ollamatest.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := fake.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting for the fake Ollama: %s: %v (stats %+v)", what, err, fake.Stats())
	}
}

// lastRequest returns the last request the fake received.
func lastRequest(t testing.TB, fake *ollamatest.Server) ollamatest.Request {
	t.Helper()
	req, ok := fake.LastRequest()
	if !ok {
		t.Fatal("the fake Ollama received no request")
	}
	return req
}

// generateStream is the client's view of a streamed /generate.
type generateStream struct {
	text   string
	done   map[string]any // the done event, nil if none
	errEv  []byte         // the data of the error event, nil if none
	events []sseEvent
}

// parseGenerateStream splits a /generate stream into its parts, requiring
// text events, then at most one done or error event, last.
func parseGenerateStream(t testing.TB, events []sseEvent) generateStream {
	t.Helper()
	var gs generateStream
	gs.events = events
	for i, ev := range events {
		last := i == len(events)-1
		switch {
		case ev.Name == "error":
			if !last {
				t.Errorf("error event %d is not the last of %v", i, events)
			}
			gs.errEv = []byte(ev.Data)
		case ev.Name != "":
			t.Errorf("unexpected event %q", ev.Name)
		case strings.Contains(ev.Data, `"done"`):
			if !last {
				t.Errorf("done event %d is not the last of %v", i, events)
			}
			if err := json.Unmarshal([]byte(ev.Data), &gs.done); err != nil {
				t.Fatalf("done event %q: %v", ev.Data, err)
			}
		default:
			var chunk map[string]string
			if err := json.Unmarshal([]byte(ev.Data), &chunk); err != nil || len(chunk) != 1 {
				t.Fatalf("text event %q: want {\"text\": ...} (%v)", ev.Data, err)
			}
			gs.text += chunk["text"]
		}
	}
	return gs
}
