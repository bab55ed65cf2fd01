package handlers

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
	"tollgate"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// reqInfo is what the chain learns about a request, for the access log and
// metrics. One per request, stored under infoKey.
type reqInfo struct {
	id       string // Tollgate's own id: response ids, usage records, error envelopes
	clientID string // a sane X-Request-ID the client sent, echoed back
	keyID    string
	key      auth.Key // the authenticated key; zero before authenticate
	// session is the dashboard session the request came with (nil for a
	// key), and sessionToken its token (from the cookie).
	session      *auth.Session
	sessionToken string
	model        string
	usage        usageJSON
	status       int    // the status the client got, when it differs from what was written (499)
	bodyRead     bool   // the whole request body has been read (into body)
	body         []byte // the request body, once read
	// bodyTimeout is how long the body may take to arrive, from arrival
	bodyTimeout time.Duration
	// for metrics
	firstToken  time.Duration // Ollama's time to first token
	upstreamErr string        // error code of a failed Ollama call
	start       time.Time     // when the request arrived, for latency metrics
	arrived     time.Time     // the same, on the server's clock (Config.Now): the billing time
}

const infoKey = "tollgate.req"

func info(c *gin.Context) *reqInfo {
	if v, ok := c.Get(infoKey); ok {
		return v.(*reqInfo)
	}
	ri := &reqInfo{id: newRequestID(), start: time.Now()}
	c.Set(infoKey, ri)
	return ri
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// saneRequestID accepts 1-128 characters of [A-Za-z0-9._:-], except
// anything that starts like an API key or holds one, with or without its
// prefix (it would be echoed and logged).
func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 || strings.HasPrefix(s, auth.SecretPrefix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == ':' || ch == '-') {
			return false
		}
	}
	return !auth.ContainsSecret(s)
}

// requestID gives every request an id and puts X-Request-ID on every
// response. A sane incoming X-Request-ID is echoed back (and logged) for the
// client's tracing; the id in bodies and usage records is always Tollgate's
// own, so two requests can never share one billing record.
func (s *server) requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		ri := info(c)
		ri.arrived = s.now()
		id := ri.id
		if in := c.GetHeader("X-Request-ID"); saneRequestID(in) {
			ri.clientID = in
			id = in
		}
		c.Header("X-Request-ID", id)
		c.Next()
	}
}

// accessLog writes one line per request. It logs the path without its query
// string, so a key pasted into a URL never reaches the log.
func (s *server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		ri := info(c)
		status := c.Writer.Status()
		switch {
		case ri.status != 0:
			status = ri.status // e.g. 499 for a stream the client left after its 200
		case c.Request.Context().Err() != nil && status == http.StatusOK && !c.Writer.Written():
			status = tollgate.StatusClientClosed
		}
		// Room for every attribute below, so the slice stays on the stack.
		attrs := append(make([]slog.Attr, 0, 13),
			slog.String("request_id", ri.id),
			slog.String("method", c.Request.Method),
			slog.String("path", redactPath(c.Request.URL.Path)),
			slog.String("route", c.FullPath()),
			slog.Int("status", status),
			slog.Float64("latency_ms", float64(time.Since(start).Microseconds())/1000),
			slog.Int("bytes", c.Writer.Size()),
			slog.String("client", c.ClientIP()),
		)
		if ri.clientID != "" {
			attrs = append(attrs, slog.String("client_request_id", ri.clientID))
		}
		if ri.keyID != "" {
			attrs = append(attrs, slog.String("key_id", ri.keyID))
		}
		if ri.model != "" {
			attrs = append(attrs, slog.String("model", ri.model),
				slog.Int("prompt_tokens", ri.usage.PromptTokens), slog.Int("completion_tokens", ri.usage.CompletionTokens))
		}
		s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
	}
}

// redactPath hides anything in p that may be an API key (auth.Redact): a
// key pasted into a URL path, with or without its tg_ prefix, reaches
// neither the log nor an error message.
func redactPath(p string) string {
	return auth.Redact(p)
}

// recovery turns a panic into a 500 envelope; the stack goes to the log only.
func (s *server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic", "request_id", info(c).id, "panic", p, "stack", string(debug.Stack()))
				if !c.Writer.Written() {
					s.abort(c, tollgate.CodeInternal, "internal error; quote the request id when reporting it")
				} else {
					c.Abort()
				}
			}
		}()
		c.Next()
	}
}

// bodyDeadline gives a request that carries a body s.bodyTimeout to send
// it (decodeJSON lifts the deadline once it has read the body). Without it a
// body nobody reads (a 401, a 404, GET /healthz with a body) is discarded by
// net/http before the answer is written, with no time limit, so a client
// trickling it would hold the connection for ever.
func (s *server) bodyDeadline() gin.HandlerFunc {
	return func(c *gin.Context) {
		info(c).bodyTimeout = s.bodyTimeout
		if c.Request.ContentLength != 0 {
			_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(s.bodyTimeout))
		}
		c.Next()
	}
}

// bodyLimit caps the request body; reading past it yields 413.
func (s *server) bodyLimit() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > s.maxBody {
			s.abort(c, tollgate.CodeBodyTooLarge, bodyTooLarge(s.maxBody))
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.maxBody)
		c.Next()
	}
}

func (s *server) notFound() gin.HandlerFunc {
	return func(c *gin.Context) {
		s.abort(c, tollgate.CodeNotFound, "no route "+c.Request.Method+" "+redactPath(c.Request.URL.Path)+" (see GET /models, POST /generate, /embed, /predict)")
	}
}

func (s *server) methodNotAllowed() gin.HandlerFunc {
	return func(c *gin.Context) {
		s.abort(c, tollgate.CodeMethodNotAllowed, "method "+c.Request.Method+" is not allowed on "+redactPath(c.Request.URL.Path)+"; allowed: "+c.Writer.Header().Get("Allow"))
	}
}
