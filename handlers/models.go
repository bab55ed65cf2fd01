package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
)

type modelJSON struct {
	Name      string    `json:"name"`
	Endpoints []string  `json:"endpoints"`
	Price     priceJSON `json:"price"`
	// MaxOutput is the output cap (num_predict) after the key's plan, for
	// models that generate text: /generate and /predict.
	MaxOutput int `json:"max_output_tokens,omitzero"`
	// MaxInputs is the array length /embed and /predict accept.
	MaxInputs int `json:"max_inputs,omitzero"`
}

type priceJSON struct {
	InputPer1K  string `json:"input_per_1k"`
	OutputPer1K string `json:"output_per_1k"`
}

type taskJSON struct {
	Name   string   `json:"name"`
	Model  string   `json:"model"`
	Labels []string `json:"labels"`
}

type modelsResponse struct {
	Models []modelJSON `json:"models"`
	Tasks  []taskJSON  `json:"tasks"`
}

// models serves GET /models: the part of the public catalog the caller's key
// may use (never Ollama's internal names or addresses), with the caps the
// key's plan leaves it.
func (s *server) models() gin.HandlerFunc {
	return func(c *gin.Context) {
		models, tasks, err := s.gw.Models(info(c).key)
		if err != nil {
			s.fail(c, err)
			return
		}
		out := modelsResponse{Models: []modelJSON{}, Tasks: []taskJSON{}}
		for _, m := range models {
			eps := make([]string, len(m.Endpoints))
			for i, e := range m.Endpoints {
				eps[i] = string(e)
			}
			mj := modelJSON{Name: m.Name, Endpoints: eps,
				Price: priceJSON{InputPer1K: m.Price.InputPer1K.String(), OutputPer1K: m.Price.OutputPer1K.String()}}
			if m.Serves(inference.EndpointGenerate) || m.Serves(inference.EndpointPredict) {
				mj.MaxOutput = m.Limits.MaxNumPredict
			}
			if m.Serves(inference.EndpointEmbed) || m.Serves(inference.EndpointPredict) {
				mj.MaxInputs = m.Limits.MaxInputs
			}
			out.Models = append(out.Models, mj)
		}
		for _, t := range tasks {
			out.Tasks = append(out.Tasks, taskJSON{Name: t.Name, Model: t.Model, Labels: t.Labels})
		}
		c.JSON(http.StatusOK, out)
	}
}
