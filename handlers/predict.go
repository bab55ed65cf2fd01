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
		if s.respondAsync(c, "predict") {
			return
		}
		var body predictRequest
		if err := decodeNative(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.gw.Predict(c.Request.Context(), caller(c), body.toGateway())
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		s.reply(c, predictBody(info(c).id, body, res))
	}
}

// predictBody is POST /predict's answer (and a predict job's result).
func predictBody(id string, body predictRequest, res gateway.PredictResult) any {
	usage := toUsage(res.Usage)
	if !body.Input.List {
		return predictOne{ID: id, Label: res.Predictions[0].Label, Model: res.Model, Task: body.Task, Usage: usage}
	}
	out := predictMany{ID: id, Predictions: make([]prediction, len(res.Predictions)), Model: res.Model, Task: body.Task, Usage: usage}
	for i, p := range res.Predictions {
		out.Predictions[i] = prediction{Label: p.Label}
	}
	return out
}

// toGateway is the gateway's request for body.
func (r predictRequest) toGateway() gateway.PredictRequest {
	return gateway.PredictRequest{Task: r.Task, Labels: r.Labels,
		Model: r.Model, Input: gateway.Inputs(r.Input), Options: r.Options, KeepAlive: keepAliveValue(r.KeepAlive)}
}
