package gateway

import (
	"context"
	"strings"

	"tollgate"
	"tollgate/inference"
)

// Inputs are the texts of an /embed or /predict request. List says whether
// the client sent an array (error messages then name the item, and a
// prediction answers with a list).
type Inputs struct {
	Items []string
	List  bool
}

// check requires at least one input, each non-empty, and at most max.
func (in Inputs) check(max int) error {
	if len(in.Items) == 0 {
		return badRequest("field \"input\" is required: a string or a non-empty array of strings")
	}
	if len(in.Items) > max {
		return badRequest("field \"input\" has %d items; the limit for this model is %d", len(in.Items), max)
	}
	for i, s := range in.Items {
		if strings.TrimSpace(s) == "" {
			if in.List {
				return badRequest("field \"input[%d]\" must not be empty", i)
			}
			return badRequest("field \"input\" must not be empty")
		}
	}
	return nil
}

// bytes is the total length of the inputs.
func (in Inputs) bytes() int {
	n := 0
	for _, s := range in.Items {
		n += len(s)
	}
	return n
}

// EmbedRequest asks for one vector per input.
type EmbedRequest struct {
	Model     string // public name; "" picks the first model serving embed
	Input     Inputs
	KeepAlive any
}

// EmbedResult holds one vector per input, in input order.
type EmbedResult struct {
	Result
	Embeddings [][]float32
}

// perInput bounds the special tokens an embedding model adds to each input.
const perInput = 8

// Embed embeds req's inputs for caller; it is billed Ollama's input token
// count when it succeeds and nothing otherwise. Errors as for Generate.
func (g *Gateway) Embed(ctx context.Context, c Caller, req EmbedRequest) (EmbedResult, error) {
	m, err := g.model(c, tollgate.Embed, req.Model)
	if err != nil {
		return EmbedResult{}, err
	}
	failed := EmbedResult{Result: Result{Model: m.Name}}
	if err := req.Input.check(m.Limits.MaxInputs); err != nil {
		return failed, err
	}
	keep, err := inference.ParseKeepAlive(req.KeepAlive, m.Limits.MaxKeepAlive)
	if err != nil {
		return failed, err
	}
	prompt := int64(req.Input.bytes()*max(1, m.Limits.PromptTokensPerByte) + perInput*len(req.Input.Items))
	cl, err := g.admit(ctx, c, tollgate.Embed, m, budget{prompt: prompt})
	if err != nil {
		return failed, err
	}
	defer cl.releaseOnPanic(ctx)
	res, callErr := g.inf.Embed(cl.on(ctx), m, req.Input.Items, keep)
	out := EmbedResult{Embeddings: res.Embeddings}
	out.Result, err = cl.finishWhole(ctx, prompt, res.Usage, callErr)
	if err != nil {
		out.Embeddings = nil // not delivered, not billed
	}
	return out, err
}
