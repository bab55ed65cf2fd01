package handlers

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPIDoc is the API's OpenAPI 3 document, written by hand to be read;
// openapi_test.go keeps it in step with the routes and the Go types.
//
//go:embed openapi.json
var openAPIDoc []byte

// docsPage renders openAPIDoc in a browser. It loads nothing but
// /openapi.json: Tollgate is self-hosted and may run offline.
//
//go:embed docs.html
var docsPage []byte

// docsPolicy lets the page run its own inline script and style and fetch
// from its own origin, and nothing else.
const docsPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// openAPI serves GET /openapi.json.
func (s *server) openAPI() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, "application/json", openAPIDoc)
	}
}

// docs serves GET /docs.
func (s *server) docs() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Content-Security-Policy", docsPolicy)
		c.Header("X-Content-Type-Options", "nosniff")
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, "text/html; charset=utf-8", docsPage)
	}
}
