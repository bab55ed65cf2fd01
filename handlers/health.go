package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"tollgate"

	"github.com/gin-gonic/gin"
)

// readyTimeout bounds a readiness check, database and Ollama together.
const readyTimeout = 3 * time.Second

// readyRetryAfter is the Retry-After of a 503 from /readyz.
const readyRetryAfter = 5 * time.Second

// Readiness states.
const (
	statusReady    = "ready"
	statusDegraded = "degraded"  // 200: some catalog models are not installed, or Redis is unreachable
	statusNotReady = "not ready" // 503
)

type readyResponse struct {
	Status   string `json:"status"`
	Database string `json:"database"`
	Ollama   string `json:"ollama"`
	// MissingModels lists the catalog models Ollama does not have, each
	// with the command that installs it.
	MissingModels []missingModelJSON `json:"missing_models,omitempty"`
	// Backends shows each Ollama backend's state as routing sees it.
	Backends []readyBackend `json:"backends,omitempty"`
	// Redis is "ok" or why the replicas' shared state is degraded; absent
	// when no Redis is configured.
	Redis string `json:"redis,omitempty"`
	// UsageJournal is "ok", or how far the usage journal is behind the
	// database and why; absent without a journal.
	UsageJournal string `json:"usage_journal,omitempty"`
}

// JournalHealth reports how many bytes of usage records are journaled but
// not yet in the database, and the last load error (nil when loading
// works); *metering.Journal's Backlog fits.
type JournalHealth func() (bytes int64, err error)

// SharedHealth reports whether the state replicas share (limits in Redis,
// key-change notifications) is degraded, and why.
type SharedHealth interface {
	Degraded() (bool, string)
}

type missingModelJSON struct {
	Model  string `json:"model"`
	Ollama string `json:"ollama"`
	Pull   string `json:"pull"`
}

// healthz answers while the process runs; it checks nothing else.
func (s *server) healthz() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	}
}

// readyz is 200 when the database and every Ollama backend answer and at
// least one catalog model is installed ("degraded" while some are not,
// listed with the ollama pull that installs each), else 503 with
// Retry-After and the reason for each dependency. Ollama is asked once per
// backend (GET /api/tags), all within readyTimeout.
func (s *server) readyz() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
		defer cancel()
		out := readyResponse{Status: statusReady, Database: "ok", Ollama: "ok"}
		if s.db != nil {
			if err := s.db.Ping(ctx); err != nil {
				out.Status, out.Database = statusNotReady, "database is not usable"
				if tollgate.ErrorCode(err) == tollgate.CodeDatabaseUnavailable {
					out.Database = tollgate.ErrorMessage(err) // "PostgreSQL at host:port is not reachable"
				}
				s.log.Warn("readyz: database", "error", err.Error())
			}
		}
		h, err := s.ollama.Ping(ctx)
		for _, m := range h.Missing {
			out.MissingModels = append(out.MissingModels, missingModelJSON{Model: m.Name, Ollama: m.Ollama, Pull: m.Pull()})
		}
		switch {
		case err != nil:
			out.Status = statusNotReady
			out.Ollama = s.ollamaProblem(err)
		case len(h.Serving) == 0:
			out.Status = statusNotReady
			out.Ollama = "no model of the catalog is installed in Ollama, so every request would fail; run: " + strings.Join(h.Pulls(), "; ")
		case len(h.Missing) > 0 || len(h.Down) > 0 || len(h.Unserved) > 0:
			if out.Status == statusReady {
				out.Status = statusDegraded
			}
			var why []string
			if len(h.Down) > 0 {
				n := len(s.gw.Catalog().Backends)
				down := make([]string, len(h.Down))
				for i, d := range h.Down {
					down[i] = tollgate.ErrorMessage(d.Err)
				}
				why = append(why, strconv.Itoa(len(h.Down))+" of "+strconv.Itoa(n)+" Ollama backends do not answer ("+strings.Join(down, "; ")+"); requests go to the others")
			}
			if len(h.Unserved) > 0 {
				why = append(why, "no backend that serves "+strings.Join(h.Unserved, ", ")+" answers")
			}
			if len(h.Missing) > 0 {
				why = append(why, strconv.Itoa(len(h.Missing))+" of "+strconv.Itoa(len(h.Missing)+len(h.Serving)+len(h.Unserved))+
					" catalog models are not installed in Ollama (requests for them fail with model_not_installed); run: "+strings.Join(h.Pulls(), "; "))
			}
			out.Ollama = strings.Join(why, "; ")
		}
		if s.fleet != nil {
			for _, b := range s.fleet.Backends() {
				out.Backends = append(out.Backends, readyBackend{Name: b.Name, State: b.State, Since: b.Since.UTC(), Why: b.Why})
			}
		}
		if s.journal != nil {
			out.UsageJournal = "ok"
			if n, err := s.journal(); err != nil {
				// Answers go on (their usage waits in the journal), so
				// the replica stays in service: degraded, saying why.
				out.UsageJournal = "usage records are not reaching the database (" + strconv.FormatInt(n, 10) +
					" bytes waiting in the journal, safe there); loading is retried: " + s.dbProblem(err)
				if out.Status == statusReady {
					out.Status = statusDegraded
				}
			}
		}
		if s.shared != nil {
			out.Redis = "ok"
			if d, why := s.shared.Degraded(); d {
				out.Redis = why
				if out.Status == statusReady {
					out.Status = statusDegraded
				}
			}
		}
		if out.Status == statusNotReady {
			c.Header("Retry-After", strconv.Itoa(retrySeconds(readyRetryAfter)))
			c.JSON(http.StatusServiceUnavailable, out)
			return
		}
		c.JSON(http.StatusOK, out)
	}
}

// dbProblem says why the database failed, as a client may read it: the
// store's own message for a known code ("PostgreSQL at host:port is not
// reachable"), else a generic one (the detail is in the log).
func (s *server) dbProblem(err error) string {
	if tollgate.ErrorCode(err) != tollgate.CodeInternal {
		return tollgate.ErrorMessage(err)
	}
	s.log.Warn("readyz: usage journal", "error", err.Error())
	return "the database refused the records (see the log)"
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
