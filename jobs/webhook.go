package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WebhookSecretPrefix starts every signing secret (Standard Webhooks).
const WebhookSecretPrefix = "whsec_"

// NewWebhookSecret returns a new signing secret: whsec_ and the base64 of
// 32 random bytes.
func NewWebhookSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return WebhookSecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// Sign returns the webhook-signature value for a message: "v1," and the
// base64 of HMAC-SHA256 over id.timestamp.body, keyed with the secret's
// decoded bytes (the part after whsec_).
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, WebhookSecretPrefix))
	if err != nil {
		return "", fmt.Errorf("jobs: webhook secret is not base64: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// WebhookID is the webhook-id of a job's callback: the same on every
// retry, so receivers can drop duplicates.
func WebhookID(jobID string) string { return "msg_" + strings.TrimPrefix(jobID, "job_") }

// deliverOne claims one due callback and attempts it.
func (m *Manager) deliverOne() bool {
	ctx, cancel := bg()
	defer cancel()
	now := m.now().UTC()
	j, ok, err := m.cfg.Store.ClaimDelivery(ctx, now, now.Add(time.Minute))
	if err != nil {
		m.log.Error("jobs: claim delivery", "error", err.Error())
		return false
	}
	if !ok {
		return false
	}
	poke(m.wakeSend) // there may be more
	a := m.attempt(j)
	ctx, cancel = bg() // the attempt may have taken a while
	defer cancel()
	attempts := len(j.Deliveries) + 1
	state, next := DeliveryPending, time.Time{}
	switch {
	case a.Status >= 200 && a.Status < 300:
		state = DeliveryDelivered
	case attempts >= m.cfg.Delivery.Attempts:
		state = DeliveryGaveUp
	default:
		next = m.now().UTC().Add(m.cfg.Delivery.After(attempts))
	}
	if err := m.cfg.Store.RecordDelivery(ctx, j.ID, a, state, next); err != nil {
		m.log.Error("jobs: record delivery", "job", j.ID, "error", err.Error())
	}
	if state == DeliveryGaveUp {
		m.log.Warn("jobs: callback not delivered; giving up", "job", j.ID, "attempts", attempts)
	}
	return true
}

// attempt POSTs j's view to its callback URL, signed.
func (m *Manager) attempt(j Job) Attempt {
	at := m.now().UTC()
	a := Attempt{At: at}
	body, err := json.Marshal(j.View(false))
	if err != nil {
		a.Error = err.Error()
		return a
	}
	ctx, cancel := context.WithTimeout(m.runCtx, 30*time.Second)
	defer cancel()
	secret, err := m.cfg.Store.WebhookSecret(ctx, j.KeyID)
	if err == nil && secret == "" {
		err = fmt.Errorf("the key has no webhook signing secret")
	}
	var sig string
	if err == nil {
		sig, err = Sign(secret, WebhookID(j.ID), at, body)
	}
	if err != nil {
		a.Error = err.Error()
		return a
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.CallbackURL, bytes.NewReader(body))
	if err != nil {
		a.Error = err.Error()
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tollgate-webhooks")
	req.Header.Set("webhook-id", WebhookID(j.ID))
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := m.cfg.Client.Do(req)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	a.Status = resp.StatusCode
	return a
}
