package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/jobs"
)

type createJobRequest struct {
	Endpoint    string          `json:"endpoint"`
	Request     json.RawMessage `json:"request"`
	CallbackURL string          `json:"callback_url"`
}

// jobAccepted is the 202 answer to a submitted job.
type jobAccepted struct {
	ID        string      `json:"id"`
	Status    jobs.Status `json:"status"`
	StatusURL string      `json:"status_url"`
}

type webhookSecret struct {
	WebhookSecret string `json:"webhook_secret"`
	Notice        string `json:"notice"`
}

const webhookShownOnce = "store this secret now: it signs this key's job callbacks and is not shown again; rotating replaces it at once"

// createJob serves POST /jobs.
func (s *server) createJob() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body createJobRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		s.submitJob(c, body.Endpoint, body.Request, body.CallbackURL)
	}
}

// respondAsync answers a native inference request sent with
// "Prefer: respond-async" with a job (RFC 7240), and reports whether it did.
func (s *server) respondAsync(c *gin.Context, endpoint string) bool {
	if !prefersAsync(c.Request.Header.Values("Prefer")) {
		return false
	}
	body, err := requestBody(c)
	if err != nil {
		s.fail(c, err)
		return true
	}
	c.Header("Preference-Applied", "respond-async")
	s.submitJob(c, endpoint, body, "")
	return true
}

// prefersAsync reports whether Prefer header values ask for respond-async.
func prefersAsync(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			tok, _, _ := strings.Cut(p, ";")
			if strings.EqualFold(strings.TrimSpace(tok), "respond-async") {
				return true
			}
		}
	}
	return false
}

// submitJob checks request's shape for endpoint and queues it: 202 with
// the job's id and status URL (also in Location).
func (s *server) submitJob(c *gin.Context, endpoint string, request json.RawMessage, callbackURL string) {
	if s.jobs == nil {
		s.abort(c, tollgate.CodeNotFound, "async jobs are not enabled on this server")
		return
	}
	if err := checkJobRequest(endpoint, request); err != nil {
		s.fail(c, err)
		return
	}
	// The scope is known now; the model, plan and limits are the gateway's
	// when the job runs.
	if key := info(c).key; !key.HasScope(auth.Scope(endpoint)) {
		s.fail(c, tollgate.Errorf(tollgate.CodeInsufficientScope, "this key does not have the %s scope", endpoint))
		return
	}
	j, err := s.jobs.Submit(c.Request.Context(), info(c).key, endpoint, request, callbackURL)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Location", jobs.StatusURL(j.ID))
	c.JSON(http.StatusAccepted, jobAccepted{ID: j.ID, Status: j.Status, StatusURL: jobs.StatusURL(j.ID)})
}

// checkJobRequest decodes request as endpoint's native body, so a bad body
// is a 400 now rather than a failed job later.
func checkJobRequest(endpoint string, request json.RawMessage) error {
	if len(bytes.TrimSpace(request)) == 0 || string(bytes.TrimSpace(request)) == "null" {
		return withParam(badRequest("field \"request\" is required: the body the endpoint takes"), "request")
	}
	switch endpoint {
	case "generate":
		var b generateRequest
		if err := decodeBytes(request, &b); err != nil {
			return inRequest(err)
		}
		if b.Stream {
			return withParam(badRequest("field \"request.stream\": a job's answer is not streamed; leave it out"), "request.stream")
		}
		_, err := b.toGateway()
		return inRequest(err)
	case "embed":
		var b embedRequest
		return inRequest(decodeBytes(request, &b))
	case "predict":
		var b predictRequest
		return inRequest(decodeBytes(request, &b))
	}
	return withParam(badRequest("field \"endpoint\" must be generate, embed or predict"), "endpoint")
}

// inRequest names a request field as the job body's "request.<field>".
func inRequest(err error) error {
	var e *tollgate.Error
	if errors.As(err, &e) && e.Param != "" {
		e.Message = strings.Replace(e.Message, `"`+e.Param+`"`, `"request.`+e.Param+`"`, 1)
		e.Param = "request." + e.Param
	}
	return err
}

