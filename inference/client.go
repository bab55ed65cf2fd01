package inference

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/api"
)

// Client calls the Ollama backends of a catalog. It is safe for concurrent
// use. Every call honours its context: cancelling it (a client that hung up)
// closes the connection to Ollama, which stops the generation.
//
// It is also the fleet: it knows each backend's health and load, routes
// each call (see Acquire), queues calls fairly when every backend for a
// model is busy, and takes a new catalog without dropping calls (Reload).
type Client struct {
	cfg clientConfig

	catalog atomic.Pointer[Catalog] // stored with mu held, with backends

	mu       sync.Mutex
	backends []*backend // the catalog's, in its order
	queue    fairQueue
}

// backend is one Ollama server and what the Client knows about it. The
// fields below mu are guarded by the Client's mutex.
type backend struct {
	name      string
	url       string
	base      *url.URL
	http      *http.Client
	api       *api.Client
	firstByte time.Duration
	connect   time.Duration

	// guarded by Client.mu
	weight    int
	capacity  int
	inflight  int
	up        bool
	since     time.Time
	why       string
	downUntil time.Time            // a passive ejection's cool-down
	loaded    map[string]time.Time // Ollama model -> until when it stays loaded (/api/ps)
	requests  uint64               // calls sent
	failures  uint64               // calls that failed in a way that ejects
	ejections uint64               // up -> down transitions
}

// Option configures a Client in NewClient.
type Option func(*clientConfig)

type clientConfig struct {
	auth      bool
	now       func() time.Time
	queueWait time.Duration
	perKey    int
	cooldown  time.Duration
	parallel  int
	log       *slog.Logger
}

// Defaults for the fleet's options.
const (
	DefaultQueueWait   = 10 * time.Second
	DefaultQueuePerKey = 64
	DefaultCooldown    = 10 * time.Second
	// DefaultMaxParallel is a backend's max_parallel when models.yaml and
	// WithDefaultParallel set none: what Ollama runs at once on a GPU with
	// room for it (OLLAMA_NUM_PARALLEL's automatic choice).
	DefaultMaxParallel = 4
)

// WithDefaultParallel sets the max_parallel of backends whose catalog entry
// sets none (0: DefaultMaxParallel).
func WithDefaultParallel(n int) Option { return func(c *clientConfig) { c.parallel = n } }

// WithAuth makes the client sign every request to Ollama with the key in
// ~/.ollama/id_ed25519, as Ollama's own client does when OLLAMA_AUTH is set
// (requests to ollama.com are always signed). This package reads no
// environment: the caller decides, e.g. from OLLAMA_AUTH.
func WithAuth(sign bool) Option { return func(c *clientConfig) { c.auth = sign } }

// WithQueue sets how long a call waits in the fair queue for a backend slot
// (0: DefaultQueueWait) before it fails with overloaded (503), and how many
// calls of one key may wait at once (0: DefaultQueuePerKey; more are
// refused with rate_limited, 429).
func WithQueue(wait time.Duration, perKey int) Option {
	return func(c *clientConfig) { c.queueWait, c.perKey = wait, perKey }
}

// WithCooldown sets how long a backend ejected after a failed call stays
// out of routing before a health check may bring it back (0:
// DefaultCooldown).
func WithCooldown(d time.Duration) Option { return func(c *clientConfig) { c.cooldown = d } }

// WithClock sets the clock for states' times and cool-downs (nil: time.Now).
func WithClock(now func() time.Time) Option { return func(c *clientConfig) { c.now = now } }

// WithLogger sets where backend state changes are logged (nil: nowhere).
func WithLogger(l *slog.Logger) Option { return func(c *clientConfig) { c.log = l } }

