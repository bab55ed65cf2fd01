package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"tollgate/inference"
)

// statusClientClosed is nginx's 499: the client went away before the answer.
const statusClientClosed = 499

// errorBody is the one error envelope of the native surface.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// apiError is an error that already knows its HTTP rendering.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds; 0 = no Retry-After
}

func (e *apiError) Error() string { return e.message }

func bodyTooLarge(limit int64) string {
	return "request body is larger than the limit of " + strconv.FormatInt(limit, 10) + " bytes"
}

// toAPIError maps every error the handlers can meet to its HTTP rendering.
// Unknown errors become a 500 whose detail stays in the log.
func toAPIError(err error) *apiError {
	var (
		ae   *apiError
		inv  *inference.InvalidError
		unm  *inference.UnknownModelError
		unt  *inference.UnknownTaskError
		unr  *inference.UnreachableError
		tmo  *inference.TimeoutError
		miss *inference.ModelMissingError
		up   *inference.UpstreamError
		mbe  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: bodyTooLarge(mbe.Limit)}
	case errors.As(err, &inv):
		return &apiError{status: http.StatusBadRequest, code: "invalid_request", message: inv.Error()}
	case errors.As(err, &unm):
		return &apiError{status: http.StatusNotFound, code: "model_not_found", message: unm.Error()}
	case errors.As(err, &unt):
		return &apiError{status: http.StatusNotFound, code: "task_not_found", message: unt.Error()}
	case errors.As(err, &unr):
		return &apiError{status: http.StatusBadGateway, code: "backend_unreachable", message: unr.Error(), retryAfter: 5}
	case errors.As(err, &tmo):
		return &apiError{status: http.StatusGatewayTimeout, code: "backend_timeout", message: tmo.Error()}
	case errors.As(err, &miss):
		return &apiError{status: http.StatusBadGateway, code: "model_not_installed", message: miss.Error()}
	case errors.Is(err, inference.ErrBusy):
		return &apiError{status: http.StatusServiceUnavailable, code: "overloaded", message: err.Error() + "; retry shortly", retryAfter: 1}
	case errors.As(err, &up):
		return &apiError{status: http.StatusBadGateway, code: "backend_error", message: up.Error()}
	case errors.Is(err, context.Canceled):
		return &apiError{status: statusClientClosed, code: "client_closed_request", message: "the client closed the request"}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusGatewayTimeout, code: "timeout", message: "the request took too long"}
	}
	return nil
}

// fail renders err as the error envelope and stops the chain.
func (s *server) fail(c *gin.Context, err error) {
	ae := toAPIError(err)
	if ae == nil {
		s.log.Error("internal error", "request_id", info(c).id, "route", c.FullPath(), "error", err.Error())
		ae = &apiError{status: http.StatusInternalServerError, code: "internal_error", message: "internal error; quote the request id when reporting it"}
	} else if ae.status >= 500 {
		s.log.Warn("upstream error", "request_id", info(c).id, "route", c.FullPath(), "code", ae.code, "error", err.Error())
	}
	if ae.retryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(ae.retryAfter))
	}
	s.abort(c, ae.status, ae.code, ae.message)
}

func (s *server) abort(c *gin.Context, status int, code, message string) {
	if ri := info(c); ri.keyID == "" && c.Request.ContentLength != 0 && !ri.bodyRead {
		// An anonymous client with an unread body: answer at once and drop
		// the connection rather than let net/http wait for the body.
		c.Header("Connection", "close")
	}
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: message, RequestID: info(c).id}})
}
