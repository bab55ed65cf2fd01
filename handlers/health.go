package handlers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"tollgate"

	"github.com/gin-gonic/gin"
)

// readyTimeout bounds a readiness check, database and Ollama together.
const readyTimeout = 3 * time.Second

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
		ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
		defer cancel()
		out := readyResponse{Status: "ready", Database: "ok", Ollama: "ok"}
		if s.db != nil {
			if err := s.db.Ping(ctx); err != nil {
				out.Status, out.Database = "not ready", "database is not usable"
				s.log.Warn("readyz: database", "error", err.Error())
			}
		}
		if err := s.ollama.Ping(ctx); err != nil {
			out.Status = "not ready"
			out.Ollama = s.ollamaProblem(err)
		}
		if out.Status != "ready" {
			c.JSON(http.StatusServiceUnavailable, out)
			return
		}
		c.JSON(http.StatusOK, out)
	}
}

// ollamaProblem says why Ollama is not ready. A Ping that runs out of
// readyTimeout (before a backend's own first-byte timeout) still names Ollama
// and where it is, not just "the request took too long".
func (s *server) ollamaProblem(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		urls := make([]string, 0, len(s.gw.Catalog().Backends))
		for _, b := range s.gw.Catalog().Backends {
			urls = append(urls, b.URL)
		}
		return "Ollama at " + strings.Join(urls, " or ") + " did not answer within " + readyTimeout.String()
	}
	if tollgate.ErrorCode(err) != tollgate.CodeInternal {
		return tollgate.ErrorMessage(err)
	}
	return err.Error()
}
