package handlers

import "github.com/gin-gonic/gin"

// addRoutes is the whole API surface on one screen.
func addRoutes(r *gin.Engine, s *server) {
	r.Use(s.requestID(), s.accessLog(), s.recovery())
	r.NoRoute(s.notFound())
	r.NoMethod(s.methodNotAllowed())

	r.GET("/healthz", s.healthz())
	r.GET("/readyz", s.readyz())

	api := r.Group("/", s.bodyLimit())
	api.POST("/generate", s.generate())
	api.POST("/embed", s.embed())
	api.POST("/predict", s.predict())
	api.GET("/models", s.models())
}
