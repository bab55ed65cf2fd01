package inference

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

// Message is one turn of a chat. An assistant turn may carry the tool calls
// the model made; a "tool" turn carries a tool's result (Content) for the
// tool named ToolName.
type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	ToolName  string     `json:"tool_name,omitempty"`
}

// ToolCall is a call the model asks the client to make: a function name and
// its arguments.
type ToolCall struct {
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

// Tool is a function the model may call: a name, a description and its
// parameters as a JSON schema object.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage
}

// GenerateRequest is a completion (Prompt) or a chat (Messages). Options must
// have passed CheckOptions. Tools need a chat.
type GenerateRequest struct {
	Prompt    string
	System    string
	Messages  []Message
	Tools     []Tool
	Options   map[string]any
	Format    json.RawMessage
	KeepAlive *time.Duration
}

// Result is the outcome of a generation. After an error it still holds what
// was produced so far (Chunks counts streamed pieces), for metering.
type Result struct {
	Text       string
	ToolCalls  []ToolCall // the tool calls the model made (chat with tools)
	DoneReason string
	Usage      Usage
	Chunks     int
	Done       bool          // Ollama sent its final chunk with exact counts
	FirstToken time.Duration // from calling Ollama to its first piece of text; 0 if none came
}

// Generate runs req on model m. When onText is nil the text is collected into
// Result.Text; otherwise each piece is handed to onText as it arrives and an
// error from onText stops the generation and is returned as is. A stream
// Ollama ends cleanly after some text but without its final chunk is not an
// error: Done is false and DoneReason is DoneStoppedEarly.
//
// Errors: ctx's error when it ends first; *InvalidError; *UnreachableError,
// *TimeoutError, *ModelMissingError, ErrBusy or *UpstreamError from Ollama
// (including a stream cut before its final chunk).
func (c *Client) Generate(ctx context.Context, m Model, req GenerateRequest, onText func(string) error) (Result, error) {
	if err := CheckFormat(req.Format); err != nil {
		return Result{}, err
	}
	var res Result
	err := c.run(ctx, m, func(b *backend) (bool, error) {
		var err error
		res, err = c.generateOn(ctx, b, m, req, onText)
		return res.Chunks > 0, err
	})
	return res, err
}

// generateOn is Generate on backend b.
func (c *Client) generateOn(ctx context.Context, b *backend, m Model, req GenerateRequest, onText func(string) error) (Result, error) {
	opts := effectiveOptions(m, req.Options)
	var (
		res    Result
		sb     strings.Builder
		status int
	)
	start := time.Now()
	piece := func(text string, l *streamLine) error {
		if text != "" {
			if res.Chunks == 0 {
				res.FirstToken = time.Since(start)
			}
			res.Chunks++
			if onText == nil {
				sb.WriteString(text)
			} else if err := onText(text); err != nil {
				return callbackError{err}
			}
		}
		if l.Done {
			res.Done = true
			res.DoneReason = l.DoneReason
			res.Usage = Usage{PromptTokens: l.PromptEvalCount, CompletionTokens: l.EvalCount}
		}
		return nil
	}
	var keep *api.Duration
	if req.KeepAlive != nil {
		keep = &api.Duration{Duration: *req.KeepAlive}
	}
	cctx := withStatus(ctx, &status)
	var err error
	if req.Messages != nil {
		msgs := make([]api.Message, 0, len(req.Messages)+1)
		if req.System != "" {
			msgs = append(msgs, api.Message{Role: "system", Content: req.System})
		}
		for _, mm := range req.Messages {
			msgs = append(msgs, toAPIMessage(mm))
		}
		tools, terr := toAPITools(req.Tools)
		if terr != nil {
			return Result{}, terr
		}
		err = b.chat(cctx, &api.ChatRequest{Model: m.Ollama, Messages: msgs, Tools: tools, Format: req.Format, Options: opts, KeepAlive: keep},
			func(l *streamLine) error {
				for _, tc := range l.Message.ToolCalls {
					res.ToolCalls = append(res.ToolCalls, ToolCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments})
				}
				return piece(l.Message.Content, l)
			})
	} else {
		err = b.generate(cctx, &api.GenerateRequest{Model: m.Ollama, Prompt: req.Prompt, System: req.System, Format: req.Format, Options: opts, KeepAlive: keep},
			func(l *streamLine) error { return piece(l.Response, l) })
	}
	res.Text = sb.String()
	if err != nil {
		return res, b.classify(ctx, err, status, m.Ollama)
	}
	if !res.Done {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if res.Chunks == 0 {
			return res, errStreamCut(b)
		}
		// Ollama ended its stream cleanly after some text but without its
		// final chunk (v0.10.1 does this when a model repeats itself at
		// temperature 0): the text is an answer, cut short.
		res.DoneReason = DoneStoppedEarly
	}
	return res, nil
}

// toAPIMessage is m in Ollama's terms.
func toAPIMessage(m Message) api.Message {
	out := api.Message{Role: m.Role, Content: m.Content, ToolName: m.ToolName}
	for _, tc := range m.ToolCalls {
		out.ToolCalls = append(out.ToolCalls, api.ToolCall{Function: api.ToolCallFunction{Name: tc.Name, Arguments: tc.Arguments}})
	}
	return out
}

// toAPITools turns tools into Ollama's; a parameters schema it cannot read
// is an *InvalidError naming the tool.
func toAPITools(tools []Tool) (api.Tools, error) {
	out := make(api.Tools, 0, len(tools))
	for i, t := range tools {
		raw, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]any{
			"name": t.Name, "description": t.Description, "parameters": json.RawMessage(orEmptyObject(t.Parameters))}})
		var at api.Tool
		if err := json.Unmarshal(raw, &at); err != nil {
			return nil, &InvalidError{Field: fmt.Sprintf("tools[%d].function.parameters", i), Reason: "must be a JSON schema object with \"type\", \"properties\" and \"required\""}
		}
		out = append(out, at)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func orEmptyObject(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage(`{"type":"object","properties":{}}`)
	}
	return raw
}

// DoneStoppedEarly is the done reason of a generation whose stream Ollama
// ended after some text but without its final chunk, so without counts.
const DoneStoppedEarly = "stopped_early"
