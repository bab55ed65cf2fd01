package tollgate

import (
	"encoding/json"
	"math"
	"testing"
)

func TestParseMoney(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Money
	}{
		{"0", 0},
		{"0.0002", 200},
		{"0.0006", 600},
		{"1", 1_000_000},
		{"1.", 1_000_000},
		{".5", 500_000},
		{"+2.25", 2_250_000},
		{" 0.000001 ", 1},
		{"0.0000010", 1},
		{"0.000001000000", 1},
		{"2e-4", 200},
		{"2.5E-4", 250},
		{"1e+2", 100_000_000},
		{"0e-99", 0},
		{"0.00000", 0},
		{"9223372036854.775807", math.MaxInt64},
	} {
		got, err := ParseMoney(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMoney(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseMoneyRejects(t *testing.T) {
	for _, in := range []string{
		"", ".", "-0.1", "abc", "0x10", "1,5", "1.2.3", "1e", "e5", "1e9999",
		"0.0000001", "0.00000015", "1e-7", "NaN", "Inf",
		"9223372036854.775808", "99999999999999999999",
	} {
		if got, err := ParseMoney(in); err == nil {
			t.Errorf("ParseMoney(%q) = %d, want an error", in, got)
		}
	}
}

func TestMoneyFromFloat(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want Money
	}{
		{0.0002, 200}, {0.0006, 600}, {0.3, 300_000}, {1.5, 1_500_000}, {0, 0}, {2.5e-4, 250},
	} {
		got, err := MoneyFromFloat(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("MoneyFromFloat(%v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	tenth := 0.1
	drift := tenth + 0.2 // 0.30000000000000004 at run time: finer than a micro-unit
	for _, f := range []float64{math.NaN(), math.Inf(1), -0.5, drift} {
		if _, err := MoneyFromFloat(f); err == nil {
			t.Errorf("MoneyFromFloat(%v) succeeded", f)
		}
	}
}

func TestParsePrice(t *testing.T) {
	p, err := ParsePrice("0.0002", "0.0006")
	if err != nil || p != (Price{InputPer1K: 200, OutputPer1K: 600}) {
		t.Fatalf("ParsePrice = %+v, %v", p, err)
	}
	if _, err := ParsePrice("0.0002", "x"); err == nil {
		t.Fatal("bad output price accepted")
	}
	if _, err := ParsePrice("-1", "0"); err == nil {
		t.Fatal("negative input price accepted")
	}
}

func TestPriceCost(t *testing.T) {
	llama := Price{InputPer1K: 200, OutputPer1K: 600} // 0.0002 / 0.0006 per 1k
	for _, tc := range []struct {
		name               string
		p                  Price
		prompt, completion int64
		want               Money
	}{
		{"zero", llama, 0, 0, 0},
		{"exact thousands", llama, 1000, 1000, 800},
		{"typical", llama, 123, 456, 298},                     // 24.6 + 273.6 = 298.2 -> 298
		{"half rounds up", llama, 0, 5, 3},                    // 3.0 -> 3
		{"just below half", Price{1, 0}, 499, 0, 0},           // 0.499 -> 0
		{"exactly half", Price{1, 0}, 500, 0, 1},              // 0.5 -> 1
		{"rounded once on the sum", Price{1, 1}, 400, 400, 1}, // 0.4+0.4 = 0.8 -> 1, not 0+0
		{"free model", Price{}, 1 << 40, 1 << 40, 0},
		{"negative counts as zero", llama, -5, 1000, 600},
		{"large", Price{InputPer1K: 1_000_000, OutputPer1K: 1_000_000}, 1 << 40, 1 << 40, 2 << 40 * 1000},
		{"saturates", Price{InputPer1K: math.MaxInt64, OutputPer1K: math.MaxInt64}, math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{"just fits", Price{InputPer1K: 1000}, math.MaxInt64, 0, math.MaxInt64},
	} {
		if got := tc.p.Cost(tc.prompt, tc.completion); got != tc.want {
			t.Errorf("%s: %+v.Cost(%d, %d) = %d, want %d", tc.name, tc.p, tc.prompt, tc.completion, got, tc.want)
		}
	}
}

func TestMoneyString(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0.000000"}, {342, "0.000342"}, {1_500_000, "1.500000"}, {-7, "-0.000007"},
		{math.MaxInt64, "9223372036854.775807"}, {math.MinInt64, "-9223372036854.775808"},
	} {
		if got := Money(tc.in).String(); got != tc.want {
			t.Errorf("Money(%d).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
	// String and ParseMoney agree.
	for _, m := range []Money{0, 1, 342, 999_999, 1_000_000, 123_456_789} {
		back, err := ParseMoney(m.String())
		if err != nil || back != m {
			t.Errorf("round trip %d -> %q -> %d, %v", m, m.String(), back, err)
		}
	}
}

func TestMoneyJSON(t *testing.T) {
	var l Limits
	for in, want := range map[string]Money{`"25.5"`: 25_500_000, `25.5`: 25_500_000, `0.000001`: 1, `"0"`: 0, `null`: 0} {
		l.MonthlyBudget = 0
		if err := json.Unmarshal([]byte(`{"monthly_budget":`+in+`}`), &l); err != nil || l.MonthlyBudget != want {
			t.Errorf("monthly_budget %s = %d, %v; want %d", in, l.MonthlyBudget, err, want)
		}
	}
	for _, bad := range []string{`"-1"`, `-1`, `0.0000001`, `"x"`, `true`} {
		if err := json.Unmarshal([]byte(`{"monthly_budget":`+bad+`}`), &l); err == nil {
			t.Errorf("monthly_budget %s accepted", bad)
		}
	}
	b, err := json.Marshal(Limits{MonthlyBudget: 25_500_000})
	if err != nil || string(b) != `{"monthly_budget":"25.500000"}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
	if b, _ := json.Marshal(Limits{}); string(b) != `{}` {
		t.Errorf("Marshal of no budget = %s, want {}", b)
	}
}
