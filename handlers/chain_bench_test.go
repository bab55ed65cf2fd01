package handlers_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/handlers"
	"tollgate/inference"
	"tollgate/inference/ollamatest"
	"tollgate/limits"
	"tollgate/metering"
	"tollgate/storage/sqlite"
)

// benchGateway is a Tollgate handler wired as cmd/tollgate's wire() wires
// it (the harness's newTestServer, but with an explicit limiter and a log
// that is encoded and thrown away instead of kept in memory), in front of
// a fake Ollama that answers at once and records nothing, with a key whose
// limits are high enough never to refuse: keys, limits and durable metering
// all on.
type benchGateway struct {
	handler http.Handler
	key     string
	fake    *ollamatest.Server
}

func newBenchGateway(b *testing.B) *benchGateway {
	b.Helper()
	fake := newFakeOllama(b, ollamatest.WithoutRecording())
	cat, err := inference.Parse("bench.yaml", []byte(fakeCatalog(fake.URL, "5s")))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.WithoutCancel(b.Context())
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	// Info level, JSON, as served: the access log line is built and encoded.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	counters := metering.NewCounters(nil)
	metrics := handlers.NewMetrics()
	// The usage journal, as serve wires it by default.
	recorder, err := metering.OpenJournal(ctx, filepath.Join(b.TempDir(), "usage.journal"), metering.JournalOptions{Store: db,
		OnRecord: counters.Add, OnLoad: metrics.ObserveBatch, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { recorder.Close(ctx) })
	verifier := auth.NewVerifier(db, auth.VerifierOptions{LastUsed: db})
	keys := auth.NewKeys(db, verifier, nil)
	_, secret, err := keys.Create(ctx, "bench", auth.Spec{Name: "bench", Limits: auth.Limits{
		RequestsPerSecond: 1e6, Burst: 1e6, TokensPerMinute: 1e12, MaxConcurrent: 10_000,
		MonthlyTokens: 1e15, MonthlyRequests: 1e12,
	}})
	if err != nil {
		b.Fatal(err)
	}
	client := inference.NewClient(cat)
	gw := gateway.New(gateway.Config{Inference: client, Recorder: recorder, Limiter: limits.New(counters, 0),
		Ledger: counters, Usage: db, Logger: log, InFlight: metrics.InFlight})
	h := handlers.NewServer(handlers.Config{
		Gateway: gw, Ollama: client, DB: db, Verifier: verifier, Keys: keys, Audit: db, Usage: db,
		Metrics: metrics, MetricsRoute: true, Logger: log,
	})
	return &benchGateway{handler: h, key: secret, fake: fake}
}

var (
	chainBody  = []byte(`{"model":"chat","prompt":"Say hi in five words","stream":false}`)
	directBody = []byte(`{"model":"llama3.2:3b","prompt":"Say hi in five words","stream":false}`)
)

// post sends one request and requires a 200, reading the whole body.
func post(tb testing.TB, client *http.Client, url string, body []byte, key string) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Error(err)
		return
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Errorf("%s: %d %s (%v)", url, resp.StatusCode, data, err)
	}
}

// BenchmarkChain measures a non-streamed POST /generate through the whole
// middleware chain (request id, access log, metrics, recovery, body limit,
// key verification, scope, quota, limiter, global in-flight cap, decode,
// inference call to the fake Ollama, usage record in the journal, encode) and the
// same request sent straight to the fake, so that gateway minus direct is
// Tollgate's own cost. Everything runs in this process, so allocs/op count
// the client's and the fake's allocations too: compare the two.
//
//   - direct, gateway: one client on a keep-alive loopback connection, one
//     request at a time (latency);
//   - handler: the chain called in-process through httptest.ResponseRecorder,
//     without the client hop (Tollgate's allocations plus its call to the fake);
//   - */parallel: 16 goroutines per CPU (throughput, group commit).
func BenchmarkChain(b *testing.B) {
	gw := newBenchGateway(b)
	srv := httptest.NewServer(gw.handler)
	b.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	b.Cleanup(client.CloseIdleConnections)

	cases := []struct {
		name, url string
		body      []byte
		key       string
	}{
		{"direct", gw.fake.URL + "/api/generate", directBody, ""},
		{"gateway", srv.URL + "/generate", chainBody, gw.key},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			post(b, client, bc.url, bc.body, bc.key) // warm: connection, key cache
			b.ReportAllocs()
			for b.Loop() {
				post(b, client, bc.url, bc.body, bc.key)
			}
		})
	}
	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/generate", bytes.NewReader(chainBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-API-Key", gw.key)
			w := httptest.NewRecorder()
			gw.handler.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
	for _, bc := range cases {
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					post(b, client, bc.url, bc.body, bc.key)
				}
			})
		})
	}
}
