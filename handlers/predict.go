package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
	"tollgate/metering"
)

type predictRequest struct {
	Task      string         `json:"task"`
	Labels    []string       `json:"labels"`
	Model     string         `json:"model"`
	Input     stringOrList   `json:"input"`
	Options   map[string]any `json:"options"`
	KeepAlive any            `json:"keep_alive"`
}

// predictOne is the flat answer for a single input (Zapier/Make map fields
// from the top level).
type predictOne struct {
	ID    string    `json:"id"`
	Label string    `json:"label"`
	Model string    `json:"model"`
	Task  string    `json:"task,omitempty"`
	Usage usageJSON `json:"usage"`
}

type predictMany struct {
	ID          string       `json:"id"`
	Predictions []prediction `json:"predictions"`
	Model       string       `json:"model"`
	Task        string       `json:"task,omitempty"`
	Usage       usageJSON    `json:"usage"`
}

type prediction struct {
	Label string `json:"label"`
}

// resolve picks the model and labels from a task or from ad-hoc labels.
func (r *predictRequest) resolve(cat *inference.Catalog) (inference.Model, inference.PredictRequest, error) {
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
	if err := r.Input.check(m.Limits.MaxInputs); err != nil {
		return m, req, err
	}
	if req.Options, err = inference.CheckOptions(r.Options); err != nil {
		return m, req, err
	}
	if req.KeepAlive, err = inference.ParseKeepAlive(r.KeepAlive, m.Limits.MaxKeepAlive); err != nil {
		return m, req, err
	}
	req.Inputs = r.Input.items
	return m, req, nil
}

// predict serves POST /predict: a label per input, constrained to the
// allowed labels by a JSON schema.
func (s *server) predict() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body predictRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		m, req, err := body.resolve(s.inf.Catalog())
		if err != nil {
			s.fail(c, err)
			return
		}
		if !s.allowModel(c, &m) {
			return
		}
		ri := info(c)
		ri.model = m.Name
		res, err := s.inf.Predict(c.Request.Context(), m, req)
		s.finish(c, metering.EndpointPredict, m, res.Usage, err, func() { s.writePredictions(c, body, m, res) })
	}
}

// writePredictions writes the flat answer for a string input, the list for
// an array.
func (s *server) writePredictions(c *gin.Context, body predictRequest, m inference.Model, res inference.PredictResult) {
	ri := info(c)
	if !body.Input.isList {
		c.JSON(http.StatusOK, predictOne{ID: ri.id, Label: res.Predictions[0].Label, Model: m.Name, Task: body.Task, Usage: ri.usage})
		return
	}
	out := predictMany{ID: ri.id, Predictions: make([]prediction, len(res.Predictions)), Model: m.Name, Task: body.Task, Usage: ri.usage}
	for i, p := range res.Predictions {
		out.Predictions[i] = prediction{Label: p.Label}
	}
	c.JSON(http.StatusOK, out)
}
