// Package handlers is Tollgate's HTTP surface: the routes, the middleware
// chain (request id, access log, recovery, body limit, auth, limits), request
// and response types, and the one function that turns errors into the error
// envelope. It is the only package that imports Gin.
package handlers

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
)

// Inferencer runs models; *inference.Client satisfies it.
type Inferencer interface {
	Catalog() *inference.Catalog
	Ping(ctx context.Context) error
	Generate(ctx context.Context, m inference.Model, req inference.GenerateRequest, onText func(string) error) (inference.Result, error)
	Embed(ctx context.Context, m inference.Model, inputs []string, keepAlive *time.Duration) (inference.EmbedResult, error)
	Predict(ctx context.Context, m inference.Model, req inference.PredictRequest) (inference.PredictResult, error)
}

// Pinger reports whether a dependency (the database) is usable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// DefaultMaxBodyBytes bounds request bodies when Config leaves it zero.
const DefaultMaxBodyBytes = 1 << 20

// Config holds everything the server depends on.
type Config struct {
	Inference    Inferencer
	DB           Pinger
	Logger       *slog.Logger // nil discards
	MaxBodyBytes int64        // 0 = DefaultMaxBodyBytes
}

// server carries the dependencies the handlers close over.
type server struct {
	inf     Inferencer
	db      Pinger
	log     *slog.Logger
	maxBody int64
}

// NewServer returns the HTTP handler for the whole API. It is safe for
// concurrent use; it starts no goroutines.
func NewServer(cfg Config) http.Handler {
	s := &server{inf: cfg.Inference, db: cfg.DB, log: cfg.Logger, maxBody: cfg.MaxBodyBytes}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ForwardedByClientIP = false // no client-address spoofing through X-Forwarded-For
	_ = r.SetTrustedProxies(nil)
	r.ContextWithFallback = false
	addRoutes(r, s)
	return r
}
