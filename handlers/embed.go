package handlers

import (
	"github.com/gin-gonic/gin"

	"tollgate/gateway"
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
		if err := decodeNative(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.gw.Embed(c.Request.Context(), caller(c), gateway.EmbedRequest{
			Model: body.Model, Input: gateway.Inputs(body.Input), KeepAlive: keepAliveValue(body.KeepAlive)})
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		s.reply(c, embedResponse{ID: info(c).id, Model: res.Model, Embeddings: res.Embeddings, Usage: toUsage(res.Usage)})
	}
}
