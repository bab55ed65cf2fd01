package handlers

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"

	"tollgate"
	"tollgate/inference"
)

// ollamaName is a public model name as Ollama lists it: with a tag, the
// default one (":latest") when the name has none. Calls accept both.
func ollamaName(name string) string {
	if strings.Contains(name, ":") {
		return name
	}
	return name + ":latest"
}

// ollamaModels is the part of the catalog the caller's key may use through
// /api: its models that generate text or embed, after its plan.
func (s *server) ollamaModels(c *gin.Context) ([]inference.Model, bool) {
	models, _, err := s.gw.Models(info(c).key)
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	var out []inference.Model
	for _, m := range models {
		if m.Serves(inference.EndpointGenerate) || m.Serves(inference.EndpointEmbed) {
			out = append(out, m)
		}
	}
	return out, true
}

// ollamaModel finds the model called name (or "name:latest") among the
// key's models; one it may not use is as unknown as one that does not
// exist, in Ollama's words.
func (s *server) ollamaModel(c *gin.Context, name string) (inference.Model, bool) {
	models, ok := s.ollamaModels(c)
	if !ok {
		return inference.Model{}, false
	}
	if m, err := s.gw.Catalog().Model(name); err == nil {
		for _, mm := range models {
			if mm.Name == m.Name {
				return mm, true
			}
		}
	}
	s.abort(c, tollgate.CodeModelNotFound, "model '"+name+"' not found")
	return inference.Model{}, false
}

// ollamaTags serves GET /api/tags: the key's models. Sizes, digests and
// details are Ollama's business on the GPU host and left empty.
func (s *server) ollamaTags() gin.HandlerFunc {
	return func(c *gin.Context) {
		models, ok := s.ollamaModels(c)
		if !ok {
			return
		}
		out := api.ListResponse{Models: []api.ListModelResponse{}}
		for _, m := range models {
			out.Models = append(out.Models, api.ListModelResponse{Name: ollamaName(m.Name), Model: ollamaName(m.Name)})
		}
		c.JSON(http.StatusOK, out)
	}
}

// ollamaShow serves POST /api/show: what the key may do with a model.
func (s *server) ollamaShow() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body struct {
			Model string `json:"model"`
			Name  string `json:"name"` // older clients' field for the model
		}
		if err := decodeOllama(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		name := body.Model
		if name == "" {
			name = body.Name
		}
		if name == "" {
			s.fail(c, badRequest("field \"model\" is required"))
			return
		}
		m, ok := s.ollamaModel(c, name)
		if !ok {
			return
		}
		var caps []model.Capability
		if m.Serves(inference.EndpointGenerate) {
			caps = append(caps, model.CapabilityCompletion)
		}
		if m.Serves(inference.EndpointEmbed) {
			caps = append(caps, model.CapabilityEmbedding)
		}
		c.JSON(http.StatusOK, api.ShowResponse{Details: api.ModelDetails{}, ModelInfo: map[string]any{}, Capabilities: caps})
	}
}

// ollamaPS serves GET /api/ps. Which models Ollama has loaded is the GPU
// host's state, shared by every key: the honest answer for one key is none.
func (s *server) ollamaPS() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.JSON(http.StatusOK, api.ProcessResponse{Models: []api.ProcessModelResponse{}})
	}
}

// ollamaVersionRoute serves GET /api/version: the Ollama version fronted.
func (s *server) ollamaVersionRoute() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"version": ollamaVersion})
	}
}

// ollamaManagement refuses Ollama's model management routes: the models on
// the GPU host are the operator's, and nothing is ever forwarded.
func (s *server) ollamaManagement() gin.HandlerFunc {
	return func(c *gin.Context) {
		s.abort(c, tollgate.CodeInsufficientScope, "model management ("+c.Request.Method+" "+c.FullPath()+
			") is not available through this server: the operator manages the models; GET /api/tags lists the ones this key may use")
	}
}

// ollamaRunning is what Ollama answers at / : clients probe it (the Go
// client's Heartbeat sends HEAD /).
const ollamaRunning = "Ollama is running"

// looksLikeOllamaClient reports whether a request comes from one of
// Ollama's clients (User-Agent "ollama/...", "ollama-python/...",
// "ollama-js/..."), which expect GET / to answer as Ollama does.
func looksLikeOllamaClient(c *gin.Context) bool {
	return strings.HasPrefix(strings.ToLower(c.GetHeader("User-Agent")), "ollama")
}

// headRoot serves HEAD /: 200, as Ollama answers a liveness probe.
func (s *server) headRoot() gin.HandlerFunc {
	return func(c *gin.Context) { c.String(http.StatusOK, ollamaRunning) }
}

// ollamaManagementRoutes are Ollama's model management routes (method,
// path under /api), all refused.
var ollamaManagementRoutes = [][2]string{
	{"POST", "/pull"}, {"POST", "/push"}, {"POST", "/create"}, {"POST", "/copy"},
	{"DELETE", "/delete"}, {"HEAD", "/blobs/:digest"}, {"POST", "/blobs/:digest"},
}
