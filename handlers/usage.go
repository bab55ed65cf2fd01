package handlers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
	"tollgate/metering"
)

// UsageExporter streams usage records and lists the latest ones;
// *sqlite.DB and *postgres.DB (package storage) satisfy it.
type UsageExporter interface {
	ExportEvents(ctx context.Context, q metering.Query, fn func(metering.Event) error) error
	RecentEvents(ctx context.Context, q metering.Query, limit int) ([]metering.Event, error)
}

type totalsJSON struct {
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	Cost             string `json:"cost"`
	CostMicros       int64  `json:"cost_micros"`
}

type groupJSON struct {
	Group string `json:"group"`
	totalsJSON
}

type quotaJSON struct {
	MonthlyTokens     int64  `json:"monthly_tokens,omitempty"`
	RemainingTokens   *int64 `json:"remaining_tokens,omitempty"`
	MonthlyRequests   int64  `json:"monthly_requests,omitempty"`
	RemainingRequests *int64 `json:"remaining_requests,omitempty"`
	// Budgets in the catalog's currency, as decimal strings ("25.000000").
	MonthlyBudget   tollgate.Money  `json:"monthly_budget,omitzero"`
	RemainingBudget *tollgate.Money `json:"remaining_budget,omitempty"`
	ResetsAt        time.Time       `json:"resets_at"`
}

type usageResponse struct {
	KeyID   string      `json:"key_id,omitempty"`
	From    time.Time   `json:"from"`
	To      time.Time   `json:"to"`
	GroupBy string      `json:"group_by,omitempty"`
	Totals  totalsJSON  `json:"totals"`
	Groups  []groupJSON `json:"groups,omitempty"`
	Quota   *quotaJSON  `json:"quota,omitempty"`
	// Account is the caller's account (GET /usage, keys that have one).
	Account *accountUsageJSON `json:"account,omitempty"`
}

// accountUsageJSON is the caller's account in GET /usage: its keys'
// committed usage this UTC month and its shared monthly quotas.
type accountUsageJSON struct {
	ID    string     `json:"id"`
	Name  string     `json:"name"`
	Month totalsJSON `json:"month"`
	Quota *quotaJSON `json:"quota"`
}

func toTotals(r metering.Row) totalsJSON {
	return totalsJSON{Requests: r.Requests, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
		TotalTokens: r.TotalTokens(), Cost: r.Cost.String(), CostMicros: int64(r.Cost)}
}

