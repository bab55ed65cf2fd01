package gateway_test

// The harness: a gateway built as cmd/tollgate's wire builds it (a real
// inference client against the fake Ollama, a real usage Recorder over real
// SQLite feeding real quota Counters, a real Limiter), with no HTTP server of
// ours anywhere: tests call the gateway's methods directly.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
	"tollgate/limits"
	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// testCatalog is the catalog every test uses; %s is the Ollama URL.
// Prices are large so that costs are far from rounding: 2 and 6 currency
// units per 1k tokens are 2,000 and 6,000 micro-units per token.
const testCatalog = `
backends:
  - url: %s
    connect_timeout: 2s
    first_byte_timeout: 10s
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate, predict]
    limits: {max_num_predict: 64, prompt_overhead: 4, max_inputs: 4}
    price: {input_per_1k: 2, output_per_1k: 6}
  other:
    ollama: other:1b
    endpoints: [generate]
    limits: {prompt_overhead: 4}
  embedder:
    ollama: nomic-embed-text
    endpoints: [embed]
    limits: {max_inputs: 3, prompt_overhead: 4}
    price: {input_per_1k: 1, output_per_1k: 0}
tasks:
  sentiment: {model: chat, labels: [positive, negative, neutral]}
plans:
  small: {max_num_predict: 5}
  pro: {weight: 3}
`

// env is one gateway and everything around it.
type env struct {
	t        *testing.T
	fake     *ollamatest.Server
	cat      *inference.Catalog
	db       *sqlite.DB
	recorder *metering.Recorder
	counters *metering.Counters
	gw       *gateway.Gateway
	logs     *syncBuffer
	inFlight *deltas
	inf      *inference.Client
	ids      atomic.Int64
}

type envConfig struct {
	fakeOpts      []ollamatest.Option
	url           string // Ollama URL in the catalog; "" is the fake's
	wrapRecorder  func(gateway.Recorder) gateway.Recorder
	wrapStore     func(metering.BatchStore) metering.BatchStore
	maxInFlight   int
	queueWait     time.Duration
	recordTimeout time.Duration
}

type envOpt func(*envConfig)

func withFake(opts ...ollamatest.Option) envOpt {
	return func(c *envConfig) { c.fakeOpts = append(c.fakeOpts, opts...) }
}
func withOllamaURL(u string) envOpt { return func(c *envConfig) { c.url = u } }
func withRecorder(w func(gateway.Recorder) gateway.Recorder) envOpt {
	return func(c *envConfig) { c.wrapRecorder = w }
}
func withStore(w func(metering.BatchStore) metering.BatchStore) envOpt {
	return func(c *envConfig) { c.wrapStore = w }
}
func withSlots(n int, wait time.Duration) envOpt {
	return func(c *envConfig) { c.maxInFlight, c.queueWait = n, wait }
}
func withRecordTimeout(d time.Duration) envOpt { return func(c *envConfig) { c.recordTimeout = d } }

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	var cfg envConfig
	for _, o := range opts {
		o(&cfg)
	}
	ctx := context.WithoutCancel(t.Context())
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })

	e := &env{t: t, db: db, logs: &syncBuffer{}, inFlight: &deltas{}}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.counters = metering.NewCounters(nil)
	var store metering.BatchStore = db
	if cfg.wrapStore != nil {
		store = cfg.wrapStore(store)
	}
	e.recorder = metering.NewRecorder(store, metering.RecorderOptions{OnCommit: e.counters.AddAll, Logger: log})
	t.Cleanup(func() { e.recorder.Close(ctx) }) // before the database closes

	// Registered after the recorder: runs before it, releasing any held
	// request so that no call is left waiting on Ollama.
	e.fake = ollamatest.NewServer(cfg.fakeOpts...)
	t.Cleanup(e.fake.Close)
	url := cfg.url
	if url == "" {
		url = e.fake.URL
	}
	e.cat, err = inference.Parse("test.yaml", []byte(fmt.Sprintf(testCatalog, url)))
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	var clientOpts []inference.Option
	if cfg.maxInFlight > 0 {
		for i := range e.cat.Backends {
			e.cat.Backends[i].MaxParallel = cfg.maxInFlight
		}
		clientOpts = append(clientOpts, inference.WithQueue(cfg.queueWait, 0))
	}
	e.inf = inference.NewClient(e.cat, clientOpts...)
	var rec gateway.Recorder = e.recorder
	if cfg.wrapRecorder != nil {
		rec = cfg.wrapRecorder(rec)
	}
	e.gw = gateway.New(gateway.Config{
		Inference: e.inf, Recorder: rec, Limiter: limits.New(e.counters, 0),
		Ledger: e.counters, Usage: db,
		RecordTimeout: cfg.recordTimeout, Logger: log, InFlight: e.inFlight.add,
	})
	return e
}

// caller returns a fresh caller for key: a new request id, arrived now.
func (e *env) caller(key auth.Key) gateway.Caller {
	return gateway.Caller{Key: key, RequestID: fmt.Sprintf("req-%04d", e.ids.Add(1)), Arrived: time.Now()}
}

// rows returns every usage row in the database, oldest first.
func (e *env) rows() []metering.Event {
	e.t.Helper()
	var out []metering.Event
	err := e.db.ExportEvents(context.Background(), metering.Query{}, func(ev metering.Event) error {
		out = append(out, ev)
		return nil
	})
	if err != nil {
		e.t.Fatalf("ExportEvents: %v", err)
	}
	return out
}

