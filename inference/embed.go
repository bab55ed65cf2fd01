package inference

import (
	"context"
	"time"

	"github.com/ollama/ollama/api"
)

// EmbedResult holds one vector per input, in input order.
type EmbedResult struct {
	Embeddings [][]float32
	Usage      Usage // PromptTokens as Ollama counted them
}

// Embed embeds inputs with model m. inputs must be non-empty (an empty list
// is an *InvalidError: Ollama would answer it with no vectors).
// Errors as for Generate.
func (c *Client) Embed(ctx context.Context, m Model, inputs []string, keepAlive *time.Duration) (EmbedResult, error) {
	if len(inputs) == 0 {
		return EmbedResult{}, &InvalidError{Field: "input", Reason: "must not be empty"}
	}
	var out EmbedResult
	err := c.run(ctx, m, func(b *backend) (bool, error) {
		var err error
		out, err = b.embed(ctx, m, inputs, keepAlive)
		return false, err
	})
	return out, err
}

// embed is Embed on backend b.
func (b *backend) embed(ctx context.Context, m Model, inputs []string, keepAlive *time.Duration) (EmbedResult, error) {
	var keep *api.Duration
	if keepAlive != nil {
		keep = &api.Duration{Duration: *keepAlive}
	}
	var status int
	in := any(inputs)
	if len(inputs) == 1 {
		in = inputs[0]
	}
	resp, err := b.api.Embed(withStatus(ctx, &status), &api.EmbedRequest{Model: m.Ollama, Input: in, KeepAlive: keep, Options: m.Options})
	if err != nil {
		return EmbedResult{}, b.classify(ctx, err, status, m.Ollama)
	}
	if len(resp.Embeddings) != len(inputs) {
		return EmbedResult{}, &UpstreamError{Message: "Ollama returned a different number of embeddings than inputs"}
	}
	return EmbedResult{Embeddings: resp.Embeddings, Usage: Usage{PromptTokens: resp.PromptEvalCount}}, nil
}
