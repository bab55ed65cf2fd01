package gateway

import (
	"context"
	"encoding/json"
	"strings"

	"tollgate"
	"tollgate/inference"
)

// GenerateRequest is a completion (Prompt) or a chat (Messages), in the
// terms of the native API; surfaces translate their own shapes into it.
type GenerateRequest struct {
	Model     string // public name; "" picks the first model serving generate
	Prompt    *string
	System    string
	Messages  []inference.Message
	Tools     []inference.Tool // functions the model may call; needs Messages
	Options   map[string]any   // Ollama options a request may set (inference.CheckOptions)
	Format    json.RawMessage  // "json" or a JSON schema
	KeepAlive any              // "5m", seconds as a number, or nil
}

// GenerateResult is a finished generation. DoneReason is Ollama's ("stop",
// "length"), or "limit" when the output was cut at what remained of the
// key's token quota or tokens per minute, or "stopped_early" when Ollama
// ended its stream without its final chunk.
type GenerateResult struct {
	Result
	Text       string // empty when the pieces went to onPiece
	DoneReason string
	ToolCalls  []inference.ToolCall // the calls the model made, when the request had tools
}

// DoneLimit is the done reason of an answer cut at the key's remaining
// token allowance.
const DoneLimit = "limit"

// Generate runs req for caller. With onPiece nil the text is collected
// into the result; otherwise each piece goes to onPiece as Ollama produces
// it (a stream), and an error from onPiece means the client is gone: the
// call stops and is billed the pieces delivered (status 499).
//
// The result is valid also when err is not nil once the model is known
// (Result.Model, Status). Errors: a *tollgate.Error (scope, model, limits,
// overloaded, metering_unavailable), an *inference.InvalidError or other
// inference error, or ctx's error.
func (g *Gateway) Generate(ctx context.Context, c Caller, req GenerateRequest, onPiece func(string) error) (GenerateResult, error) {
	m, err := g.model(c, tollgate.Generate, req.Model)
	if err != nil {
		return GenerateResult{}, err
	}
	ir, err := req.check(m)
	if err != nil {
		return GenerateResult{Result: Result{Model: m.Name}}, err
	}
	prompt := generatePrompt(m, ir)
	cl, err := g.admit(ctx, c, tollgate.Generate, m, budget{prompt: prompt, output: outputCap(m, ir.Options), minOutput: 1})
	if err != nil {
		return GenerateResult{Result: Result{Model: m.Name}}, err
	}
	defer cl.releaseOnPanic(ctx)
	ir.Options = withNumPredict(ir.Options, cl.lease.Output())
	delivered := 0
	var cb func(string) error
	if onPiece != nil {
		cb = func(text string) error {
			if err := onPiece(text); err != nil {
				return clientGone{err}
			}
			delivered++
			return nil
		}
	}
	res, callErr := g.inf.Generate(cl.on(ctx), m, ir, cb)
	status, billed := 200, res.Usage
	switch {
	case callErr != nil && onPiece != nil && delivered > 0:
		// A stream cut after it began: the client has what it received.
		status, billed = statusOf(callErr), inference.Usage{CompletionTokens: delivered}
		if ctx.Err() != nil {
			status = tollgate.StatusClientClosed
		}
	case callErr != nil:
		status, billed = statusOf(callErr), inference.Usage{}
	case !res.Done:
		billed = inference.Usage{CompletionTokens: res.Chunks} // stopped early: no counts from Ollama
	}
	g.checkBound(m, prompt, res.Usage.PromptTokens)
	out := GenerateResult{Text: res.Text, DoneReason: res.DoneReason, ToolCalls: res.ToolCalls}
	if res.DoneReason == "length" && cl.lease.Lowered() {
		out.DoneReason = DoneLimit
	}
	out.Result, err = cl.finish(ctx, status, billed, callErr)
	out.FirstToken = res.FirstToken
	if err != nil {
		out.Text, out.DoneReason, out.ToolCalls = "", "", nil // not delivered, not billed: nobody gets it
	}
	return out, err
}

