package handlers

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/metering"
)

type generateRequest struct {
	Model     string              `json:"model"`
	Prompt    *string             `json:"prompt"`
	System    string              `json:"system"`
	Messages  []inference.Message `json:"messages"`
	Stream    flexBool            `json:"stream"`
	Options   flexOptions         `json:"options"`
	Format    json.RawMessage     `json:"format"`
	KeepAlive any                 `json:"keep_alive"`
}

func (r generateRequest) toGateway() (gateway.GenerateRequest, error) {
	return gateway.GenerateRequest{Model: r.Model, Prompt: r.Prompt, System: r.System, Messages: r.Messages,
		Options: r.Options, Format: r.Format, KeepAlive: keepAliveValue(r.KeepAlive)}, nil
}

type usageJSON struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func toUsage(u inference.Usage) usageJSON {
	return usageJSON{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.Total()}
}

type generateResponse struct {
	ID         string    `json:"id"`
	Model      string    `json:"model"`
	Text       string    `json:"text"`
	DoneReason string    `json:"done_reason"`
	Usage      usageJSON `json:"usage"`
}

// caller is the gateway's view of this request: its key, id, arrival and
// the API surface its route belongs to.
func caller(c *gin.Context) gateway.Caller {
	ri := info(c)
	return gateway.Caller{Key: ri.key, RequestID: ri.id, Arrived: ri.arrived, Surface: surfaceOf(c.FullPath())}
}

// surfaceOf names the API a route belongs to: /v1 is OpenAI's, /api
// Ollama's, everything else the native one.
func surfaceOf(route string) string {
	switch {
	case strings.HasPrefix(route, "/v1/"):
		return metering.SurfaceOpenAI
	case strings.HasPrefix(route, "/api/"):
		return metering.SurfaceOllama
	}
	return metering.SurfaceNative
}

// generate serves POST /generate: one JSON answer, or Server-Sent Events when
// "stream" is true.
func (s *server) generate() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.respondAsync(c, "generate") {
			return
		}
		var body generateRequest
		req, ok := s.decodeGenerate(c, decodeNative, &body)
		if !ok {
			return
		}
		if body.Stream {
			s.streamGenerate(c, req)
			return
		}
		res, ok := s.generateWhole(c, req)
		if !ok {
			return
		}
		s.reply(c, generateResponse{ID: info(c).id, Model: res.Model, Text: res.Text, DoneReason: res.DoneReason, Usage: toUsage(res.Usage)})
	}
}

// generateBody is a surface's generation request, decoded from its own
// shape, that turns into the gateway's (validating what is its own).
type generateBody interface {
	toGateway() (gateway.GenerateRequest, error)
}

// decodeGenerate decodes the request body into body with decode and turns
// it into a gateway request; on error it fails the request and returns
// false.
func (s *server) decodeGenerate(c *gin.Context, decode func(*gin.Context, any) error, body generateBody) (gateway.GenerateRequest, bool) {
	if err := decode(c, body); err != nil {
		s.fail(c, err)
		return gateway.GenerateRequest{}, false
	}
	req, err := body.toGateway()
	if err != nil {
		s.fail(c, err)
		return gateway.GenerateRequest{}, false
	}
	return req, true
}

// generateWhole runs a non-streamed generation through the gateway and
// notes it; on error it reports the failure and returns false.
func (s *server) generateWhole(c *gin.Context, req gateway.GenerateRequest) (gateway.GenerateResult, bool) {
	res, err := s.gw.Generate(c.Request.Context(), caller(c), req, nil)
	s.noteCall(c, res.Result, err)
	if err != nil {
		s.failCall(c, err)
		return res, false
	}
	return res, true
}

// failCall reports a failed gateway call, unless the client is gone (then
// nobody is listening).
func (s *server) failCall(c *gin.Context, err error) {
	if c.Request.Context().Err() != nil {
		c.Abort()
		return
	}
	s.fail(c, err)
}

// reply writes a 200 JSON answer and flushes it to the socket at once,
// with its Content-Length, under a write deadline: the client has the whole
// answer before the access log, metrics and the rest of the chain run, and
// the deadline bounds the real socket write, not a copy into net/http's
// buffer.
func (s *server) reply(c *gin.Context, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		s.log.Error("encode answer", "request_id", info(c).id, "error", err.Error())
		s.abort(c, tollgate.CodeInternal, "internal error; quote the request id when reporting it")
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	c.Status(http.StatusOK)
	if _, held := c.Writer.(*captureWriter); held {
		// Under an Idempotency-Key the answer leaves once its record is
		// stored, so a retry that arrives after it is replayed, not 409.
		_ = withWriteDeadline(c, func() error { _, err := c.Writer.Write(b); return err })
		return
	}
	_ = withWriteDeadline(c, func() error { return writeFlush(c, b) })
}