// usageQuery reads ?from=&to=&group_by=&model= (dates as 2006-01-02 or RFC 3339;
// default: the current UTC month; to is exclusive).
func usageQuery(c *gin.Context, now time.Time, allowed ...string) (metering.Query, error) {
	q := metering.Query{From: metering.MonthStart(now), To: metering.NextMonthStart(now), GroupBy: c.Query("group_by"), Model: c.Query("model")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		v := c.Query(p.name)
		if v == "" {
			continue
		}
		t, err := metering.ParseDate(v)
		var dre *metering.DateRangeError
		if errors.As(err, &dre) {
			return q, badRequest("query parameter %q must be between %s and %s", p.name,
				metering.MinDate.Format(time.DateOnly), metering.MaxDate.Format(time.DateOnly))
		}
		if err != nil {
			return q, badRequest("query parameter %q must be a date like 2026-11-01 or an RFC 3339 time", p.name)
		}
		*p.dst = t
	}
	if q.GroupBy != "" && !contains(allowed, q.GroupBy) {
		return q, badRequest("query parameter \"group_by\" must be one of %s", strings.Join(allowed, ", "))
	}
	if !q.To.After(q.From) {
		return q, badRequest("query parameter \"to\" must be after \"from\"")
	}
	return q, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// summarize runs q and shapes the answer.
func (s *server) summarize(ctx context.Context, q metering.Query) (usageResponse, error) {
	rows, err := s.gw.Usage(ctx, q)
	if err != nil {
		return usageResponse{}, err
	}
	out := usageResponse{KeyID: q.KeyID, From: q.From, To: q.To, GroupBy: q.GroupBy}
	var sum metering.Row
	for _, r := range rows {
		sum.Requests += r.Requests
		sum.PromptTokens += r.PromptTokens
		sum.CompletionTokens += r.CompletionTokens
		sum.Cost += r.Cost
		if q.GroupBy != "" {
			out.Groups = append(out.Groups, groupJSON{Group: r.Group, totalsJSON: toTotals(r)})
		}
	}
	if q.GroupBy != "" && out.Groups == nil {
		out.Groups = []groupJSON{}
	}
	out.Totals = toTotals(sum)
	return out, nil
}

// quota reports the key's monthly allowance and what is left of it.
func (s *server) quota(key auth.Key) *quotaJSON { return toQuota(s.gw.Quota(key)) }

func toQuota(q gateway.Quota) *quotaJSON {
	return &quotaJSON{MonthlyTokens: q.MonthlyTokens, RemainingTokens: q.RemainingTokens,
		MonthlyRequests: q.MonthlyRequests, RemainingRequests: q.RemainingRequests,
		MonthlyBudget: q.MonthlyBudget, RemainingBudget: q.RemainingBudget, ResetsAt: q.ResetsAt}
}

// ownUsage serves GET /usage: the calling key's usage and remaining quota.
func (s *server) ownUsage() gin.HandlerFunc {
	return func(c *gin.Context) {
		now := s.now().UTC()
		q, err := usageQuery(c, now, metering.GroupDay, metering.GroupModel)
		if err != nil {
			s.fail(c, err)
			return
		}
		ri := info(c)
		q.KeyID = ri.keyID
		out, err := s.summarize(c.Request.Context(), q)
		if err != nil {
			s.fail(c, err)
			return
		}
		out.Quota = s.quota(ri.key)
		au, ok, err := s.gw.AccountUsage(c.Request.Context(), ri.key)
		if err != nil {
			s.fail(c, err)
			return
		}
		if ok {
			t := au.Month
			out.Account = &accountUsageJSON{ID: au.Account.ID, Name: au.Account.Name, Quota: toQuota(au.Quota),
				Month: toTotals(metering.Row{Requests: t.Requests, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens, Cost: t.Cost})}
		}
		c.JSON(http.StatusOK, out)
	}
}

// adminUsage serves GET /admin/usage: any key (?key_id=) or all, grouped by
// day, model or key; ?format=csv downloads the groups as CSV.
func (s *server) adminUsage() gin.HandlerFunc {
	return func(c *gin.Context) {
		q, err := usageQuery(c, s.now().UTC(), metering.GroupDay, metering.GroupModel, metering.GroupKey, metering.GroupAccount)
		if err != nil {
			s.fail(c, err)
			return
		}
		q.KeyID = c.Query("key_id")
		out, err := s.summarize(c.Request.Context(), q)
		if err != nil {
			s.fail(c, err)
			return
		}
		switch c.DefaultQuery("format", "json") {
		case "json":
			c.JSON(http.StatusOK, out)
		case "csv":
			writeSummaryCSV(c, out)
		default:
			s.fail(c, badRequest("query parameter \"format\" must be json or csv"))
		}
	}
}

// adminExport serves GET /admin/usage/export: one record per request, as a
// streamed CSV or JSON download.
func (s *server) adminExport() gin.HandlerFunc {
	return func(c *gin.Context) {
		q, err := usageQuery(c, s.now().UTC())
		if err != nil {
			s.fail(c, err)
			return
		}
		q.KeyID = c.Query("key_id")
		format := c.DefaultQuery("format", "csv")
		if format != "csv" && format != "json" {
			s.fail(c, badRequest("query parameter \"format\" must be csv or json"))
			return
		}
		c.Header("Content-Disposition", `attachment; filename="tollgate-usage.`+format+`"`)
		if format == "csv" {
			c.Header("Content-Type", "text/csv; charset=utf-8")
		} else {
			c.Header("Content-Type", "application/json")
		}
		c.Status(http.StatusOK)
		w, _ := metering.NewEventWriter(c.Writer, format)
		err = s.usage.ExportEvents(c.Request.Context(), q, w.Write)
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			// Headers are gone; the truncated download is all we can signal.
			s.log.Error("usage export failed", "request_id", info(c).id, "error", err.Error())
		}
	}
}
