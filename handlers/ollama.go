package handlers

// The Ollama-compatible surface (/api): a thin adapter. Each handler decodes
// Ollama's request shape, makes one gateway call and encodes Ollama's
// answer; scopes, limits, admission and metering are the gateway's, and
// errors render as {"error":"message"} through errorFor (the route's
// prefix makes the surface "ollama", on the usage row too).

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ollama/ollama/api"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
)

// ollamaVersion is the Ollama release whose API this surface mirrors (the
// github.com/ollama/ollama version in go.mod): clients that check the
// server's version get the one they are really talking to.
const ollamaVersion = "0.10.1"

// Requests are decoded into Ollama's own types, with keep_alive kept as
// sent ("5m", seconds or -1) for the gateway to check against the model's
// cap, and tools with their parameters as raw JSON (api.ToolFunction drops
// JSON-schema keywords it does not model). Unknown fields are ignored, as
// Ollama ignores them: its clients send fields newer than v0.10.1.
type ollamaGenerateRequest struct {
	api.GenerateRequest
	KeepAlive any `json:"keep_alive"`
}

type ollamaChatRequest struct {
	api.ChatRequest
	KeepAlive any          `json:"keep_alive"`
	Tools     []ollamaTool `json:"tools"`
}

type ollamaTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

type ollamaEmbedRequest struct {
	api.EmbedRequest
	Input     stringOrList `json:"input"`
	KeepAlive any          `json:"keep_alive"`
}

type ollamaEmbeddingRequest struct {
	api.EmbeddingRequest
	KeepAlive any `json:"keep_alive"`
}

// decodeOllama reads the body into v as Ollama does: one JSON value,
// unknown fields ignored. Errors name the field at fault.
func decodeOllama(c *gin.Context, v any) error {
	body, err := requestBody(c)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return badRequest("request body is empty; send a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return describeJSONError(err)
	}
	return nil
}

// unsupported refuses a field Ollama has but Tollgate cannot honour without
// bypassing the model's template, its metering or its limits.
func unsupported(field, why string) error {
	return badRequest("field %q is not supported by this server: %s", field, why)
}

func (r ollamaGenerateRequest) toGateway() (gateway.GenerateRequest, error) {
	switch {
	case r.Raw:
		return gateway.GenerateRequest{}, unsupported("raw", "prompts always go through the model's template")
	case r.Template != "":
		return gateway.GenerateRequest{}, unsupported("template", "the model's template is the operator's")
	case r.Suffix != "":
		return gateway.GenerateRequest{}, unsupported("suffix", "fill-in-the-middle is not offered")
	case len(r.Context) > 0:
		return gateway.GenerateRequest{}, unsupported("context", "send the conversation as messages to /api/chat")
	case len(r.Images) > 0:
		return gateway.GenerateRequest{}, unsupported("images", "only text is metered")
	case r.Think != nil && *r.Think:
		return gateway.GenerateRequest{}, unsupported("think", "thinking output is not offered")
	}
	prompt := r.Prompt
	return gateway.GenerateRequest{Model: r.Model, Prompt: &prompt, System: r.System,
		Options: r.Options, Format: r.Format, KeepAlive: r.KeepAlive}, nil
}

