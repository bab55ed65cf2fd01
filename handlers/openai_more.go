package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
	"tollgate/metering"
)

// oaStreamer shapes a streamed OpenAI answer: a chunk per piece of text,
// the chunks that end it (tool calls, finish_reason), and the usage chunk.
type oaStreamer interface {
	piece(model, text string) any
	end(model string, res gateway.GenerateResult, requestID string) []any
	usage(model string, u inference.Usage) any
}

// openAIStream relays a generation as OpenAI's Server-Sent Events:
// "data: {chunk}" events, then, with stream_options.include_usage, a chunk
// with no choices and the usage, then "data: [DONE]". An error before the
// first event is an ordinary OpenAI error response; after it, a
// "data: {"error":{...}}" event ends the stream (without [DONE]).
func (s *server) openAIStream(c *gin.Context, req gateway.GenerateRequest, includeUsage bool, shape oaStreamer) {
	ri := info(c)
	w := &sse{c: c}
	model := req.Model // the public name in every chunk, as the gateway will resolve it
	if m, err := s.gw.Catalog().ModelFor(req.Model, tollgate.Generate); err == nil {
		model = m.Name
	}
	res, err := s.gw.Generate(c.Request.Context(), caller(c), req, func(text string) error {
		if !w.started {
			s.setLimitHeaders(c, ri.key)
		}
		return w.event("", shape.piece(model, text))
	})
	s.noteCall(c, res.Result, err)
	if !w.started && err != nil {
		s.failCall(c, err)
		return
	}
	if w.started {
		ri.status = res.Status // the record carries what the client got
	}
	if err != nil {
		e := describe(err)
		if e.Code == tollgate.CodeInternal {
			s.log.Error("internal error in stream", "request_id", ri.id, "error", err.Error())
		}
		_, body := errorFor(metering.SurfaceOpenAI, e, ri.id)
		_ = w.event("", body)
		return
	}
	for _, ev := range shape.end(model, res, ri.id) {
		if w.event("", ev) != nil {
			return
		}
	}
	if includeUsage && w.event("", shape.usage(model, res.Usage)) != nil {
		return
	}
	_ = w.doneEvent()
}

// doneEvent writes OpenAI's end of stream, "data: [DONE]".
func (w *sse) doneEvent() error {
	w.start()
	return withWriteDeadline(w.c, func() error {
		if err := writeFlush(w.c, []byte("data: [DONE]\n\n")); err != nil {
			w.writeErr = err
			return err
		}
		return nil
	})
}

// oaChatStream shapes chat.completion.chunk events: the first carries the
// role, tool calls come whole in one delta at the end, then the finish.
type oaChatStream struct {
	id      string
	created int64
	began   bool // a chunk with the role went out
}

func (st *oaChatStream) chunk(model string, d oaAnswer, reason *string) oaChatCompletion {
	if !st.began {
		d.Role, st.began = "assistant", true
	}
	return oaChatCompletion{ID: st.id, Object: "chat.completion.chunk", Created: st.created, Model: model,
		Choices: []oaChatChoice{{Delta: &d, FinishReason: reason}}}
}

func (st *oaChatStream) piece(model, text string) any {
	return st.chunk(model, oaAnswer{Content: &text}, nil)
}

func (st *oaChatStream) end(model string, res gateway.GenerateResult, requestID string) []any {
	var out []any
	if calls := oaToolCalls(res.ToolCalls, requestID, true); calls != nil {
		out = append(out, st.chunk(model, oaAnswer{ToolCalls: calls}, nil))
	} else if !st.began {
		empty := ""
		out = append(out, st.chunk(model, oaAnswer{Content: &empty}, nil))
	}
	reason := finishReason(res)
	return append(out, st.chunk(model, oaAnswer{}, &reason))
}

func (st *oaChatStream) usage(model string, u inference.Usage) any {
	return oaChatCompletion{ID: st.id, Object: "chat.completion.chunk", Created: st.created, Model: model,
		Choices: []oaChatChoice{}, Usage: toOAUsage(u)}
}

// oaCompletionRequest is POST /v1/completions (OpenAI's legacy API).
type oaCompletionRequest struct {
	Model string `json:"model"`
	oaSampling
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int            `json:"best_of"`
}

func (r oaCompletionRequest) toGateway() (gateway.GenerateRequest, error) {
	out := gateway.GenerateRequest{Model: r.Model}
	switch {
	case r.Logprobs != nil && *r.Logprobs != 0:
		return out, invalidParam("logprobs", "field \"logprobs\" is not supported")
	case r.Echo:
		return out, invalidParam("echo", "field \"echo\" is not supported")
	case r.Suffix != nil && *r.Suffix != "":
		return out, invalidParam("suffix", "field \"suffix\" is not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return out, invalidParam("best_of", "field \"best_of\" must be 1")
	}
	prompt, err := oaPrompt(r.Prompt)
	if err != nil {
		return out, err
	}
	out.Prompt = &prompt
	out.Options, err = r.options(nil)
	return out, err
}

