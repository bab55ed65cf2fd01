package handlers

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
	"tollgate/metering"
)

type generateRequest struct {
	Model     string              `json:"model"`
	Prompt    *string             `json:"prompt"`
	System    string              `json:"system"`
	Messages  []inference.Message `json:"messages"`
	Stream    bool                `json:"stream"`
	Options   map[string]any      `json:"options"`
	Format    json.RawMessage     `json:"format"`
	KeepAlive any                 `json:"keep_alive"`
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

// check turns the body into an inference request for model m.
func (r *generateRequest) check(m inference.Model) (inference.GenerateRequest, error) {
	var out inference.GenerateRequest
	switch {
	case r.Prompt != nil && r.Messages != nil:
		return out, badRequest("send either \"prompt\" or \"messages\", not both")
	case r.Prompt == nil && r.Messages == nil:
		return out, badRequest("field \"prompt\" (a string) or \"messages\" (an array of {role, content}) is required")
	case r.Prompt != nil && strings.TrimSpace(*r.Prompt) == "":
		return out, badRequest("field \"prompt\" must not be empty")
	}
	if err := checkMessages(r.Messages); err != nil {
		return out, err
	}
	if err := inference.CheckFormat(r.Format); err != nil {
		return out, err // before Ollama is called: a 400 here is not metered
	}
	opts, err := inference.CheckOptions(r.Options)
	if err != nil {
		return out, err
	}
	keep, err := inference.ParseKeepAlive(r.KeepAlive, m.Limits.MaxKeepAlive)
	if err != nil {
		return out, err
	}
	out = inference.GenerateRequest{System: r.System, Messages: r.Messages, Options: opts, Format: r.Format, KeepAlive: keep}
	if r.Prompt != nil {
		out.Prompt = *r.Prompt
	}
	return out, nil
}

func checkMessages(msgs []inference.Message) error {
	if msgs != nil && len(msgs) == 0 {
		return badRequest("field \"messages\" must not be empty")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return badRequest("field \"messages[%d].role\" must be system, user or assistant", i)
		}
	}
	return nil
}

// generate serves POST /generate: one JSON answer, or Server-Sent Events when
// "stream" is true.
func (s *server) generate() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body generateRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		m, err := s.inf.Catalog().ModelFor(body.Model, inference.EndpointGenerate)
		if err != nil {
			s.fail(c, err)
			return
		}
		if !s.allowModel(c, &m) {
			return
		}
		req, err := body.check(m)
		if err != nil {
			s.fail(c, err)
			return
		}
		ri := info(c)
		ri.model = m.Name
		if body.Stream {
			s.streamGenerate(c, m, req)
			return
		}
		res, err := s.inf.Generate(c.Request.Context(), m, req, nil)
		ri.firstToken = res.FirstToken
		s.finish(c, metering.EndpointGenerate, m, produced(res), err, func() {
			c.JSON(http.StatusOK, generateResponse{ID: ri.id, Model: m.Name, Text: res.Text, DoneReason: res.DoneReason, Usage: ri.usage})
		})
	}
}

// produced is what a generation is billed for: Ollama's exact counts when it
// finished, else the pieces it streamed before it stopped (one piece per
// generated token; Ollama reports no prompt count for a call cut short).
func produced(res inference.Result) inference.Usage {
	if res.Done {
		return res.Usage
	}
	return inference.Usage{CompletionTokens: res.Chunks}
}
