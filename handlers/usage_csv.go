package handlers

import (
	"encoding/csv"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

// writeSummaryCSV writes usage groups (or the single total) as CSV.
func writeSummaryCSV(c *gin.Context, out usageResponse) {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", `attachment; filename="tollgate-usage-summary.csv"`)
	c.Status(http.StatusOK)
	w := csv.NewWriter(c.Writer)
	_ = w.Write([]string{"group", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "cost_micros"})
	rows := out.Groups
	if out.GroupBy == "" {
		rows = []groupJSON{{Group: "total", totalsJSON: out.Totals}}
	}
	for _, g := range rows {
		_ = w.Write([]string{csvSafe(g.Group), itoa(g.Requests), itoa(g.PromptTokens), itoa(g.CompletionTokens),
			itoa(g.TotalTokens), g.Cost, itoa(g.CostMicros)})
	}
	w.Flush()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// csvSafe keeps a spreadsheet from running a cell as a formula.
func csvSafe(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}
