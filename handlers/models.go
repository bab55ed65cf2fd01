package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

type modelJSON struct {
	Name      string    `json:"name"`
	Endpoints []string  `json:"endpoints"`
	Price     priceJSON `json:"price"`
	MaxOutput int       `json:"max_output_tokens"`
	MaxInputs int       `json:"max_inputs"`
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
// may use (never Ollama's internal names or addresses).
func (s *server) models() gin.HandlerFunc {
	return func(c *gin.Context) {
		models, tasks := s.gw.Models(info(c).key)
		out := modelsResponse{Models: []modelJSON{}, Tasks: []taskJSON{}}
		for _, m := range models {
			eps := make([]string, len(m.Endpoints))
			for i, e := range m.Endpoints {
				eps[i] = string(e)
			}
			out.Models = append(out.Models, modelJSON{Name: m.Name, Endpoints: eps,
				Price:     priceJSON{InputPer1K: m.Price.InputPer1K.String(), OutputPer1K: m.Price.OutputPer1K.String()},
				MaxOutput: m.Limits.MaxNumPredict, MaxInputs: m.Limits.MaxInputs})
		}
		for _, t := range tasks {
			out.Tasks = append(out.Tasks, taskJSON{Name: t.Name, Model: t.Model, Labels: t.Labels})
		}
		c.JSON(http.StatusOK, out)
	}
}
