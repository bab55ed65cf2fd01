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
		if s.respondAsync(c, "embed") {
			return
		}
		var body embedRequest
		if err := decodeNative(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.gw.Embed(c.Request.Context(), caller(c), body.toGateway())
		s.noteCall(c, res.Result, err)
		if err != nil {
			s.failCall(c, err)
			return
		}
		s.reply(c, embedResponse{ID: info(c).id, Model: res.Model, Embeddings: res.Embeddings, Usage: toUsage(res.Usage)})
	}
}

// toGateway is the gateway's request for body.
func (r embedRequest) toGateway() gateway.EmbedRequest {
	return gateway.EmbedRequest{Model: r.Model, Input: gateway.Inputs(r.Input), KeepAlive: keepAliveValue(r.KeepAlive)}
}
