package handlers

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
)

// errorBody is the one error envelope of the native surface.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      tollgate.Code `json:"code"`
	Message   string        `json:"message"`
	RequestID string        `json:"request_id"`
}

func badRequest(format string, args ...any) *tollgate.Error {
	return tollgate.Errorf(tollgate.CodeInvalidRequest, format, args...)
}

func bodyTooLarge(limit int64) string {
	return "request body is larger than the limit of " + strconv.FormatInt(limit, 10) + " bytes"
}

// describe is the one mapping from an error to what the native surface
// says: its code (and so its status, from tollgate's table), a message fit
// for the client, and the retry hints. Unknown errors are internal_error
// with a generic message; their detail goes to the log only.
func describe(err error) *tollgate.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &tollgate.Error{Code: tollgate.CodeBodyTooLarge, Message: bodyTooLarge(mbe.Limit)}
	}
	return &tollgate.Error{Code: tollgate.ErrorCode(err), Message: tollgate.ErrorMessage(err),
		RetryAfter: tollgate.RetryAfter(err), Final: tollgate.IsFinal(err)}
}

// fail renders err as the error envelope, with Retry-After and
// x-should-retry where they apply, and stops the chain.
func (s *server) fail(c *gin.Context, err error) {
	e := describe(err)
	switch status := e.Code.Status(); {
	case e.Code == tollgate.CodeInternal:
		s.log.Error("internal error", "request_id", info(c).id, "route", c.FullPath(), "error", err.Error())
	case status >= 500:
		s.log.Warn("upstream error", "request_id", info(c).id, "route", c.FullPath(), "code", string(e.Code), "error", err.Error())
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(retrySeconds(e.RetryAfter)))
	}
	if e.Final {
		c.Header("x-should-retry", "false")
	}
	s.abort(c, e.Code, e.Message)
}

// retrySeconds rounds up so Retry-After is never earlier than the refill.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// abort writes the error envelope with code's status and stops the chain.
func (s *server) abort(c *gin.Context, code tollgate.Code, message string) {
	if ri := info(c); ri.keyID == "" && c.Request.ContentLength != 0 && !ri.bodyRead {
		// An anonymous client with an unread body: answer at once and drop
		// the connection rather than let net/http wait for the body.
		c.Header("Connection", "close")
	}
	c.AbortWithStatusJSON(code.Status(), errorBody{Error: errorDetail{Code: code, Message: message, RequestID: info(c).id}})
}
