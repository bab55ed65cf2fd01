package handlers

import (
	"net/http"
	"sort"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
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
		cat := s.inf.Catalog()
		out := modelsResponse{Models: []modelJSON{}, Tasks: []taskJSON{}}
		key := info(c).key
		for _, m := range cat.ModelList() {
			if !key.AllowsModel(m.Name) {
				continue
			}
			eps := make([]string, len(m.Endpoints))
			for i, e := range m.Endpoints {
				eps[i] = string(e)
			}
			out.Models = append(out.Models, modelJSON{Name: m.Name, Endpoints: eps,
				Price:     priceJSON{InputPer1K: inference.FormatMicros(m.Price.InputPer1K), OutputPer1K: inference.FormatMicros(m.Price.OutputPer1K)},
				MaxOutput: m.Limits.MaxNumPredict, MaxInputs: m.Limits.MaxInputs})
		}
		for _, t := range cat.Tasks {
			if !key.AllowsModel(t.Model) {
				continue
			}
			out.Tasks = append(out.Tasks, taskJSON{Name: t.Name, Model: t.Model, Labels: t.Labels})
		}
		sort.Slice(out.Tasks, func(i, j int) bool { return out.Tasks[i].Name < out.Tasks[j].Name })
		c.JSON(http.StatusOK, out)
	}
}
