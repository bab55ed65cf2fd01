package handlers

// The OpenAI-compatible surface (/v1): each handler decodes OpenAI's request
// shape, makes one gateway call and encodes OpenAI's answer. Scopes, limits,
// metering and the surface on the usage row are the gateway's and the
// route's; nothing here admits, limits or bills.
//
// What OpenAI's API has and Ollama cannot do is refused with a 400 whose
// param names the field (n > 1, logprobs, logit_bias, tool_choice
// "required" or a named function, echo, suffix, best_of, dimensions, token
// arrays); "user" and "parallel_tool_calls" are accepted and ignored.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/gateway"
	"tollgate/inference"
)

// invalidParam is a 400 naming the OpenAI request field at fault.
func invalidParam(param, format string, args ...any) *tollgate.Error {
	return withParam(badRequest(format, args...), param)
}

// oaSampling are the sampling fields the chat and legacy completion
// requests share; they become Ollama options.
type oaSampling struct {
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	Stop             any             `json:"stop"` // a string or an array of strings
	Seed             *int64          `json:"seed"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	N                *int            `json:"n"`
	LogitBias        map[string]any  `json:"logit_bias"`
	User             string          `json:"user"` // accepted and ignored
	Stream           bool            `json:"stream"`
	StreamOptions    *oaStreamOption `json:"stream_options"`
}

type oaStreamOption struct {
	IncludeUsage bool `json:"include_usage"`
}

// options turns the sampling fields into Ollama options (checked, and
// named back to OpenAI's fields on error, by the gateway and errorFor),
// refusing what Ollama cannot do.
func (s oaSampling) options(maxTokens *int) (map[string]any, error) {
	if s.N != nil && *s.N != 1 {
		return nil, invalidParam("n", "field \"n\" must be 1: Tollgate returns one choice per request")
	}
	if len(s.LogitBias) > 0 {
		return nil, invalidParam("logit_bias", "field \"logit_bias\" is not supported")
	}
	opts := map[string]any{}
	if maxTokens == nil {
		maxTokens = s.MaxTokens
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return nil, invalidParam("max_tokens", "field \"max_tokens\" must be at least 1")
		}
		opts["num_predict"] = *maxTokens
	}
	set := func(name string, v *float64) {
		if v != nil {
			opts[name] = *v
		}
	}
	set("temperature", s.Temperature)
	set("top_p", s.TopP)
	set("presence_penalty", s.PresencePenalty)
	set("frequency_penalty", s.FrequencyPenalty)
	if s.Seed != nil {
		opts["seed"] = *s.Seed
	}
	if s.Stop != nil {
		opts["stop"] = s.Stop
	}
	return opts, nil
}

func (s oaSampling) includeUsage() bool {
	return s.StreamOptions != nil && s.StreamOptions.IncludeUsage
}

// oaChatRequest is POST /v1/chat/completions.
type oaChatRequest struct {
	Model string `json:"model"`
	oaSampling
	Messages            []oaMessage     `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	ResponseFormat      *oaResponseFmt  `json:"response_format"`
	Tools               []oaTool        `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"` // accepted and ignored
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
}

type oaMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"` // a string, an array of text parts, or null
	Name       string          `json:"name"`
	ToolCalls  []oaToolCall    `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
	Refusal    *string         `json:"refusal"`
}

type oaToolCall struct {
	Index    *int           `json:"index,omitempty"` // streamed deltas only
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Function oaFunctionCall `json:"function"`
}

type oaFunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"` // a JSON object, as a string
}

type oaTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

type oaResponseFmt struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

