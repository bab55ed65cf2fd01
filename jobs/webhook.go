package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"tollgate/webhook"
)

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
	if err == nil {
		a.Status, err = webhook.Post(ctx, m.cfg.Client, j.CallbackURL, secret, WebhookID(j.ID), at, body)
	}
	if err != nil {
		a.Error = err.Error()
	}
	return a
}
