// Package ollamatest provides a fake Ollama server for tests and benchmarks,
// in the style of net/http/httptest.
//
// It is for what a real Ollama cannot show on demand: faults (a slow first
// byte, slow chunks, a stream cut mid-way, an error line mid-stream, broken
// JSON, 404, 503 busy, any status), and load: it answers at once, and its
// handler allocates nothing per request (net/http's own allocations aside).
//
// Its responses are byte-compatible with Ollama v0.10.1's, as rendered by
// Ollama's own handlers: the same field names and order, NDJSON streams with
// Content-Type application/x-ndjson, single JSON objects for stream:false,
// and the same error bodies and statuses for the errors it reproduces. The
// official client github.com/ollama/ollama/api works against it unchanged.
//
//	srv := ollamatest.NewServer(ollamatest.WithModels("tiny", "embedder"))
//	defer srv.Close()
//	client := srv.Client() // or point the code under test at srv.URL
//
//	srv.SetFault(ollamatest.CutAfter(2)) // the next streams stop after two chunks
//	...
//	srv.SetFault(ollamatest.Fault{})     // back to normal
//
// Endpoints: POST /api/generate, /api/chat, /api/embed, /api/show; GET (and
// HEAD) /api/tags, /api/version, /api/ps (the models SetLoaded names, each
// loaded for 5 more minutes) and / ("Ollama is running"). Other paths get
// Gin's "404 page not found", other methods its 405, as from Ollama.
//
// Concurrency: every function and method of this package is safe for
// concurrent use, and a Server's fault and reply may be changed while it
// serves. Fault, Reply, Request and Stats are plain values owned by whoever
// holds them.
//
// What it does not model: templates, tokenization (a "token" is a chunk of
// the configured reply, prompt tokens are words), images, tools, thinking,
// suffix/insert, the /api/embeddings legacy endpoint, model management
// (pull, create, delete, ps), CORS and Host checks, and option validation
// other than num_predict's type.
package ollamatest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// DefaultVersion is the version /api/version reports unless WithVersion
// says otherwise: the Ollama release whose responses this package imitates.
const DefaultVersion = "0.10.1"

// Server is a fake Ollama listening on a loopback address. Create it with
// NewServer and Close it when done. All its methods are safe for concurrent
// use, including while it serves requests.
type Server struct {
	// URL is the base URL of the server, "http://127.0.0.1:port", with no
	// trailing slash.
	URL string

	ts      *httptest.Server
	base    *url.URL
	closing chan struct{}
	once    sync.Once

	fault atomic.Pointer[faultState]
	reply atomic.Pointer[replyState]

	anyModel bool     // no WithModels: every name is known
	models   [][]byte // normalized known names
	tags     []byte   // /api/tags body
	version  []byte   // /api/version body
	created  time.Time

	record bool
	mu     sync.Mutex
	recs   []record

	requests, inFlight, maxInFlight, canceled, faulted atomic.Int64

	formats formatCache

	loaded atomic.Pointer[[]string] // SetLoaded
}

// SetLoaded sets the models /api/ps reports as loaded (none by default).
func (s *Server) SetLoaded(names ...string) { s.loaded.Store(&names) }

// ps renders /api/ps: the loaded models, each until 5 minutes from now.
func (s *Server) ps() []byte {
	out := api.ProcessResponse{Models: []api.ProcessModelResponse{}}
	if p := s.loaded.Load(); p != nil {
		for _, name := range *p {
			n := normalizeModel(name)
			out.Models = append(out.Models, api.ProcessModelResponse{Name: n, Model: n, Size: fakeSize,
				Digest: fakeDigest(n), Details: fakeDetails(), ExpiresAt: time.Now().Add(5 * time.Minute), SizeVRAM: fakeSize})
		}
	}
	b, _ := json.Marshal(out)
	return b
}

// Option configures a Server in NewServer. Options are plain functions,
// applied in order (a later one wins); they may be shared and reused.
type Option func(*config)

type config struct {
	models  []string
	reply   Reply
	fault   Fault
	version string
	noRec   bool
}

// WithModels makes names the only models the server has; requests for any
// other model get Ollama's 404 (see Fault.Status for the exact bodies).
// Names are matched as Ollama matches them: case-insensitively, a missing tag
// meaning ":latest". /api/tags lists them. Without WithModels every model
// name exists, and /api/tags lists none.
func WithModels(names ...string) Option {
	return func(c *config) { c.models = append(c.models, names...) }
}

