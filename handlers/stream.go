package handlers

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/gateway"
)

type streamChunk struct {
	Text string `json:"text"`
}

type streamDone struct {
	Done       bool      `json:"done"`
	ID         string    `json:"id"`
	Model      string    `json:"model"`
	DoneReason string    `json:"done_reason"`
	Usage      usageJSON `json:"usage"`
}

// sse writes Server-Sent Events, sending headers with the first event so
// that an error before any output can still be a plain JSON error.
type sse struct {
	c        *gin.Context
	started  bool
	writeErr error // the client could not be written to
}

func (w *sse) start() {
	if w.started {
		return
	}
	w.started = true
	h := w.c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell nginx not to buffer the stream
	w.c.Status(http.StatusOK)
}

// event writes one event (name may be empty) and flushes it to the client.
func (w *sse) event(name string, v any) error {
	w.start()
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(data)+32)
	if name != "" {
		buf = append(buf, "event: "...)
		buf = append(buf, name...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	buf = append(buf, '\n', '\n')
	return withWriteDeadline(w.c, func() error {
		if err := writeFlush(w.c, buf); err != nil {
			w.writeErr = err
			return err
		}
		return nil
	})
}

// writeFlush writes b and flushes it to the client, reporting a failed
// flush too: a piece counts as delivered (and billed) only once it has
// left the process. Gin's Flush swallows the error, so this flushes the
// innermost writer that can report one.
func writeFlush(c *gin.Context, b []byte) error {
	if _, err := c.Writer.Write(b); err != nil {
		return err
	}
	var w http.ResponseWriter = c.Writer
	for {
		switch t := w.(type) {
		case interface{ FlushError() error }:
			return t.FlushError()
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		case http.Flusher:
			t.Flush()
			return nil
		default:
			return nil
		}
	}
}

// writeTimeout bounds one write to a client. A client that stops reading
// would otherwise block its handler, and with it a GPU slot and Ollama's
// generation, for ever. It bounds each write, not the whole response, so a
// long healthy stream is never cut.
const writeTimeout = 30 * time.Second

// withWriteDeadline runs write under a fresh write deadline and lifts it
// afterwards (net/http does not reset it between requests on a connection).
func withWriteDeadline(c *gin.Context, write func() error) error {
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := write()
	_ = rc.SetWriteDeadline(time.Time{})
	return err
}

// streamGenerate relays Ollama's pieces as they come. An error before the
// first piece is an ordinary JSON error; after it, an "error" event carrying
// the same envelope ends the stream. The final event, with the usage, goes
// out only once the gateway has committed the usage record.
func (s *server) streamGenerate(c *gin.Context, req gateway.GenerateRequest) {
	ri := info(c)
	w := &sse{c: c}
	res, err := s.gw.Generate(c.Request.Context(), caller(c), req, func(text string) error {
		if !w.started {
			s.setLimitHeaders(c, ri.key)
		}
		return w.event("", streamChunk{Text: text})
	})
	s.noteCall(c, res.Result, err)
	if !w.started {
		if err != nil {
			s.failCall(c, err)
			return
		}
		// Ollama finished without a single piece of text.
		_ = w.event("", streamDone{Done: true, ID: ri.id, Model: res.Model, DoneReason: res.DoneReason, Usage: ri.usage})
		return
	}
	// The stream has begun, so the status line is sent; the record carries
	// what the client actually got (e.g. 499 for a client that left).
	ri.status = res.Status
	if err != nil {
		e := describe(err)
		if e.Code == tollgate.CodeInternal {
			s.log.Error("internal error in stream", "request_id", ri.id, "error", err.Error())
		}
		_ = w.event("error", errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, RequestID: ri.id}})
		return
	}
	_ = w.event("", streamDone{Done: true, ID: ri.id, Model: res.Model, DoneReason: res.DoneReason, Usage: ri.usage})
}