// getJob serves GET /jobs/:id.
func (s *server) getJob() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.jobs == nil {
			s.abort(c, tollgate.CodeNotFound, "async jobs are not enabled on this server")
			return
		}
		j, err := s.jobs.Get(c.Request.Context(), info(c).key, c.Param("id"))
		if err != nil {
			s.fail(c, jobError(err))
			return
		}
		c.JSON(http.StatusOK, j.View(true))
	}
}

// cancelJob serves DELETE /jobs/:id.
func (s *server) cancelJob() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.jobs == nil {
			s.abort(c, tollgate.CodeNotFound, "async jobs are not enabled on this server")
			return
		}
		j, err := s.jobs.Cancel(c.Request.Context(), info(c).key, c.Param("id"))
		if err != nil {
			s.fail(c, jobError(err))
			return
		}
		c.JSON(http.StatusOK, j.View(true))
	}
}

func jobError(err error) error {
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return tollgate.Errorf(tollgate.CodeJobNotFound, "no job with that id was made by this key")
	case errors.Is(err, jobs.ErrFinished):
		return tollgate.Errorf(tollgate.CodeJobFinished, "the job has already finished and cannot be cancelled")
	}
	return err
}

// rotateWebhookSecret serves POST /keys/self/webhook-secret/rotate: a new
// signing secret for the caller's key, replacing the old one at once.
func (s *server) rotateWebhookSecret() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.jobs == nil {
			s.abort(c, tollgate.CodeNotFound, "async jobs are not enabled on this server")
			return
		}
		secret, err := s.jobs.RotateWebhookSecret(c.Request.Context(), info(c).keyID)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, webhookSecret{WebhookSecret: secret, Notice: webhookShownOnce})
	}
}

// newWebhookSecret gives a new key its signing secret; "" (logged) if it
// could not be stored: the key holder can rotate to get one.
func (s *server) newWebhookSecret(c *gin.Context, keyID string) string {
	if s.jobs == nil {
		return ""
	}
	secret, err := s.jobs.RotateWebhookSecret(context.WithoutCancel(c.Request.Context()), keyID)
	if err != nil {
		s.log.Error("could not store the new key's webhook secret", "key_id", keyID, "error", err.Error())
		return ""
	}
	return secret
}

// JobRunner runs jobs for package jobs through gw: it decodes a job's
// request as the endpoint's native body and returns the body the
// synchronous call answers with.
func JobRunner(gw *gateway.Gateway) jobs.Runner {
	return func(ctx context.Context, c gateway.Caller, endpoint string, request json.RawMessage) (json.RawMessage, error) {
		var out any
		switch endpoint {
		case "generate":
			var b generateRequest
			if err := decodeBytes(request, &b); err != nil {
				return nil, err
			}
			req, err := b.toGateway()
			if err != nil {
				return nil, err
			}
			res, err := gw.Generate(ctx, c, req, nil)
			if err != nil {
				return nil, err
			}
			out = generateResponse{ID: c.RequestID, Model: res.Model, Text: res.Text, DoneReason: res.DoneReason, Usage: toUsage(res.Usage)}
		case "embed":
			var b embedRequest
			if err := decodeBytes(request, &b); err != nil {
				return nil, err
			}
			res, err := gw.Embed(ctx, c, b.toGateway())
			if err != nil {
				return nil, err
			}
			out = embedResponse{ID: c.RequestID, Model: res.Model, Embeddings: res.Embeddings, Usage: toUsage(res.Usage)}
		case "predict":
			var b predictRequest
			if err := decodeBytes(request, &b); err != nil {
				return nil, err
			}
			res, err := gw.Predict(ctx, c, b.toGateway())
			if err != nil {
				return nil, err
			}
			out = predictBody(c.RequestID, b, res)
		default:
			return nil, badRequest("unknown endpoint %q", endpoint)
		}
		return json.Marshal(out)
	}
}