// WithReply sets the server's initial Reply (see Server.SetReply).
func WithReply(r Reply) Option { return func(c *config) { c.reply = r } }

// WithFault sets the server's initial Fault (see Server.SetFault).
func WithFault(f Fault) Option { return func(c *config) { c.fault = f } }

// WithVersion sets the version /api/version reports (default
// DefaultVersion).
func WithVersion(v string) Option { return func(c *config) { c.version = v } }

// WithoutRecording stops the server from keeping the requests it receives,
// so Requests returns nothing. Use it in benchmarks and load tests, where
// recording would cost an allocation per request and memory without bound.
func WithoutRecording() Option { return func(c *config) { c.noRec = true } }

// NewServer starts a fake Ollama on 127.0.0.1 at a free port and returns it,
// ready to serve. The caller must Close it. It is safe to start many servers
// concurrently (each has its own port and state).
func NewServer(opts ...Option) *Server {
	var c config
	for _, o := range opts {
		o(&c)
	}
	s := &Server{
		closing:  make(chan struct{}),
		anyModel: len(c.models) == 0,
		record:   !c.noRec,
		created:  time.Date(2025, 7, 30, 0, 0, 0, 0, time.UTC),
	}
	list := api.ListResponse{Models: []api.ListModelResponse{}}
	for _, name := range c.models {
		n := normalizeModel(name)
		s.models = append(s.models, []byte(n))
		list.Models = append(list.Models, api.ListModelResponse{
			Name:       n,
			Model:      n,
			ModifiedAt: s.created,
			Size:       fakeSize,
			Digest:     fakeDigest(n),
			Details:    fakeDetails(),
		})
	}
	s.tags, _ = json.Marshal(list)
	if c.version == "" {
		c.version = DefaultVersion
	}
	s.version, _ = json.Marshal(map[string]string{"version": c.version})
	s.SetReply(c.reply)
	s.SetFault(c.fault)

	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.Start()
	s.URL = s.ts.URL
	s.base, _ = url.Parse(s.URL)
	return s
}

// Close releases every held or delayed request (cutting its connection),
// then shuts the server down and waits for its handlers to return. It may be
// called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.ts.Close()
	})
}

// CloseClientConnections closes every open connection to the server, as a
// restarting Ollama would; the server goes on accepting new ones.
func (s *Server) CloseClientConnections() { s.ts.CloseClientConnections() }

// Client returns a new official Ollama client for the server, using the
// server's HTTP client (whose idle connections Close closes). The client is
// safe for concurrent use.
func (s *Server) Client() *api.Client { return api.NewClient(s.base, s.ts.Client()) }

// SetFault replaces the server's fault; Fault{} clears it. Requests already
// being served keep the fault they started with.
func (s *Server) SetFault(f Fault) { s.fault.Store(newFaultState(f)) }

// SetReply replaces the server's reply; Reply{} restores the default.
// Requests already being served keep the reply they started with.
func (s *Server) SetReply(r Reply) { s.reply.Store(newReplyState(r)) }

// Stats are counters of a Server's requests, all paths included, as read at
// one moment (each counter is read atomically, the set is not a snapshot).
type Stats struct {
	Requests    int64 // requests received
	InFlight    int64 // requests being served now
	MaxInFlight int64 // the most requests ever served at once
	Canceled    int64 // requests whose client went away before the response was complete
	Faulted     int64 // requests a Fault applied to
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:    s.requests.Load(),
		InFlight:    s.inFlight.Load(),
		MaxInFlight: s.maxInFlight.Load(),
		Canceled:    s.canceled.Load(),
		Faulted:     s.faulted.Load(),
	}
}

// InFlight returns the number of requests being served now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Canceled returns the number of requests whose client went away (closed
// the connection or canceled the request) before their response was
// complete. The server notices only while it waits (Hold, FirstByteDelay,
// ChunkDelay) or writes; an instant reply can finish before the client
// leaves, so a test proving cancellation should slow the server down.
func (s *Server) Canceled() int64 { return s.canceled.Load() }

