package handlers

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/idempotency"
)

// IdempotencyHeader is the request header (echoed on the response) that
// makes a POST safe to retry; replays also carry ReplayedHeader: true.
const (
	IdempotencyHeader = "Idempotency-Key"
	ReplayedHeader    = "Idempotent-Replayed"
)

// replayedHeaders are the answer's headers that a replay repeats. Rate
// limit headers are not among them: they describe the moment of the first
// answer, not of the replay.
var replayedHeaders = []string{"Content-Type", "Cache-Control", "Location", "Preference-Applied"}

// idempotencyStoreTimeout bounds the record writes after the handler, on a
// context detached from the client's (a client that hung up after its
// answer must still have it replayed on retry).
const idempotencyStoreTimeout = 5 * time.Second

// idempotent makes a POST that runs a model or creates something safe to
// retry with an Idempotency-Key. It goes after authentication (records are
// per API key). A request without the header passes through untouched.
//
//   - The first request with a key claims it (a durable in-progress record),
//     runs, and its answer is stored when it is a 2xx, complete and not
//     over idempotency.MaxBody; any other answer releases the key, so a
//     retry runs again (a 429, 402, 5xx or a dropped stream must stay
//     retryable, and a 400 may be fixed and resent).
//   - A retry with the same key, method, path and body within 24 h gets the
//     stored answer (status, Content-Type, body; streams as one body) with
//     Idempotent-Replayed: true, without calling Ollama or billing again.
//   - The same key for another request is 422 idempotency_key_reused; while
//     the first still runs, 409 idempotency_key_in_use with Retry-After: 1.
//   - An invalid header (empty, repeated, over 255 characters, anything but
//     visible ASCII) is 400.
func (s *server) idempotent() gin.HandlerFunc {
	return func(c *gin.Context) {
		vals := c.Request.Header.Values(IdempotencyHeader)
		if len(vals) == 0 || s.idem == nil {
			c.Next()
			return
		}
		if len(vals) > 1 || !idempotency.ValidKey(vals[0]) {
			s.fail(c, withParam(badRequest("header %s must be one value of 1 to %d visible ASCII characters (a UUID, for example)",
				IdempotencyHeader, idempotency.MaxKeyLen), IdempotencyHeader))
			return
		}
		key := vals[0]
		c.Header(IdempotencyHeader, key)
		ri := info(c)
		body, err := requestBody(c)
		if err != nil {
			s.fail(c, err)
			return
		}
		secret, _ := presentedKey(c.Request) // authenticate has accepted it
		rec := idempotency.Record{KeyID: ri.keyID, Key: key, Owner: ri.id,
			// Prefer: respond-async turns a call into a job: not the same request.
			Fingerprint: idempotency.Fingerprint(c.Request.Method, c.Request.URL.Path, body, strings.Join(c.Request.Header.Values("Prefer"), ","))}
		cur, claimed, err := s.idem.Claim(c.Request.Context(), rec, s.now())
		if err != nil {
			s.fail(c, err)
			return
		}
		if !claimed {
			s.answerExisting(c, cur, rec, secret)
			return
		}
		s.runClaimed(c, rec, secret)
	}
}

