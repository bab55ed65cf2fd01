package handlers

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
	"tollgate/metering"
)

// Recorder commits usage events durably; *metering.Recorder satisfies it.
// Record returns once the event is committed.
type Recorder interface {
	Record(ctx context.Context, ev metering.Event) error
}

// recordTimeout bounds the wait for a usage record's commit. It runs on a
// context detached from the client's, so a client hanging up cannot stop
// its own request from being billed.
const recordTimeout = 15 * time.Second

// errNotMetered means the answer was ready but its usage could not be
// committed; it is withheld rather than given away unbilled.
var errNotMetered = &apiError{status: http.StatusServiceUnavailable, code: "metering_unavailable",
	message: "the answer could not be recorded for billing, so it was not sent; retry shortly", retryAfter: 1}

// meter records one usage event for a request that reached inference, with
// the status the client gets and Ollama's token counts. It must run before
// the response is written: the response is released only once its record
// is committed.
func (s *server) meter(c *gin.Context, endpoint string, m inference.Model, u inference.Usage, status int) error {
	ri := info(c)
	ri.usage = toUsage(u)
	ri.metered = true
	ri.status = status
	price := metering.Price{InputPer1K: m.Price.InputPer1K, OutputPer1K: m.Price.OutputPer1K}
	ev := metering.Event{
		RequestID:        ri.id,
		KeyID:            ri.keyID,
		Endpoint:         endpoint,
		Model:            m.Name,
		PromptTokens:     int64(u.PromptTokens),
		CompletionTokens: int64(u.CompletionTokens),
		Status:           status,
		Latency:          time.Since(ri.start),
		Cost:             price.Cost(int64(u.PromptTokens), int64(u.CompletionTokens)),
		Time:             s.now().UTC(),
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), recordTimeout)
	defer cancel()
	if err := s.recorder.Record(ctx, ev); err != nil {
		s.log.Error("usage not recorded", "request_id", ri.id, "key_id", ri.keyID, "error", err.Error())
		return errNotMetered
	}
	return nil
}

// statusOf is the status a failed inference call gives the client. It also
// notes an Ollama failure for the metrics.
func statusOf(ri *reqInfo, err error) int {
	ae := toAPIError(err)
	if ae == nil {
		return http.StatusInternalServerError
	}
	if ae.status >= http.StatusBadGateway {
		ri.upstreamErr = ae.code
	}
	return ae.status
}

// finish meters a finished inference call and then writes either its error
// or the success body.
func (s *server) finish(c *gin.Context, endpoint string, m inference.Model, u inference.Usage, err error, ok func()) {
	status := http.StatusOK
	if err != nil {
		status = statusOf(info(c), err)
	}
	if merr := s.meter(c, endpoint, m, u, status); merr != nil && err == nil {
		err = merr
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			c.Abort() // nobody is listening
			return
		}
		s.fail(c, err)
		return
	}
	_ = withWriteDeadline(c, func() error { ok(); return nil })
}
