package handlers

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate"
)

type rootResponse struct {
	Service string `json:"service"`
	Docs    string `json:"docs"`
	OpenAPI string `json:"openapi"`
}

// root serves GET /: where the API reference is, for someone who opened the
// server's address in a browser or with curl. Ollama's clients (by their
// User-Agent) get Ollama's own answer, which some of them probe for.
func (s *server) root() gin.HandlerFunc {
	return func(c *gin.Context) {
		if looksLikeOllamaClient(c) {
			c.String(http.StatusOK, ollamaRunning)
			return
		}
		c.JSON(http.StatusOK, rootResponse{Service: "tollgate", Docs: "/docs", OpenAPI: "/openapi.json"})
	}
}

// trailingSlash answers a path that is a route but for a trailing slash
// ("/models/") with a 404 in the envelope that names the route. Gin's own
// answer would be a redirect (301 with an HTML body for GET, 307 for the
// rest), which webhook tools and SDKs handle badly and which would give one
// operation several URLs; NewServer turns those redirects off. Other
// unknown paths go on to notFound.
func (s *server) trailingSlash(routes func() gin.RoutesInfo) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := c.Request.URL.Path
		trimmed := strings.TrimRight(p, "/")
		if len(trimmed) == len(p) || trimmed == "" {
			c.Next()
			return
		}
		for _, r := range routes() {
			if matchRoute(r.Path, trimmed) {
				s.abort(c, tollgate.CodeNotFound, "no route "+c.Request.Method+" "+redactPath(p)+
					": Tollgate's paths have no trailing slash; use "+redactPath(trimmed))
				return
			}
		}
		c.Next()
	}
}

// matchRoute reports whether path is an instance of the Gin route pattern
// (":name" matches one non-empty segment; Tollgate has no "*" routes).
func matchRoute(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if strings.HasPrefix(ps[i], ":") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}
