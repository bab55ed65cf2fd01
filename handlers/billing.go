package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/billing"
)

// BillingStatus is the usage exporter as GET /admin/billing shows it
// (*billing.Exporter).
type BillingStatus interface {
	Status(ctx context.Context) (billing.Status, error)
}

// billingJSON is GET /admin/billing's answer.
type billingJSON struct {
	Enabled     bool               `json:"enabled"`
	Hint        string             `json:"hint,omitempty"`
	Exporter    string             `json:"exporter,omitempty"`
	Meters      *billingMetersJSON `json:"meters,omitempty"`
	Interval    string             `json:"interval,omitempty"`
	Delay       string             `json:"delay,omitempty"`
	Leader      bool               `json:"leader"`
	Owner       string             `json:"owner,omitempty"`
	Cursor      *billingCursorJSON `json:"cursor,omitempty"`
	LagSeconds  float64            `json:"lag_seconds"`
	Pending     *billingCursorJSON `json:"pending,omitempty"`
	LastExport  *time.Time         `json:"last_export_at,omitempty"`
	LastError   string             `json:"last_error,omitempty"`
	LastErrorAt *time.Time         `json:"last_error_at,omitempty"`
	NextAttempt *time.Time         `json:"next_attempt_at,omitempty"`
	EventsSent  int64              `json:"events_sent"`
	Batches     int64              `json:"batches"`
}

type billingMetersJSON struct {
	Tokens   string `json:"tokens"`
	Requests string `json:"requests"`
	Cost     string `json:"cost"`
}

// billingCursorJSON is a cursor: usage before Before with a commit sequence
// below Seq is exported.
type billingCursorJSON struct {
	Before time.Time `json:"before"`
	Seq    int64     `json:"seq"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// billingStatus serves GET /admin/billing: the Stripe exporter's cursor,
// lag, pending batch and last error.
func (s *server) billingStatus() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.billing == nil {
			c.JSON(http.StatusOK, billingJSON{Hint: "usage is not sent to Stripe: set STRIPE_SECRET_KEY (see README, Bill your subscribers)"})
			return
		}
		st, err := s.billing.Status(c.Request.Context())
		if err != nil {
			s.fail(c, err)
			return
		}
		out := billingJSON{Enabled: true, Exporter: st.Name, Interval: st.Interval.String(), Delay: st.Delay.String(),
			Meters: &billingMetersJSON{Tokens: st.Meters.Tokens, Requests: st.Meters.Requests, Cost: st.Meters.Cost},
			Leader: st.Leader, Owner: st.State.Owner, LagSeconds: st.Lag.Seconds(),
			LastExport: timeOrNil(st.State.LastExport), LastError: st.State.LastError, LastErrorAt: timeOrNil(st.State.LastErrorAt),
			NextAttempt: timeOrNil(st.NextAttempt), EventsSent: st.State.EventsSent, Batches: st.State.Batches}
		if !st.State.Cursor.Before.IsZero() {
			out.Cursor = &billingCursorJSON{Before: st.State.Cursor.Before.UTC(), Seq: st.State.Cursor.Seq}
		}
		if p := st.State.Pending; p != nil {
			out.Pending = &billingCursorJSON{Before: p.To.Before.UTC(), Seq: p.To.Seq}
		}
		c.JSON(http.StatusOK, out)
	}
}