// NewClient returns a client for the backends in c. Connections are pooled
// per backend; dialing is bounded by the backend's ConnectTimeout and the wait
// for Ollama's first byte (which includes loading the model) by its
// FirstByteTimeout. No timeout bounds a stream once it has started. Every
// backend starts up; Run's health checks correct that.
func NewClient(c *Catalog, opts ...Option) *Client {
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.queueWait <= 0 {
		cfg.queueWait = DefaultQueueWait
	}
	if cfg.perKey <= 0 {
		cfg.perKey = DefaultQueuePerKey
	}
	if cfg.cooldown <= 0 {
		cfg.cooldown = DefaultCooldown
	}
	if cfg.parallel <= 0 {
		cfg.parallel = DefaultMaxParallel
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cl := &Client{cfg: cfg}
	cl.install(c)
	return cl
}

// newBackend builds the connection pool for b.
func (c *Client) newBackend(b Backend) *backend {
	u, _ := url.Parse(b.URL) // validated by Parse
	tr := &http.Transport{
		Proxy:                 nil, // Ollama is local; never send prompts through a proxy by accident
		DialContext:           (&net.Dialer{Timeout: b.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: b.FirstByteTimeout,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		// One connection per call in flight, and a stream holds its own
		// for as long as it runs: small buffers (requests are small JSON,
		// answers small NDJSON lines; bigger ones take more reads) keep
		// 10,000 open streams in memory budget (BENCHMARKS.md).
		WriteBufferSize: 2 << 10,
		ReadBufferSize:  2 << 10,
	}
	var rt http.RoundTripper = tr
	if c.cfg.auth || u.Hostname() == "ollama.com" {
		rt = signer{rt: tr, prefix: strings.TrimRight(u.Path, "/")}
	}
	hc := &http.Client{Transport: statusRecorder{rt}}
	return &backend{name: b.Name, url: b.URL, base: u, http: hc, api: api.NewClient(u, hc), firstByte: b.FirstByteTimeout,
		connect: b.ConnectTimeout, up: true, since: c.cfg.now(), loaded: map[string]time.Time{}}
}

// Catalog returns the catalog the client serves now.
func (c *Client) Catalog() *Catalog { return c.catalog.Load() }

// Ping checks that every backend answers and which of the catalog's models
// it has installed: one GET /api/tags per backend (api.Client.List), all
// at once, so ctx bounds the whole check. A model is serving when a backend
// that serves it has it. The error is an *UnreachableError, *TimeoutError
// or *UpstreamError naming the first backend, in catalog order, that did
// not answer, and only when no backend answered; Health is then empty.
// Health.Down names the backends that did not answer; they are down (and
// those that answered up, unless cooling down), as after Check.
func (c *Client) Ping(ctx context.Context) (Health, error) {
	c.mu.Lock()
	cat, backends := c.catalog.Load(), c.backends
	c.mu.Unlock()
	installed := make([][]string, len(backends))
	errs := make([]error, len(backends))
	var wg sync.WaitGroup
	for i, be := range backends {
		wg.Go(func() {
			var status int
			list, err := be.api.List(withStatus(ctx, &status))
			if err != nil {
				errs[i] = be.classify(ctx, err, status, "")
				return
			}
			for _, m := range list.Models {
				installed[i] = append(installed[i], m.Model, m.Name)
			}
		})
	}
	wg.Wait()
	c.mu.Lock()
	now := c.cfg.now()
	for i, be := range backends {
		switch {
		case errors.Is(errs[i], context.Canceled): // the asker left: no news
		case errs[i] != nil:
			c.down(be, now, "health check: "+errs[i].Error())
		default:
			c.upAgain(be, now)
		}
	}
	c.mu.Unlock()
	var h Health
	answered := 0
	for i, b := range cat.Backends {
		if errs[i] != nil {
			h.Down = append(h.Down, DownBackend{Backend: b, Err: errs[i]})
		} else {
			answered++
		}
	}
	if answered == 0 {
		return Health{}, errs[0]
	}
	for _, m := range cat.ModelList() {
		var lacking []Backend
		serving := false
		for i, b := range cat.Backends {
			if !m.ServedBy(b.Name) || errs[i] != nil {
				continue
			}
			if hasModel(installed[i], m.Ollama) {
				serving = true
			} else {
				lacking = append(lacking, b)
			}
		}
		switch {
		case serving:
			h.Serving = append(h.Serving, m.Name)
		case len(lacking) > 0:
			h.Missing = append(h.Missing, MissingModel{Name: m.Name, Ollama: m.Ollama, Backend: lacking[0]})
		default:
			h.Unserved = append(h.Unserved, m.Name)
		}
	}
	return h, nil
}

// Usage is what Ollama counted for a call.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// Total returns prompt plus completion tokens.
func (u Usage) Total() int { return u.PromptTokens + u.CompletionTokens }

// Add returns the sum of u and v.
func (u Usage) Add(v Usage) Usage {
	return Usage{u.PromptTokens + v.PromptTokens, u.CompletionTokens + v.CompletionTokens}
}

// statusRecorder notes the HTTP status of Ollama's answer so an error body
// that is not JSON (a proxy page, a crash) still maps by status.
type statusRecorder struct{ rt http.RoundTripper }

type statusKey struct{}

func (s statusRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(r)
	if p, ok := r.Context().Value(statusKey{}).(*int); ok && resp != nil {
		*p = resp.StatusCode
	}
	return resp, err
}

func withStatus(ctx context.Context, status *int) context.Context {
	return context.WithValue(ctx, statusKey{}, status)
}

// callbackError marks an error returned by the caller's own callback so it
// is passed back unchanged instead of being blamed on Ollama.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// classify turns what api.Client returned into one of this package's errors.
func (b *backend) classify(ctx context.Context, err error, status int, ollamaModel string) error {
	var cb callbackError
	if errors.As(err, &cb) {
		return cb.err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var sign *SignError
	if errors.As(err, &sign) {
		return sign
	}
	var sb *streamBroken
	if errors.As(err, &sb) {
		return &UpstreamError{Message: "the stream from Ollama at " + b.url + " ended before its final chunk (the connection broke)", broken: true}
	}
	var se api.StatusError
	if errors.As(err, &se) {
		return b.statusError(se.StatusCode, se.ErrorMessage, ollamaModel)
	}
	if strings.HasPrefix(err.Error(), "unmarshal:") {
		if status >= 400 {
			return b.statusError(status, "", ollamaModel)
		}
		return &UpstreamError{Message: "Ollama at " + b.url + " sent a malformed stream"}
	}
	// A dial that fails, timing out included, means Ollama is not there;
	// check it before timeouts, which otherwise would blame the first-byte
	// wait for a connect timeout.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return &UnreachableError{URL: b.url, Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &TimeoutError{URL: b.url, After: b.firstByte}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return &UpstreamError{Message: "the connection to Ollama at " + b.url + " broke before it answered", broken: true}
	}
	// An error line in the middle of a stream: Ollama's own words. It came
	// with a 200, which is not worth reporting as Ollama's status.
	if status < 400 {
		status = 0
	}
	return &UpstreamError{Status: status, Message: err.Error()}
}

func (b *backend) statusError(status int, msg, ollamaModel string) error {
	switch {
	case status == http.StatusNotFound && ollamaModel != "":
		return &ModelMissingError{Ollama: ollamaModel}
	case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
		return ErrBusy
	}
	if msg == "" || len(msg) > 500 || strings.HasPrefix(strings.TrimSpace(msg), "<") {
		msg = http.StatusText(status) // not Ollama's words: a proxy page or a crash dump
	}
	return &UpstreamError{Status: status, Message: msg}
}

func errStreamCut(b *backend) error {
	return &UpstreamError{Message: "the stream from Ollama at " + b.url + " ended before its final chunk", broken: true}
}

// CheckFormat accepts an absent format, "json" or a JSON object (a JSON
// schema); anything else is an *InvalidError for field "format".
func CheckFormat(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `"json"` {
		return nil
	}
	var obj map[string]any
	if json.Unmarshal(raw, &obj) != nil {
		return &InvalidError{Field: "format", Reason: `must be "json" or a JSON schema object`}
	}
	return nil
}