// answerExisting answers a request whose key is already taken: by a
// different request (422), by one still running (409), or by this very
// request, done (the replay).
func (s *server) answerExisting(c *gin.Context, cur, rec idempotency.Record, secret string) {
	reused := func() {
		s.abort(c, tollgate.CodeIdempotencyReused, "this "+IdempotencyHeader+" was already used for a different request (another body or route) within 24 h; use a new key for a new request")
	}
	if cur.Fingerprint != rec.Fingerprint {
		reused()
		return
	}
	if !cur.Done {
		s.fail(c, &tollgate.Error{Code: tollgate.CodeIdempotencyInUse, RetryAfter: time.Second,
			Message: "a request with this " + IdempotencyHeader + " is still running; retry shortly to get its answer"})
		return
	}
	plain, err := idempotency.Open(secret, rec.Key, cur.Body)
	if errors.Is(err, idempotency.ErrOpen) {
		// Same key id, another of its secrets (rotated): the answer was
		// sealed for the one that made it.
		reused()
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	h := c.Writer.Header()
	for k, v := range cur.Header {
		h.Set(k, v)
	}
	h.Set(ReplayedHeader, "true")
	c.Status(cur.Status)
	_ = withWriteDeadline(c, func() error { _, err := c.Writer.Write(plain); return err })
	c.Abort()
}

// runClaimed runs the handler for a claimed key, capturing its answer, and
// then stores it or releases the key. The gateway has committed the usage
// row before the answer is written, so a crash between the answer and
// Finish leaves an in-progress record: for idempotency.StaleAfter retries
// get 409, then one retry runs (and is billed) again.
func (s *server) runClaimed(c *gin.Context, rec idempotency.Record, secret string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), idempotencyStoreTimeout)
	defer cancel()
	release := func() {
		if err := s.idem.Release(ctx, rec.KeyID, rec.Key, rec.Owner); err != nil {
			s.log.Warn("idempotency key not released", "request_id", rec.Owner, "error", err.Error())
		}
	}
	// While the handler runs (a stream may run for long), keep the record
	// alive, so a retry gets 409 rather than taking it over and running
	// (and billing) the request a second time.
	alive := make(chan struct{})
	defer close(alive)
	go s.keepAlive(rec, alive)
	w := &captureWriter{ResponseWriter: c.Writer}
	c.Writer = w
	defer func() {
		c.Writer = w.ResponseWriter
		if p := recover(); p != nil {
			release()
			panic(p)
		}
	}()
	c.Next()

	status := w.Status()
	if ri := info(c); ri.status != 0 {
		status = ri.status // a stream's outcome after its 200 (an error, a client gone)
	}
	if !w.Written() || status < 200 || status > 299 || w.over {
		release()
		return
	}
	sealed, err := idempotency.Seal(secret, rec.Key, w.buf.Bytes())
	if err != nil {
		s.log.Error("idempotency answer not sealed", "request_id", rec.Owner, "error", err.Error())
		release()
		return
	}
	rec.Done, rec.Status, rec.Body, rec.Header = true, w.Status(), sealed, map[string]string{}
	for _, k := range replayedHeaders {
		if v := w.Header().Get(k); v != "" {
			rec.Header[k] = v
		}
	}
	if err := s.idem.Finish(ctx, rec); err != nil {
		// The key stays in progress until it is stale: retries get 409
		// meanwhile, then run again.
		s.log.Error("idempotency answer not stored", "request_id", rec.Owner, "error", err.Error())
	}
}

// keepAlive touches rec's record every quarter of idempotency.StaleAfter
// until done is closed.
func (s *server) keepAlive(rec idempotency.Record, done <-chan struct{}) {
	t := time.NewTicker(idempotency.StaleAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), idempotencyStoreTimeout)
			if err := s.idem.Touch(ctx, rec.KeyID, rec.Key, rec.Owner, s.now()); err != nil {
				s.log.Warn("idempotency key not kept alive", "request_id", rec.Owner, "error", err.Error())
			}
			cancel()
		}
	}
}

// captureWriter keeps a copy of everything the handler writes. It keeps
// what was meant to be written even when the write to the client failed: a
// complete answer to a client that hung up is what its retry should get.
type captureWriter struct {
	gin.ResponseWriter
	buf  bytes.Buffer
	over bool // more than idempotency.MaxBody: not kept
}

func (w *captureWriter) keep(p []byte) {
	if w.over {
		return
	}
	if w.buf.Len()+len(p) > idempotency.MaxBody {
		w.over = true
		w.buf = bytes.Buffer{}
		return
	}
	w.buf.Write(p)
}

func (w *captureWriter) Write(p []byte) (int, error) {
	w.keep(p)
	return w.ResponseWriter.Write(p)
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.keep([]byte(s))
	return w.ResponseWriter.WriteString(s)
}

// Unwrap lets http.ResponseController reach the connection (write
// deadlines, flushes).
func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