// oaPrompt is the prompt: a string or an array of one string. Several
// prompts (several choices) and token arrays are refused.
func oaPrompt(raw json.RawMessage) (string, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil && len(list) == 1 {
		return list[0], nil
	}
	if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
		return "", invalidParam("prompt", "field \"prompt\" is required: a string")
	}
	return "", invalidParam("prompt", "field \"prompt\" must be a string or an array of one string (token arrays and several prompts are not supported)")
}

type oaCompletion struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []oaTextChoice `json:"choices"`
	Usage   *oaUsage       `json:"usage"`
}

type oaTextChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// oaTextStream shapes text_completion stream events.
type oaTextStream struct {
	id      string
	created int64
}

func (st oaTextStream) chunk(model string, choices []oaTextChoice, u *oaUsage) oaCompletion {
	return oaCompletion{ID: st.id, Object: "text_completion", Created: st.created, Model: model, Choices: choices, Usage: u}
}

func (st oaTextStream) piece(model, text string) any {
	return st.chunk(model, []oaTextChoice{{Text: text}}, nil)
}

func (st oaTextStream) end(model string, res gateway.GenerateResult, _ string) []any {
	reason := finishReason(res)
	return []any{st.chunk(model, []oaTextChoice{{FinishReason: &reason}}, nil)}
}

func (st oaTextStream) usage(model string, u inference.Usage) any {
	return st.chunk(model, []oaTextChoice{}, toOAUsage(u))
}

// openAICompletions serves POST /v1/completions.
func (s *server) openAICompletions() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body oaCompletionRequest
		req, ok := s.decodeGenerate(c, decodeJSON, &body)
		if !ok {
			return
		}
		st := oaTextStream{id: "cmpl-" + info(c).id, created: info(c).arrived.Unix()}
		if body.Stream {
			s.openAIStream(c, req, body.includeUsage(), st)
			return
		}
		res, ok := s.generateWhole(c, req)
		if !ok {
			return
		}
		reason := finishReason(res)
		s.reply(c, st.chunk(res.Model, []oaTextChoice{{Text: res.Text, FinishReason: &reason}}, toOAUsage(res.Usage)))
	}
}

// oaEmbeddingRequest is POST /v1/embeddings.
type oaEmbeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"` // accepted and ignored
}

// oaInputs is the input: a string or an array of strings; token arrays are
// refused (Tollgate does not expose the models' tokenizers).
func oaInputs(raw json.RawMessage) (gateway.Inputs, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return gateway.Inputs{Items: []string{one}}, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return gateway.Inputs{Items: list, List: true}, nil
	}
	return gateway.Inputs{}, invalidParam("input", "field \"input\" must be a string or an array of strings (token arrays are not supported)")
}

type oaEmbeddingList struct {
	Object string        `json:"object"`
	Data   []oaEmbedding `json:"data"`
	Model  string        `json:"model"`
	Usage  oaEmbedUsage  `json:"usage"`
}

type oaEmbedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type oaEmbedUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// openAIEmbeddings serves POST /v1/embeddings.
func (s *server) openAIEmbeddings() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body oaEmbeddingRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		in, err := oaInputs(body.Input)
		switch {
		case err != nil:
		case body.EncodingFormat != "" && body.EncodingFormat != "float" && body.EncodingFormat != "base64":
			err = invalidParam("encoding_format", "field \"encoding_format\" must be float or base64")
		case body.Dimensions != nil:
			err = invalidParam("dimensions", "field \"dimensions\" is not supported: each model returns its own size")
		}
		if err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.gw.Embed(c.Request.Context(), caller(c), gateway.EmbedRequest{Model: body.Model, Input: in})
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		out := oaEmbeddingList{Object: "list", Data: make([]oaEmbedding, len(res.Embeddings)), Model: res.Model,
			Usage: oaEmbedUsage{PromptTokens: res.Usage.PromptTokens, TotalTokens: res.Usage.Total()}}
		for i, v := range res.Embeddings {
			out.Data[i] = oaEmbedding{Object: "embedding", Index: i, Embedding: v}
			if body.EncodingFormat == "base64" {
				out.Data[i].Embedding = base64Floats(v)
			}
		}
		s.reply(c, out)
	}
}

// base64Floats is v as little-endian float32 bytes, base64-encoded.
func base64Floats(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

type oaModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type oaModelList struct {
	Object string    `json:"object"`
	Data   []oaModel `json:"data"`
}

// openAIModels serves GET /v1/models and, with one, GET /v1/models/{id}:
// the models this key may use, by public name.
func (s *server) openAIModels(one bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		models, _, err := s.gw.Models(info(c).key)
		if err != nil {
			s.fail(c, err)
			return
		}
		list := oaModelList{Object: "list", Data: []oaModel{}}
		for _, m := range models {
			om := oaModel{ID: m.Name, Object: "model", OwnedBy: "tollgate"}
			if one && m.Name == c.Param("id") {
				c.JSON(http.StatusOK, om)
				return
			}
			list.Data = append(list.Data, om)
		}
		if one {
			s.fail(c, tollgate.Errorf(tollgate.CodeModelNotFound, "model %s does not exist or this key may not use it", strconv.Quote(c.Param("id"))))
			return
		}
		c.JSON(http.StatusOK, list)
	}
}
