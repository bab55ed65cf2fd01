package handlers

import (
	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// addRoutes is the whole API surface on one screen.
func addRoutes(r *gin.Engine, s *server) {
	r.Use(s.requestID(), s.bodyDeadline(), s.accessLog(), s.observe(), s.recovery())
	r.NoRoute(s.trailingSlash(r.Routes), s.notFound())
	r.NoMethod(s.methodNotAllowed())

	r.GET("/", s.root())
	r.HEAD("/", s.headRoot())
	r.GET("/openapi.json", s.openAPI())
	r.GET("/docs", s.docs())
	r.GET("/healthz", s.healthz())
	r.GET("/readyz", s.readyz())
	// The dashboard: its files are public; it signs in by posting a key
	// once for a session cookie, then calls the same JSON routes as any
	// client, authenticated by the session (see sessionAuth).
	r.GET("/dashboard", s.dashboardAsset("index.html", "text/html; charset=utf-8"))
	r.GET("/dashboard/app.js", s.dashboardAsset("app.js", "text/javascript; charset=utf-8"))
	r.GET("/dashboard/app.css", s.dashboardAsset("app.css", "text/css; charset=utf-8"))
	r.POST("/dashboard/signin", s.bodyLimit(), s.signIn())
	if s.metricsRoute {
		r.GET("/metrics", gin.WrapH(s.metrics.Handler()))
	}

	api := r.Group("/", s.bodyLimit(), s.authenticate())
	// s.idempotent(): Idempotency-Key on every POST that runs a model or
	// creates something (after authentication: records are per key).
	// Inference: scope, model, limits and metering are the gateway's.
	api.POST("/generate", s.idempotent(), s.generate())
	api.POST("/embed", s.idempotent(), s.embed())
	api.POST("/predict", s.idempotent(), s.predict())
	api.GET("/models", s.models())
	api.GET("/usage", s.ownUsage())
	api.GET("/usage/requests", s.recentUsage(true))
	api.GET("/dashboard/session", s.showSession())
	api.DELETE("/dashboard/session", s.signOut())
	api.POST("/keys/self/rotate", s.idempotent(), s.rotateKey(true))
	api.POST("/keys/self/webhook-secret/rotate", s.idempotent(), s.rotateWebhookSecret())

	// Async jobs: the same calls, run by package jobs' workers.
	api.POST("/jobs", s.idempotent(), s.createJob())
	api.GET("/jobs/:id", s.getJob())
	api.DELETE("/jobs/:id", s.cancelJob())

	// OpenAI-compatible surface: adapters over the same gateway calls.
	v1 := api.Group("/v1")
	v1.POST("/chat/completions", s.idempotent(), s.openAIChat())
	v1.POST("/completions", s.idempotent(), s.openAICompletions())
	v1.POST("/embeddings", s.idempotent(), s.openAIEmbeddings())
	v1.GET("/models", s.openAIModels(false))
	v1.GET("/models/:id", s.openAIModels(true))

	// Ollama-compatible surface (/api): adapters over the same gateway.
	ol := api.Group("/api")
	ol.POST("/generate", s.idempotent(), s.ollamaGenerate())
	ol.POST("/chat", s.idempotent(), s.ollamaChat())
	ol.POST("/embed", s.idempotent(), s.ollamaEmbed())
	ol.POST("/embeddings", s.idempotent(), s.ollamaEmbeddings())
	ol.GET("/tags", s.ollamaTags())
	ol.POST("/show", s.ollamaShow())
	ol.GET("/ps", s.ollamaPS())
	ol.GET("/version", s.ollamaVersionRoute())
	for _, r := range ollamaManagementRoutes {
		ol.Handle(r[0], r[1], s.ollamaManagement())
	}

	admin := api.Group("/admin", s.require(auth.ScopeAdmin))
	admin.POST("/keys", s.idempotent(), s.createKey())
	admin.GET("/keys", s.listKeys())
	admin.GET("/keys/:id", s.showKey())
	admin.PATCH("/keys/:id", s.updateKey())
	admin.POST("/keys/:id/rotate", s.idempotent(), s.rotateKey(false))
	admin.POST("/keys/:id/revoke", s.revokeKey())
	admin.DELETE("/keys/:id", s.revokeKey())
	admin.POST("/accounts", s.idempotent(), s.createAccount())
	admin.GET("/accounts", s.listAccounts())
	admin.GET("/accounts/:id", s.showAccount())
	admin.PATCH("/accounts/:id", s.updateAccount())
	admin.GET("/audit", s.listAudit())
	admin.GET("/backends", s.listBackends())
	admin.POST("/reload", s.reload())
	admin.GET("/usage", s.adminUsage())
	admin.GET("/usage/export", s.adminExport())
	admin.GET("/usage/requests", s.recentUsage(false))
	admin.GET("/inflight", s.inFlight())
	admin.GET("/billing", s.billingStatus())
}