func (r ollamaChatRequest) toGateway() (gateway.GenerateRequest, error) {
	if r.Think != nil && *r.Think {
		return gateway.GenerateRequest{}, unsupported("think", "thinking output is not offered")
	}
	msgs := make([]inference.Message, len(r.Messages))
	for i, m := range r.Messages {
		if len(m.Images) > 0 {
			return gateway.GenerateRequest{}, unsupported("messages["+strconv.Itoa(i)+"].images", "only text is metered")
		}
		msgs[i] = inference.Message{Role: m.Role, Content: m.Content, ToolName: m.ToolName}
		for _, tc := range m.ToolCalls {
			msgs[i].ToolCalls = append(msgs[i].ToolCalls, inference.ToolCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
	}
	var tools []inference.Tool
	for _, t := range r.Tools {
		tools = append(tools, inference.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
	}
	return gateway.GenerateRequest{Model: r.Model, Messages: msgs, Tools: tools,
		Options: r.Options, Format: r.Format, KeepAlive: r.KeepAlive}, nil
}

// streams reports whether an Ollama request streams: it does unless it
// says "stream": false.
func streams(stream *bool) bool { return stream == nil || *stream }

// echoModel is the model name an answer carries: the one the client sent
// (Ollama echoes it, e.g. "name:latest"), or the one the gateway chose.
func echoModel(sent, resolved string) string {
	if sent != "" {
		return sent
	}
	return resolved
}

// ollamaDoneReason is the gateway's done reason in Ollama's words: an
// answer cut at the key's remaining allowance ran out of length.
func ollamaDoneReason(r string) string {
	if r == gateway.DoneLimit {
		return "length"
	}
	return r
}

// ollamaMetrics reports what was billed as Ollama's counts; durations are
// Tollgate's own total, from the request's arrival.
func ollamaMetrics(c *gin.Context, u inference.Usage) api.Metrics {
	return api.Metrics{TotalDuration: time.Since(info(c).start), PromptEvalCount: u.PromptTokens, EvalCount: u.CompletionTokens}
}

// ollamaGenerate serves POST /api/generate.
func (s *server) ollamaGenerate() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body ollamaGenerateRequest
		req, ok := s.decodeGenerate(c, decodeOllama, &body)
		if !ok {
			return
		}
		done := func(res gateway.GenerateResult, text string) api.GenerateResponse {
			return api.GenerateResponse{Model: echoModel(body.Model, res.Model), CreatedAt: time.Now().UTC(), Response: text,
				Done: true, DoneReason: ollamaDoneReason(res.DoneReason), Metrics: ollamaMetrics(c, res.Usage)}
		}
		if !streams(body.Stream) {
			res, err := s.gw.Generate(c.Request.Context(), caller(c), req, nil)
			s.noteCall(c, res.Result, err)
			if err != nil {
				s.failCall(c, err)
				return
			}
			s.reply(c, done(res, res.Text))
			return
		}
		s.ndjsonGenerate(c, req,
			func(text string) any {
				return api.GenerateResponse{Model: echoModel(body.Model, req.Model), CreatedAt: time.Now().UTC(), Response: text}
			},
			func(res gateway.GenerateResult) []any { return []any{done(res, "")} })
	}
}

// ollamaChat serves POST /api/chat.
func (s *server) ollamaChat() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body ollamaChatRequest
		req, ok := s.decodeGenerate(c, decodeOllama, &body)
		if !ok {
			return
		}
		answer := func(res gateway.GenerateResult, text string, calls bool, done bool) api.ChatResponse {
			out := api.ChatResponse{Model: echoModel(body.Model, res.Model), CreatedAt: time.Now().UTC(),
				Message: api.Message{Role: "assistant", Content: text}, Done: done}
			if calls {
				out.Message.ToolCalls = toAPIToolCalls(res.ToolCalls)
			}
			if done {
				out.DoneReason, out.Metrics = ollamaDoneReason(res.DoneReason), ollamaMetrics(c, res.Usage)
			}
			return out
		}
		if !streams(body.Stream) {
			res, err := s.gw.Generate(c.Request.Context(), caller(c), req, nil)
			s.noteCall(c, res.Result, err)
			if err != nil {
				s.failCall(c, err)
				return
			}
			s.reply(c, answer(res, res.Text, true, true))
			return
		}
		s.ndjsonGenerate(c, req,
			func(text string) any {
				return api.ChatResponse{Model: echoModel(body.Model, req.Model), CreatedAt: time.Now().UTC(),
					Message: api.Message{Role: "assistant", Content: text}}
			},
			func(res gateway.GenerateResult) []any {
				// As Ollama does, the tool calls come in a chunk of their own
				// before the final one.
				if len(res.ToolCalls) > 0 {
					return []any{answer(res, "", true, false), answer(res, "", false, true)}
				}
				return []any{answer(res, "", false, true)}
			})
	}
}

func toAPIToolCalls(calls []inference.ToolCall) []api.ToolCall {
	var out []api.ToolCall
	for i, tc := range calls {
		out = append(out, api.ToolCall{Function: api.ToolCallFunction{Index: i, Name: tc.Name, Arguments: tc.Arguments}})
	}
	return out
}

