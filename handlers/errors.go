package handlers

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/inference"
	"tollgate/metering"
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
		RetryAfter: tollgate.RetryAfter(err), Final: tollgate.IsFinal(err), Param: paramOf(err)}
}

// paramOf is the request field err blames, if it names one: an *Error's
// Param or an inference.InvalidError's Field.
func paramOf(err error) string {
	var e *tollgate.Error
	var ie *inference.InvalidError
	switch {
	case errors.As(err, &e):
		return e.Param
	case errors.As(err, &ie):
		return ie.Field
	}
	return ""
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
	s.abortWith(c, e)
}

// retrySeconds rounds up so Retry-After is never earlier than the refill.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// abort writes the error in the shape of the route's API surface (the
// native envelope, OpenAI's or Ollama's) and stops the chain.
func (s *server) abort(c *gin.Context, code tollgate.Code, message string) {
	s.abortWith(c, &tollgate.Error{Code: code, Message: message})
}

// abortWith is abort for a described error (its Param too).
func (s *server) abortWith(c *gin.Context, e *tollgate.Error) {
	if ri := info(c); ri.keyID == "" && c.Request.ContentLength != 0 && !ri.bodyRead {
		// An anonymous client with an unread body: answer at once and drop
		// the connection rather than let net/http wait for the body.
		c.Header("Connection", "close")
	}
	status, body := errorFor(requestSurface(c), e, info(c).id)
	c.AbortWithStatusJSON(status, body)
}

// requestSurface is the API surface of the request's route, or of its path
// when no route matched (a 404 under /v1 answers in OpenAI's shape).
func requestSurface(c *gin.Context) string {
	if route := c.FullPath(); route != "" {
		return surfaceOf(route)
	}
	return surfaceOf(c.Request.URL.Path)
}

// errorFor renders an error for a surface: its status and body.
//   - native: {"error":{"code","message","request_id"}}, code's status;
//   - openai: {"error":{"message","type","param","code"}} with OpenAI's
//     types and codes, and a spent quota as OpenAI reports it (429
//     insufficient_quota);
//   - ollama: {"error":"message"} (a string: ollama-js prints an object as
//     [object Object]), code's status.
//
// OpenAI's param is e.Param (see openAIParam) for invalid requests.
func errorFor(surface string, e *tollgate.Error, requestID string) (int, any) {
	code, message := e.Code, e.Message
	switch surface {
	case metering.SurfaceOpenAI:
		status, typ, oaCode := openAIError(code)
		return status, openAIErrorBody{Error: openAIErrorDetail{Message: message, Type: typ, Code: oaCode, Param: openAIParam(e)}}
	case metering.SurfaceOllama:
		return code.Status(), ollamaErrorBody{Error: message}
	}
	return code.Status(), errorBody{Error: errorDetail{Code: code, Message: message, RequestID: requestID}}
}

// openAIParam is the OpenAI request field an invalid request blames, or nil:
// the gateway's "options.num_predict" is max_tokens (or
// max_completion_tokens) there, any other "options.x" the top-level x.
func openAIParam(e *tollgate.Error) *string {
	if e.Param == "" || e.Code != tollgate.CodeInvalidRequest {
		return nil
	}
	p := e.Param
	if p == "options.num_predict" {
		p = "max_tokens"
	}
	p = strings.TrimPrefix(p, "options.")
	return &p
}

// openAIErrorBody is OpenAI's error shape; param is always present (null
// when no single parameter is at fault), as its SDKs expect.
type openAIErrorBody struct {
	Error openAIErrorDetail `json:"error"`
}

type openAIErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// ollamaErrorBody is Ollama's error shape.
type ollamaErrorBody struct {
	Error string `json:"error"`
}

// openAIError maps a Tollgate code to the status, error type and code
// OpenAI's API uses for the same condition, so its SDKs raise the right
// exception (AuthenticationError, RateLimitError, ...) and retry only what
// retrying can fix.
func openAIError(code tollgate.Code) (status int, typ string, oaCode *string) {
	str := func(s string) *string { return &s }
	status = code.Status()
	switch {
	case code == tollgate.CodeQuotaExceeded:
		return 429, "insufficient_quota", str("insufficient_quota")
	case code == tollgate.CodeRateLimited || code == tollgate.CodeTooManyConcurrent || code == tollgate.CodeTooManyAuthFailures:
		return status, "requests", str("rate_limit_exceeded")
	case code == tollgate.CodeTokensPerMinute:
		return status, "tokens", str("rate_limit_exceeded")
	case code == tollgate.CodeMissingKey || code == tollgate.CodeInvalidKey || code == tollgate.CodeKeyExpired ||
		code == tollgate.CodeKeyRevoked || code == tollgate.CodeKeyInQuery:
		return status, "invalid_request_error", str("invalid_api_key")
	case status == 403:
		return status, "permission_error", str(string(code))
	case status >= 500:
		return status, "server_error", str(string(code))
	}
	return status, "invalid_request_error", str(string(code))
}