// toGateway is the chat request in the gateway's terms.
func (r oaChatRequest) toGateway() (gateway.GenerateRequest, error) {
	out := gateway.GenerateRequest{Model: r.Model}
	if r.Logprobs != nil && *r.Logprobs {
		return out, invalidParam("logprobs", "field \"logprobs\" is not supported")
	}
	if r.TopLogprobs != nil {
		return out, invalidParam("top_logprobs", "field \"top_logprobs\" is not supported")
	}
	max := r.MaxCompletionTokens
	if max != nil && *max < 1 {
		return out, invalidParam("max_completion_tokens", "field \"max_completion_tokens\" must be at least 1")
	}
	opts, err := r.options(max)
	if err != nil {
		return out, err
	}
	out.Options = opts
	if out.Format, err = r.ResponseFormat.format(); err != nil {
		return out, err
	}
	if out.Messages, err = oaMessages(r.Messages); err != nil {
		return out, err
	}
	useTools, err := toolChoice(r.ToolChoice)
	if err != nil {
		return out, err
	}
	for i, t := range r.Tools {
		if t.Type != "function" {
			return out, invalidParam(fmt.Sprintf("tools[%d].type", i), "field \"tools[%d].type\" must be \"function\"", i)
		}
		if useTools {
			out.Tools = append(out.Tools, inference.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
		}
	}
	return out, nil
}

// toolChoice reports whether the tools go to the model: "auto" (or
// nothing) yes, "none" no. Ollama cannot force a call, so "required" and a
// named function are refused rather than silently not honoured.
func toolChoice(raw json.RawMessage) (bool, error) {
	var s string
	if len(raw) == 0 || string(raw) == "null" {
		return true, nil
	}
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto":
			return true, nil
		case "none":
			return false, nil
		}
	}
	return false, invalidParam("tool_choice", "field \"tool_choice\" must be \"auto\" or \"none\": the models behind Tollgate cannot be forced to call a tool")
}

// format is the Ollama format for a response_format.
func (f *oaResponseFmt) format() (json.RawMessage, error) {
	if f == nil {
		return nil, nil
	}
	switch f.Type {
	case "text":
		return nil, nil
	case "json_object":
		return json.RawMessage(`"json"`), nil
	case "json_schema":
		if f.JSONSchema == nil || len(f.JSONSchema.Schema) == 0 || f.JSONSchema.Schema[0] != '{' {
			return nil, invalidParam("response_format.json_schema.schema", "field \"response_format.json_schema.schema\" must be a JSON schema object")
		}
		return f.JSONSchema.Schema, nil
	}
	return nil, invalidParam("response_format.type", "field \"response_format.type\" must be text, json_object or json_schema")
}

// oaMessages turns OpenAI's turns into the gateway's: "developer" is a
// system turn, a tool turn's tool_call_id becomes the name of the tool the
// assistant called under that id, text parts are joined.
func oaMessages(in []oaMessage) ([]inference.Message, error) {
	if in == nil {
		return nil, invalidParam("messages", "field \"messages\" is required: an array of {role, content}")
	}
	out := make([]inference.Message, 0, len(in))
	toolNames := map[string]string{} // tool_call_id -> function name
	for i, m := range in {
		field := fmt.Sprintf("messages[%d]", i)
		content, err := oaContent(m.Content, field+".content")
		if err != nil {
			return nil, err
		}
		msg := inference.Message{Role: m.Role, Content: content}
		switch m.Role {
		case "developer":
			msg.Role = "system"
		case "system", "user":
		case "assistant":
			for j, tc := range m.ToolCalls {
				f := fmt.Sprintf("%s.tool_calls[%d].function.arguments", field, j)
				var args map[string]any
				if tc.Function.Arguments != "" {
					if err := json.Unmarshal([]byte(tc.Function.Arguments), &args); err != nil {
						return nil, invalidParam(f, "field %q must be a JSON object in a string", f)
					}
				}
				toolNames[tc.ID] = tc.Function.Name
				msg.ToolCalls = append(msg.ToolCalls, inference.ToolCall{Name: tc.Function.Name, Arguments: args})
			}
		case "tool":
			name, ok := toolNames[m.ToolCallID]
			if !ok {
				f := field + ".tool_call_id"
				return nil, invalidParam(f, "field %q is %q, which no earlier assistant tool call has", f, m.ToolCallID)
			}
			msg.ToolName = name
		default:
			f := field + ".role"
			return nil, invalidParam(f, "field %q must be system, developer, user, assistant or tool", f)
		}
		out = append(out, msg)
	}
	return out, nil
}

