package gateway

import (
	"context"

	"tollgate"
	"tollgate/inference"
)

// PredictRequest classifies each input with a task from the catalog or
// with ad-hoc labels.
type PredictRequest struct {
	Task      string
	Labels    []string
	Model     string // "" : the task's model, or the first model serving predict
	Input     Inputs
	Options   map[string]any
	KeepAlive any
}

// PredictResult holds one prediction per input, in input order.
type PredictResult struct {
	Result
	Predictions []inference.Prediction
}

// Predict labels req's inputs for caller; it is billed Ollama's counts
// when every input was labelled and nothing otherwise. The output of a
// prediction cannot be cut short, so near the end of a token allowance it
// is refused rather than lowered. Errors as for Generate, plus
// task_not_found.
func (g *Gateway) Predict(ctx context.Context, c Caller, req PredictRequest) (PredictResult, error) {
	if err := scope(c, tollgate.Predict); err != nil {
		return PredictResult{}, err
	}
	m, ir, err := req.resolve(g.inf.Catalog())
	if err != nil {
		return PredictResult{}, err
	}
	if m, err = g.allow(c, m); err != nil {
		return PredictResult{}, err
	}
	failed := PredictResult{Result: Result{Model: m.Name}}
	if err := req.Input.check(m.Limits.MaxInputs); err != nil {
		return failed, err
	}
	ir.Inputs = req.Input.Items
	prompt, output := inference.PredictBudget(m, ir)
	cl, err := g.admit(ctx, c, tollgate.Predict, m, budget{prompt: prompt, output: output, minOutput: output})
	if err != nil {
		return failed, err
	}
	defer cl.releaseOnPanic(ctx)
	res, callErr := g.inf.Predict(cl.on(ctx), m, ir)
	out := PredictResult{Predictions: res.Predictions}
	out.Result, err = cl.finishWhole(ctx, prompt, res.Usage, callErr)
	if err != nil {
		out.Predictions = nil // not delivered, not billed
	}
	return out, err
}

// resolve picks the model and labels from a task or from ad-hoc labels and
// validates the labels, options and keep_alive.
func (r PredictRequest) resolve(cat *inference.Catalog) (inference.Model, inference.PredictRequest, error) {
	var req inference.PredictRequest
	switch {
	case r.Task != "" && r.Labels != nil:
		return inference.Model{}, req, badRequest("send either \"task\" or \"labels\", not both")
	case r.Task == "" && r.Labels == nil:
		return inference.Model{}, req, badRequest("field \"task\" (a task from the catalog) or \"labels\" (an array of strings) is required")
	}
	model := r.Model
	req.Labels = r.Labels
	if r.Task != "" {
		t, err := cat.Task(r.Task)
		if err != nil {
			return inference.Model{}, req, err
		}
		if model == "" {
			model = t.Model
		}
		req.Labels, req.Instruction = t.Labels, t.Instruction
	}
	m, err := cat.ModelFor(model, inference.EndpointPredict)
	if err != nil {
		return m, req, err
	}
	if err := inference.CheckLabels(req.Labels); err != nil {
		return m, req, err
	}
	if req.Options, err = inference.CheckOptions(r.Options); err != nil {
		return m, req, err
	}
	if req.KeepAlive, err = inference.ParseKeepAlive(r.KeepAlive, m.Limits.MaxKeepAlive); err != nil {
		return m, req, err
	}
	return m, req, nil
}
