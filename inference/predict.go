package inference

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// PredictRequest classifies each input into exactly one of Labels.
type PredictRequest struct {
	Labels      []string
	Instruction string // optional task description
	Inputs      []string
	Options     map[string]any // checked with CheckOptions
	KeepAlive   *time.Duration
}

// Prediction is the label chosen for one input.
type Prediction struct {
	Label string
}

// PredictResult holds one prediction per input, in input order.
type PredictResult struct {
	Predictions []Prediction
	Usage       Usage
}

// Predict asks model m to label each input. The answer is constrained by a
// JSON schema whose label is an enum of req.Labels, so Ollama can only emit
// one of them; temperature defaults to 0 so the same input gets the same
// label. Inputs run one after another (Ollama queues concurrent calls
// anyway) and usage is their sum, also when a later input fails.
//
// Errors as for Generate, and *UpstreamError when the model's answer cannot
// be read as one of the labels (e.g. it ran out of tokens).
func (c *Client) Predict(ctx context.Context, m Model, req PredictRequest) (PredictResult, error) {
	if err := CheckLabels(req.Labels); err != nil {
		return PredictResult{}, err
	}
	if len(req.Inputs) == 0 {
		return PredictResult{}, &InvalidError{Field: "input", Reason: "must not be empty"}
	}
	schema := labelSchema(req.Labels)
	opts := map[string]any{"temperature": 0.0}
	for k, v := range req.Options {
		opts[k] = v
	}
	opts["num_predict"] = predictOutput(m, req)
	system := predictInstruction(req)
	var out PredictResult
	for _, input := range req.Inputs {
		res, err := c.Generate(ctx, m, GenerateRequest{
			System:    system,
			Messages:  []Message{{Role: "user", Content: input}},
			Options:   opts,
			Format:    schema,
			KeepAlive: req.KeepAlive,
		}, nil)
		if res.Done {
			out.Usage = out.Usage.Add(res.Usage)
		} else { // cut short: count the pieces Ollama produced
			out.Usage = out.Usage.Add(Usage{CompletionTokens: res.Chunks})
		}
		if err != nil {
			return out, err
		}
		label, err := readLabel(res.Text, req.Labels)
		if err != nil {
			return out, err
		}
		out.Predictions = append(out.Predictions, Prediction{Label: label})
	}
	return out, nil
}

// PredictBudget bounds what Predict may use for req on model m: the prompt
// tokens (the model's PromptBound for the instruction and each input as two
// chat messages, per input) and the output tokens (num_predict per input).
func PredictBudget(m Model, req PredictRequest) (prompt, output int64) {
	system := len(predictInstruction(req))
	per := int64(predictOutput(m, req))
	for _, in := range req.Inputs {
		prompt += m.Limits.PromptBound(system+len(in), 2)
		output += per
	}
	return prompt, output
}

// predictOutput is the num_predict of each input: the request's, or enough
// for the longest label in its JSON answer, within the model's cap.
func predictOutput(m Model, req PredictRequest) int {
	n, ok := req.Options["num_predict"].(int)
	if !ok || n <= 0 {
		n = 32 + 2*longest(req.Labels)
	}
	return min(n, m.Limits.MaxNumPredict)
}

func labelSchema(labels []string) json.RawMessage {
	schema, _ := json.Marshal(map[string]any{
		"type":       "object",
		"properties": map[string]any{"label": map[string]any{"type": "string", "enum": labels}},
		"required":   []string{"label"},
	})
	return schema
}

func predictInstruction(req PredictRequest) string {
	var sb strings.Builder
	if req.Instruction != "" {
		sb.WriteString(strings.TrimSpace(req.Instruction))
		sb.WriteString("\n")
	}
	sb.WriteString("Classify the user's text. Answer with JSON {\"label\": ...} where label is exactly one of: ")
	sb.WriteString(strings.Join(req.Labels, ", "))
	sb.WriteString(".")
	return sb.String()
}

func readLabel(text string, labels []string) (string, error) {
	var v struct {
		Label string `json:"label"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(text)), &v); err != nil {
		return "", &UpstreamError{Message: "the model's answer was not the JSON that was asked for (raise max_num_predict or check the model)"}
	}
	for _, l := range labels {
		if v.Label == l {
			return l, nil
		}
	}
	return "", &UpstreamError{Message: "the model answered with a label that is not one of the allowed ones"}
}

func longest(labels []string) int {
	n := 0
	for _, l := range labels {
		n = max(n, len(l))
	}
	return n
}
