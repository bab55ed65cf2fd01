package metering

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseDate(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2026-11-01":           time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		"2026-11-01T12:30:00Z": time.Date(2026, 11, 1, 12, 30, 0, 0, time.UTC),
	} {
		if got, err := ParseDate(in); err != nil || !got.Equal(want) {
			t.Errorf("ParseDate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "2026-13-01", "yesterday", "2026-11-01 12:30"} {
		if _, err := ParseDate(bad); err == nil {
			t.Errorf("ParseDate(%q) accepted it", bad)
		}
	}
}

// Dates the store cannot hold (it keeps Unix nanoseconds: years 1678-2262)
// are refused, not wrapped round into a report of nothing.
func TestParseDateRange(t *testing.T) {
	for _, ok := range []string{"1970-01-01", "2200-01-01", "2199-12-31T23:59:59Z", "2200-01-01T01:00:00+01:00"} {
		if _, err := ParseDate(ok); err != nil {
			t.Errorf("ParseDate(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"2300-01-01", "2262-04-12", "9999-12-31T23:59:59Z", "1969-12-31", "0001-01-01", "2200-01-01T00:00:01Z", "2199-12-31T23:00:00-01:30"} {
		_, err := ParseDate(bad)
		var dre *DateRangeError
		if !errors.As(err, &dre) || !strings.Contains(err.Error(), "1970-01-01 and 2200-01-01") {
			t.Errorf("ParseDate(%q) = %v, want a *DateRangeError", bad, err)
		}
	}
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range []Query{{From: far}, {To: far}, {From: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)}} {
		if err := q.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", q)
		}
	}
}