// ndjsonGenerate streams a generation as Ollama does: one JSON line per
// piece (application/x-ndjson), then the final lines. An error before the
// first piece is an ordinary {"error"} answer with its status; after it, a
// last line {"error":"..."} ends the stream (Ollama's clients raise it). The
// final lines, with the usage, go out only once the gateway has committed
// the usage record.
func (s *server) ndjsonGenerate(c *gin.Context, req gateway.GenerateRequest, piece func(string) any, final func(gateway.GenerateResult) []any) {
	ri := info(c)
	w := &ndjson{c: c}
	res, err := s.gw.Generate(c.Request.Context(), caller(c), req, func(text string) error {
		if !w.started {
			s.setLimitHeaders(c, ri.key)
		}
		return w.line(piece(text))
	})
	s.noteCall(c, res.Result, err)
	if !w.started && err != nil {
		s.failCall(c, err)
		return
	}
	if w.started {
		ri.status = res.Status // the status line is sent; the record has what the client got
	}
	if err != nil {
		e := describe(err)
		if e.Code == tollgate.CodeInternal {
			s.log.Error("internal error in stream", "request_id", ri.id, "error", err.Error())
		}
		_ = w.line(ollamaErrorBody{Error: e.Message})
		return
	}
	for _, v := range final(res) {
		if w.line(v) != nil {
			return
		}
	}
}

// ndjson writes newline-delimited JSON, sending the headers with the first
// line so that an error before any output can still be a plain answer.
type ndjson struct {
	c       *gin.Context
	started bool
}

func (w *ndjson) line(v any) error {
	if !w.started {
		w.started = true
		h := w.c.Writer.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("X-Accel-Buffering", "no") // tell nginx not to buffer the stream
		w.c.Status(http.StatusOK)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return withWriteDeadline(w.c, func() error { return writeFlush(w.c, data) })
}

// ollamaEmbed serves POST /api/embed. Inputs longer than the model's
// context are truncated, as Ollama does by default; "truncate": false (an
// error instead) cannot be honoured and is refused. Options are ignored:
// the catalog sets the model's.
func (s *server) ollamaEmbed() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body ollamaEmbedRequest
		if err := decodeOllama(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		if body.Truncate != nil && !*body.Truncate {
			s.fail(c, unsupported("truncate", "inputs longer than the model's context are always truncated"))
			return
		}
		res, err := s.gw.Embed(c.Request.Context(), caller(c), gateway.EmbedRequest{
			Model: body.Model, Input: gateway.Inputs(body.Input), KeepAlive: body.KeepAlive})
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		s.reply(c, api.EmbedResponse{Model: echoModel(body.Model, res.Model), Embeddings: res.Embeddings,
			TotalDuration: time.Since(info(c).start), PromptEvalCount: res.Usage.PromptTokens})
	}
}

// ollamaEmbeddings serves the legacy POST /api/embeddings: one prompt, one
// vector (the normalized one /api/embed returns). An empty prompt gets an
// empty vector, as from Ollama, without a model call.
func (s *server) ollamaEmbeddings() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body ollamaEmbeddingRequest
		if err := decodeOllama(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		if body.Prompt == "" { // Ollama answers an empty prompt with no vector, and runs nothing
			if _, err := s.gw.Authorize(caller(c), tollgate.Embed, body.Model); err != nil {
				s.fail(c, err)
				return
			}
			s.reply(c, api.EmbeddingResponse{Embedding: []float64{}})
			return
		}
		res, err := s.gw.Embed(c.Request.Context(), caller(c), gateway.EmbedRequest{
			Model: body.Model, Input: gateway.Inputs{Items: []string{body.Prompt}}, KeepAlive: body.KeepAlive})
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		out := api.EmbeddingResponse{Embedding: []float64{}}
		if len(res.Embeddings) > 0 {
			out.Embedding = make([]float64, len(res.Embeddings[0]))
			for i, x := range res.Embeddings[0] {
				out.Embedding[i] = float64(x)
			}
		}
		s.reply(c, out)
	}
}