// Wait blocks until cond holds for the server's Stats, or ctx is done (it
// then returns ctx.Err()). It polls every millisecond, so it costs the
// server nothing.
func (s *Server) Wait(ctx context.Context, cond func(Stats) bool) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !cond(s.Stats()) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Reset forgets the recorded requests and zeroes the counters, except
// InFlight (and MaxInFlight, which restarts from InFlight). The fault and
// reply stay as they are.
func (s *Server) Reset() {
	s.mu.Lock()
	s.recs = nil
	s.mu.Unlock()
	s.requests.Store(0)
	s.canceled.Store(0)
	s.faulted.Store(0)
	s.maxInFlight.Store(s.inFlight.Load())
}

// Request is a request the server received, decoded. Fields that the body
// did not set (or that the endpoint does not have) are zero. Each Request
// returned by Requests or LastRequest is the caller's own copy.
type Request struct {
	Method string
	Path   string      // e.g. "/api/chat"
	Header http.Header // as received
	Body   []byte      // as received

	Model     string          // "model" (or the deprecated "name" of /api/show)
	Prompt    string          // /api/generate
	System    string          // /api/generate
	Messages  []api.Message   // /api/chat
	Input     []string        // /api/embed: a string input is one element
	Stream    *bool           // nil when absent: Ollama then streams
	Format    json.RawMessage // as sent
	KeepAlive *api.Duration
	Options   map[string]any // as decoded from JSON: numbers are float64
	Raw       bool
	Think     *bool
}

// NumPredict returns options.num_predict truncated to an int, and whether
// it is set to a number.
func (r Request) NumPredict() (int, bool) {
	f, ok := r.Options["num_predict"].(float64)
	return int(f), ok
}

// Streaming reports whether the request asked for a stream, as Ollama reads
// it (stream absent or true).
func (r Request) Streaming() bool { return r.Stream == nil || *r.Stream }

type record struct {
	method, path string
	header       http.Header
	body         []byte
}

// Requests returns the requests the server has received, oldest first, all
// paths included (nothing if it was created WithoutRecording). Bodies are
// decoded now, not when received, so recording costs the server one copy of
// the body and headers per request.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	recs := append([]record(nil), s.recs...)
	s.mu.Unlock()
	out := make([]Request, len(recs))
	for i, rec := range recs {
		out[i] = decodeRecord(rec)
	}
	return out
}

// LastRequest returns the inference request (/api/generate, /api/chat or
// /api/embed) the server received last, and false if there is none. The
// health checks a client makes meanwhile (/api/version, /api/ps,
// /api/tags) are left out: they are in Requests.
func (s *Server) LastRequest() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.recs) - 1; i >= 0; i-- {
		switch s.recs[i].path {
		case "/api/generate", "/api/chat", "/api/embed", "/api/embeddings":
			return decodeRecord(s.recs[i]), true
		}
	}
	return Request{}, false
}

func decodeRecord(rec record) Request {
	r := Request{Method: rec.method, Path: rec.path, Header: rec.header, Body: rec.body}
	var w struct {
		Model     string          `json:"model"`
		Name      string          `json:"name"`
		Prompt    string          `json:"prompt"`
		System    string          `json:"system"`
		Messages  []api.Message   `json:"messages"`
		Input     any             `json:"input"`
		Stream    *bool           `json:"stream"`
		Raw       bool            `json:"raw"`
		Format    json.RawMessage `json:"format"`
		KeepAlive *api.Duration   `json:"keep_alive"`
		Options   map[string]any  `json:"options"`
		Think     *bool           `json:"think"`
	}
	_ = json.Unmarshal(rec.body, &w) // keep what decodes; Body has the rest
	r.Model, r.Prompt, r.System, r.Messages = w.Model, w.Prompt, w.System, w.Messages
	if r.Model == "" && rec.path == "/api/show" {
		r.Model = w.Name
	}
	r.Stream, r.Raw, r.Format, r.KeepAlive, r.Options, r.Think = w.Stream, w.Raw, w.Format, w.KeepAlive, w.Options, w.Think
	switch in := w.Input.(type) {
	case string:
		r.Input = []string{in}
	case []any:
		for _, v := range in {
			if s, ok := v.(string); ok {
				r.Input = append(r.Input, s)
			}
		}
	}
	return r
}

// RefusedURL returns the base URL of a loopback port where nothing listens,
// so that connecting to it is refused at once: a stopped Ollama. It finds
// one by listening on a free port and closing it again, so another process
// could in principle take the port in between. It calls t.Fatal if it
// cannot listen; like t.Fatal, it must be called from the test's goroutine.
func RefusedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ollamatest: finding a free port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("ollamatest: closing %s: %v", addr, err)
	}
	return "http://" + addr
}
