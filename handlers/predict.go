package handlers

import (
	"github.com/gin-gonic/gin"

	"tollgate/gateway"
)

type predictRequest struct {
	Task      string       `json:"task"`
	Labels    flexList     `json:"labels"`
	Model     string       `json:"model"`
	Input     stringOrList `json:"input"`
	Options   flexOptions  `json:"options"`
	KeepAlive any          `json:"keep_alive"`
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

// predict serves POST /predict: a label per input, constrained to the
// allowed labels by a JSON schema.
func (s *server) predict() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body predictRequest
		if err := decodeNative(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.gw.Predict(c.Request.Context(), caller(c), gateway.PredictRequest{Task: body.Task, Labels: body.Labels,
			Model: body.Model, Input: gateway.Inputs(body.Input), Options: body.Options, KeepAlive: keepAliveValue(body.KeepAlive)})
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		id, usage := info(c).id, toUsage(res.Usage)
		if !body.Input.List {
			s.reply(c, predictOne{ID: id, Label: res.Predictions[0].Label, Model: res.Model, Task: body.Task, Usage: usage})
			return
		}
		out := predictMany{ID: id, Predictions: make([]prediction, len(res.Predictions)), Model: res.Model, Task: body.Task, Usage: usage}
		for i, p := range res.Predictions {
			out.Predictions[i] = prediction{Label: p.Label}
		}
		s.reply(c, out)
	}
}
