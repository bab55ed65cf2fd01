package inference

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"
)

// Client calls the Ollama backends of a catalog. It is safe for concurrent
// use. Every call honours its context: cancelling it (a client that hung up)
// closes the connection to Ollama, which stops the generation.
type Client struct {
	catalog  *Catalog
	backends map[string]*backend
}

type backend struct {
	url       string
	base      *url.URL
	http      *http.Client
	api       *api.Client
	firstByte time.Duration
}

// Option configures a Client in NewClient.
type Option func(*clientConfig)

type clientConfig struct{ auth bool }

// WithAuth makes the client sign every request to Ollama with the key in
// ~/.ollama/id_ed25519, as Ollama's own client does when OLLAMA_AUTH is set
// (requests to ollama.com are always signed). This package reads no
// environment: the caller decides, e.g. from OLLAMA_AUTH.
func WithAuth(sign bool) Option { return func(c *clientConfig) { c.auth = sign } }

// NewClient returns a client for the backends in c. Connections are pooled
// per backend; dialing is bounded by the backend's ConnectTimeout and the wait
// for Ollama's first byte (which includes loading the model) by its
// FirstByteTimeout. No timeout bounds a stream once it has started.
func NewClient(c *Catalog, opts ...Option) *Client {
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	cl := &Client{catalog: c, backends: make(map[string]*backend, len(c.Backends))}
	for _, b := range c.Backends {
		u, _ := url.Parse(b.URL) // validated by Parse
		tr := &http.Transport{
			Proxy:                 nil, // Ollama is local; never send prompts through a proxy by accident
			DialContext:           (&net.Dialer{Timeout: b.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: b.FirstByteTimeout,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
		}
		var rt http.RoundTripper = tr
		if cfg.auth || u.Hostname() == "ollama.com" {
			rt = signer{rt: tr, prefix: strings.TrimRight(u.Path, "/")}
		}
		hc := &http.Client{Transport: statusRecorder{rt}}
		cl.backends[b.Name] = &backend{url: b.URL, base: u, http: hc, api: api.NewClient(u, hc), firstByte: b.FirstByteTimeout}
	}
	return cl
}

// Catalog returns the catalog the client was built from.
func (c *Client) Catalog() *Catalog { return c.catalog }

// Ping checks that every backend answers and which of the catalog's models
// it has installed: one GET /api/tags per backend (api.Client.List), all
// at once, so ctx bounds the whole check. The error is an
// *UnreachableError, *TimeoutError or *UpstreamError naming the first
// backend, in catalog order, that did not answer; Health is then partial.
func (c *Client) Ping(ctx context.Context) (Health, error) {
	backends := c.Catalog().Backends
	installed := make([][]string, len(backends))
	errs := make([]error, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Go(func() {
			be := c.backends[b.Name]
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
	var h Health
	answered := map[string][]string{}
	for i, b := range backends {
		if errs[i] == nil {
			answered[b.Name] = installed[i]
		}
	}
	for _, m := range c.Catalog().ModelList() {
		have, ok := answered[m.Backend]
		switch {
		case !ok:
		case hasModel(have, m.Ollama):
			h.Serving = append(h.Serving, m.Name)
		default:
			b, _ := c.Catalog().Backend(m.Backend)
			h.Missing = append(h.Missing, MissingModel{Name: m.Name, Ollama: m.Ollama, Backend: b})
		}
	}
	for _, err := range errs {
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

func (c *Client) backendFor(m Model) *backend {
	if b, ok := c.backends[m.Backend]; ok {
		return b
	}
	return c.backends[c.catalog.Backends[0].Name]
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
		return &UpstreamError{Message: "the stream from Ollama at " + b.url + " ended before its final chunk (the connection broke)"}
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
		return &UpstreamError{Message: "the connection to Ollama at " + b.url + " broke before it answered"}
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
	return &UpstreamError{Message: "the stream from Ollama at " + b.url + " ended before its final chunk"}
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