// check validates req for model m and turns it into an inference request.
func (r GenerateRequest) check(m inference.Model) (inference.GenerateRequest, error) {
	var out inference.GenerateRequest
	switch {
	case r.Prompt != nil && r.Messages != nil:
		return out, badRequest("send either \"prompt\" or \"messages\", not both")
	case r.Prompt == nil && r.Messages == nil:
		return out, badRequest("field \"prompt\" (a string) or \"messages\" (an array of {role, content}) is required")
	case r.Prompt != nil && strings.TrimSpace(*r.Prompt) == "":
		return out, badRequest("field \"prompt\" must not be empty")
	case r.Tools != nil && r.Messages == nil:
		return out, badRequest("field \"tools\" needs \"messages\" (a chat), not \"prompt\"")
	}
	if err := checkTools(r.Tools); err != nil {
		return out, err
	}
	if err := checkMessages(r.Messages); err != nil {
		return out, err
	}
	if err := inference.CheckFormat(r.Format); err != nil {
		return out, err
	}
	opts, err := inference.CheckOptions(r.Options)
	if err != nil {
		return out, err
	}
	keep, err := inference.ParseKeepAlive(r.KeepAlive, m.Limits.MaxKeepAlive)
	if err != nil {
		return out, err
	}
	out = inference.GenerateRequest{System: r.System, Messages: r.Messages, Tools: r.Tools, Options: opts, Format: r.Format, KeepAlive: keep}
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
		case "system", "user", "assistant", "tool":
		default:
			return badRequest("field \"messages[%d].role\" must be system, user, assistant or tool", i)
		}
	}
	return nil
}

// maxTools bounds the tools one request may declare.
const maxTools = 128

func checkTools(tools []inference.Tool) error {
	if len(tools) > maxTools {
		return badRequest("field \"tools\" has %d tools; at most %d", len(tools), maxTools)
	}
	for i, t := range tools {
		if strings.TrimSpace(t.Name) == "" {
			return badRequest("field \"tools[%d].function.name\" is required", i)
		}
	}
	return nil
}

func badRequest(format string, args ...any) error {
	return tollgate.Errorf(tollgate.CodeInvalidRequest, format, args...)
}

// generatePrompt bounds the tokens req's prompt can take: the model's
// tokens per byte of text, plus its template overhead and a few per chat
// message (inference.ModelLimits.PromptBound).
func generatePrompt(m inference.Model, req inference.GenerateRequest) int64 {
	n := len(req.Prompt) + len(req.System)
	for _, msg := range req.Messages {
		n += len(msg.Content)
		for _, tc := range msg.ToolCalls {
			args, _ := json.Marshal(tc.Arguments)
			n += len(tc.Name) + len(args) + perTool
		}
	}
	for _, t := range req.Tools { // the template writes the tools into the prompt
		n += len(t.Name) + len(t.Description) + len(t.Parameters) + perTool
	}
	return m.Limits.PromptBound(n, len(req.Messages))
}

// outputCap is the most output tokens a request may generate: its
// num_predict if that is positive and within the model's cap, else the cap.
func outputCap(m inference.Model, opts map[string]any) int64 {
	limit := m.Limits.MaxNumPredict
	if n, ok := opts["num_predict"].(int); ok && n > 0 && n < limit {
		return int64(n)
	}
	return int64(limit)
}

// perTool bounds the template text around each declared tool.
const perTool = 32

// withNumPredict returns opts with num_predict set to n (a copy: opts may
// be shared with the caller).
func withNumPredict(opts map[string]any, n int64) map[string]any {
	out := make(map[string]any, len(opts)+1)
	for k, v := range opts {
		out[k] = v
	}
	out["num_predict"] = int(n)
	return out
}