// row returns the only usage row, failing unless there is exactly one.
func (e *env) row() metering.Event {
	e.t.Helper()
	rows := e.rows()
	if len(rows) != 1 {
		e.t.Fatalf("usage rows: got %d, want 1: %+v", len(rows), rows)
	}
	return rows[0]
}

// noRows fails if any usage row exists.
func (e *env) noRows() {
	e.t.Helper()
	if rows := e.rows(); len(rows) != 0 {
		e.t.Fatalf("usage rows: got %d, want none: %+v", len(rows), rows)
	}
}

// price returns the catalog price of model.
func (e *env) price(model string) tollgate.Price { return e.cat.Models[model].Price }

// generateRequests returns the generate/chat requests the fake received.
func (e *env) generateRequests() []ollamatest.Request {
	var out []ollamatest.Request
	for _, r := range e.fake.Requests() {
		if r.Path == "/api/generate" || r.Path == "/api/chat" {
			out = append(out, r)
		}
	}
	return out
}

// lastNumPredict returns options.num_predict of the last request the fake
// received.
func (e *env) lastNumPredict() int {
	e.t.Helper()
	r, ok := e.fake.LastRequest()
	if !ok {
		e.t.Fatal("the fake Ollama received no request")
	}
	n, ok := r.NumPredict()
	if !ok {
		e.t.Fatalf("request to %s has no options.num_predict: %s", r.Path, r.Body)
	}
	return n
}

// waitFake waits (polling the fake's counters, not sleeping blind) until
// cond holds, failing after 5 s.
func (e *env) waitFake(what string, cond func(ollamatest.Stats) bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.fake.Wait(ctx, cond); err != nil {
		e.t.Fatalf("waiting for the fake Ollama: %s: %v (stats %+v)", what, err, e.fake.Stats())
	}
}

// checkRow compares a usage row with what it must hold.
func checkRow(t *testing.T, got metering.Event, c gateway.Caller, endpoint tollgate.Capability, model string, status int, prompt, completion int64, cost tollgate.Money) {
	t.Helper()
	want := fmt.Sprintf("%s key=%s %s/%s status=%d tokens=%d+%d cost=%d", c.RequestID, c.Key.ID, endpoint, model, status, prompt, completion, cost)
	have := fmt.Sprintf("%s key=%s %s/%s status=%d tokens=%d+%d cost=%d", got.RequestID, got.KeyID, got.Endpoint, got.Model, got.Status, got.PromptTokens, got.CompletionTokens, got.Cost)
	if have != want {
		t.Errorf("usage row:\n got  %s\n want %s", have, want)
	}
	if !got.Time.Equal(c.Arrived) {
		t.Errorf("usage row time %s, want the arrival %s", got.Time, c.Arrived.UTC())
	}
	if got.Latency < 0 {
		t.Errorf("usage row latency %s is negative", got.Latency)
	}
}

// checkCode fails unless err carries code (and, for codes with a status,
// that status).
func checkCode(t *testing.T, err error, code tollgate.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want code %s", code)
	}
	if got := tollgate.ErrorCode(err); got != code {
		t.Fatalf("error code %s (%v), want %s", got, err, code)
	}
}

func ptr(s string) *string { return &s }

func prompt(s string) gateway.GenerateRequest { return gateway.GenerateRequest{Prompt: ptr(s)} }

// key returns a key allowed every inference scope and every model.
func key(id string, lim tollgate.Limits) auth.Key {
	return auth.Key{ID: id, Name: id, Scopes: []auth.Scope{tollgate.Generate, tollgate.Embed, tollgate.Predict}, Limits: lim}
}

func i64(p *int64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the JSON log records whose msg contains substr.
func (s *syncBuffer) lines(t *testing.T, substr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if msg, _ := m["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, m)
		}
	}
	return out
}

// deltas records the gateway's InFlight callbacks.
type deltas struct {
	mu sync.Mutex
	d  []int
}

func (d *deltas) add(n int) {
	d.mu.Lock()
	d.d = append(d.d, n)
	d.mu.Unlock()
}

func (d *deltas) get() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.d...)
}

// sum is the gauge's value.
func (d *deltas) sum() int {
	n := 0
	for _, x := range d.get() {
		n += x
	}
	return n
}

// failingRecorder refuses every event with err, recording nothing.
type failingRecorder struct{ err error }

func (f failingRecorder) Record(context.Context, metering.Event) error { return f.err }

// blockingRecorder announces each event on entered, then waits for release
// to be closed before passing it on to next with the context it was given.
type blockingRecorder struct {
	next    gateway.Recorder
	entered chan blocked
	release chan struct{}
	once    sync.Once
}

// unblock lets every waiting and future Record through.
func (b *blockingRecorder) unblock() { b.once.Do(func() { close(b.release) }) }

type blocked struct {
	ev  metering.Event
	ctx context.Context
}

func newBlockingRecorder(next gateway.Recorder) *blockingRecorder {
	return &blockingRecorder{next: next, entered: make(chan blocked, 16), release: make(chan struct{})}
}

func (b *blockingRecorder) Record(ctx context.Context, ev metering.Event) error {
	b.entered <- blocked{ev, ctx}
	<-b.release
	return b.next.Record(ctx, ev)
}

var errClientGone = errors.New("write tcp 127.0.0.1:8080: broken pipe")
