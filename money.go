package tollgate

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"strconv"
	"strings"
)

// MicrosPerUnit is how many micro-units make one unit of the price currency.
const MicrosPerUnit = 1_000_000

// Money is an amount in micro-units: millionths of the catalog's currency.
// Prices, costs, reports and exports all use it, so amounts are exact
// integers everywhere and are printed one way (String).
type Money int64

// Price is what a model charges, in micro-units per 1,000 tokens. A price of
// 0.0002 currency units per 1k tokens is InputPer1K = 200.
type Price struct {
	InputPer1K  Money // per 1,000 prompt (input) tokens
	OutputPer1K Money // per 1,000 completion (output) tokens
}

// Cost returns the price of one request:
//
//	(prompt*InputPer1K + completion*OutputPer1K) / 1000
//
// computed exactly in 128-bit integers and rounded half up once, on the sum
// for the whole request (never per part, so splitting a request's tokens
// between input and output cannot gain or lose a micro-unit). Negative token
// counts or prices count as zero. A result beyond int64 saturates at
// math.MaxInt64.
func (p Price) Cost(prompt, completion int64) Money {
	inHi, inLo := bits.Mul64(nonNeg(prompt), nonNeg(int64(p.InputPer1K)))
	outHi, outLo := bits.Mul64(nonNeg(completion), nonNeg(int64(p.OutputPer1K)))
	lo, carry := bits.Add64(inLo, outLo, 0)
	hi, carry2 := bits.Add64(inHi, outHi, carry)
	lo, carry = bits.Add64(lo, 500, 0) // half up
	hi, carry3 := bits.Add64(hi, 0, carry)
	if carry2 != 0 || carry3 != 0 || hi >= 1000 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 1000)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return Money(q)
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// ParsePrice builds a Price from two decimal texts in currency units per
// 1,000 tokens, as written in models.yaml (for example "0.0002" and
// "0.0006"). See ParseMoney for what is accepted.
func ParsePrice(inputPer1K, outputPer1K string) (Price, error) {
	in, err := ParseMoney(inputPer1K)
	if err != nil {
		return Price{}, fmt.Errorf("input_per_1k: %w", err)
	}
	out, err := ParseMoney(outputPer1K)
	if err != nil {
		return Price{}, fmt.Errorf("output_per_1k: %w", err)
	}
	return Price{InputPer1K: in, OutputPer1K: out}, nil
}

// ParseMoney converts a non-negative decimal amount of currency units into
// micro-units exactly, by reading the decimal text (never through a float):
// "0.0002" is 200, "1" is 1000000, "2.5e-4" is 250. Precision finer than one
// micro-unit is an error ("0.0000001" is rejected, "0.0000010" is 1), as are
// negative amounts, empty text, and amounts beyond int64 micro-units.
func ParseMoney(s string) (Money, error) {
	orig := s
	bad := func(why string) (Money, error) {
		return 0, fmt.Errorf("amount %q: %s", orig, why)
	}
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "+")
	if strings.HasPrefix(s, "-") {
		return bad("must not be negative")
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e < -1000 || e > 1000 {
			return bad("bad exponent")
		}
		mant, exp = s[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" {
		return bad("not a decimal number")
	}
	digits := intPart + frac
	for _, c := range digits {
		if c < '0' || c > '9' {
			return bad("not a decimal number")
		}
	}
	// value = digits * 10^(exp - len(frac)); micros = value * 10^6.
	shift := exp - len(frac) + 6
	digits = strings.TrimLeft(digits, "0")
	for shift < 0 && strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		shift++
	}
	if digits == "" {
		return 0, nil
	}
	if shift < 0 {
		return bad("finer than one micro-unit (6 decimal places)")
	}
	if len(digits)+shift > 19 {
		return bad("too large")
	}
	v, err := strconv.ParseInt(digits+strings.Repeat("0", shift), 10, 64)
	if err != nil {
		return bad("too large")
	}
	return Money(v), nil
}

// MicrosFromFloat converts a number a YAML or JSON decoder already turned
// into a float64 (such as 0.0002) into micro-units. It goes through the
// shortest decimal text that reads back as the same float, which is the text
// that was written in the file for any price of up to 15 significant digits,
// so no binary rounding leaks in. The rules of ParseMoney apply.
func MoneyFromFloat(f float64) (Money, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("amount %v is not a number", f)
	}
	return ParseMoney(strconv.FormatFloat(f, 'g', -1, 64))
}

// String renders m in currency units with exactly six decimals: 342 is
// "0.000342", 1500000 is "1.500000". Every amount Tollgate prints (prices,
// costs, reports, exports) is written this way.
func (m Money) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m) // -MinInt64 wraps to its own magnitude as uint64
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/MicrosPerUnit, u%MicrosPerUnit)
}

// MarshalJSON writes m as String does, in a JSON string ("25.000000"), so
// an amount is never a binary float on the wire.
func (m Money) MarshalJSON() ([]byte, error) {
	return []byte(`"` + m.String() + `"`), nil
}

// UnmarshalJSON reads an amount in currency units, as a JSON string
// ("25.50") or number (25.5), exactly by ParseMoney's rules (a number is
// read from its text, never through a float).
func (m *Money) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	if unq, err := strconv.Unquote(s); err == nil {
		s = unq
	}
	v, err := ParseMoney(s)
	if err != nil {
		// A type error, so the decoder names the field (Field).
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Money]()}
	}
	*m = v
	return nil
}
