package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

type readyResponse struct {
	Status   string `json:"status"`
	Database string `json:"database"`
	Ollama   string `json:"ollama"`
}

// healthz answers while the process runs; it checks nothing else.
func (s *server) healthz() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	}
}

// readyz is 200 when the database and every Ollama backend answer, else 503
// with the reason for each.
func (s *server) readyz() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
		defer cancel()
		out := readyResponse{Status: "ready", Database: "ok", Ollama: "ok"}
		if s.db != nil {
			if err := s.db.Ping(ctx); err != nil {
				out.Status, out.Database = "not ready", "database is not usable"
				s.log.Warn("readyz: database", "error", err.Error())
			}
		}
		if err := s.inf.Ping(ctx); err != nil {
			out.Status = "not ready"
			out.Ollama = err.Error()
			if ae := toAPIError(err); ae != nil {
				out.Ollama = ae.message
			}
		}
		if out.Status != "ready" {
			c.JSON(http.StatusServiceUnavailable, out)
			return
		}
		c.JSON(http.StatusOK, out)
	}
}
