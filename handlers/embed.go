package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
	"tollgate/metering"
)

type embedRequest struct {
	Model     string       `json:"model"`
	Input     stringOrList `json:"input"`
	KeepAlive any          `json:"keep_alive"`
}

type embedResponse struct {
	ID         string      `json:"id"`
	Model      string      `json:"model"`
	Embeddings [][]float32 `json:"embeddings"`
	Usage      usageJSON   `json:"usage"`
}

// embed serves POST /embed: one vector per input, in input order.
func (s *server) embed() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body embedRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		m, err := s.inf.Catalog().ModelFor(body.Model, inference.EndpointEmbed)
		if err != nil {
			s.fail(c, err)
			return
		}
		if !s.allowModel(c, &m) {
			return
		}
		if err := body.Input.check(m.Limits.MaxInputs); err != nil {
			s.fail(c, err)
			return
		}
		keep, err := inference.ParseKeepAlive(body.KeepAlive, m.Limits.MaxKeepAlive)
		if err != nil {
			s.fail(c, err)
			return
		}
		ri := info(c)
		ri.model = m.Name
		res, err := s.inf.Embed(c.Request.Context(), m, body.Input.items, keep)
		s.finish(c, metering.EndpointEmbed, m, res.Usage, err, func() {
			c.JSON(http.StatusOK, embedResponse{ID: ri.id, Model: m.Name, Embeddings: res.Embeddings, Usage: ri.usage})
		})
	}
}