// oaContent is a message's text: a string, null, or an array of
// {"type":"text","text":...} parts (joined).
func oaContent(raw json.RawMessage, field string) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", invalidParam(field, "field %q must be a string or an array of text parts", field)
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type != "text" {
			f := fmt.Sprintf("%s[%d].type", field, i)
			return "", invalidParam(f, "field %q is %q; only text parts are supported", f, p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// finishReason is OpenAI's finish_reason for a generation: "tool_calls"
// when the model called tools, "length" when it was cut at the output cap
// or the key's remaining allowance (the gateway's "limit"), else "stop"
// (Ollama's "stop", and "stopped_early": a stream Ollama ended without its
// final chunk).
func finishReason(res gateway.GenerateResult) string {
	switch {
	case len(res.ToolCalls) > 0:
		return "tool_calls"
	case res.DoneReason == "length" || res.DoneReason == gateway.DoneLimit:
		return "length"
	}
	return "stop"
}

// oaToolCalls are the model's calls in OpenAI's shape, ids unique in the
// request.
func oaToolCalls(calls []inference.ToolCall, requestID string, delta bool) []oaToolCall {
	if len(calls) == 0 {
		return nil
	}
	out := make([]oaToolCall, len(calls))
	for i, tc := range calls {
		args, _ := json.Marshal(tc.Arguments)
		if tc.Arguments == nil {
			args = []byte("{}")
		}
		out[i] = oaToolCall{ID: fmt.Sprintf("call_%s_%d", strings.TrimPrefix(requestID, "req_"), i), Type: "function",
			Function: oaFunctionCall{Name: tc.Name, Arguments: string(args)}}
		if delta {
			out[i].Index = &i
		}
	}
	return out
}

type oaUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func toOAUsage(u inference.Usage) *oaUsage {
	return &oaUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.Total()}
}

type oaChatCompletion struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []oaChatChoice `json:"choices"`
	Usage   *oaUsage       `json:"usage"`
}

type oaChatChoice struct {
	Index        int       `json:"index"`
	Message      *oaAnswer `json:"message,omitempty"`
	Delta        *oaAnswer `json:"delta,omitempty"`
	FinishReason *string   `json:"finish_reason"`
	Logprobs     *struct{} `json:"logprobs"`
}

// oaAnswer is a choice's message, or a streamed delta of it.
type oaAnswer struct {
	Role      string       `json:"role,omitempty"`
	Content   *string      `json:"content,omitempty"`
	ToolCalls []oaToolCall `json:"tool_calls,omitempty"`
}

// openAIChat serves POST /v1/chat/completions.
func (s *server) openAIChat() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body oaChatRequest
		req, ok := s.decodeGenerate(c, decodeJSON, &body)
		if !ok {
			return
		}
		id, created := "chatcmpl-"+info(c).id, info(c).arrived.Unix()
		if body.Stream {
			s.openAIStream(c, req, body.includeUsage(), &oaChatStream{id: id, created: created})
			return
		}
		res, ok := s.generateWhole(c, req)
		if !ok {
			return
		}
		answer := &oaAnswer{Role: "assistant", Content: &res.Text, ToolCalls: oaToolCalls(res.ToolCalls, info(c).id, false)}
		if res.Text == "" && len(answer.ToolCalls) > 0 {
			answer.Content = nil
		}
		reason := finishReason(res)
		s.reply(c, oaChatCompletion{ID: id, Object: "chat.completion", Created: created, Model: res.Model,
			Choices: []oaChatChoice{{Message: answer, FinishReason: &reason}}, Usage: toOAUsage(res.Usage)})
	}
}
