package limits

import (
	"math"
	"strconv"
	"time"

	"tollgate"
	"tollgate/metering"
)

// The refusals Admit returns. Messages say what ran out and when to come
// back; a spent quota is Final (retrying cannot fix it before the reset).

// Whose quota a refusal names.
const (
	keyWho     = "this key's"
	accountWho = "this key's account's"
)

func quotaRequests(who string, limit int64, now time.Time, inFlight bool) error {
	return quota(inFlight, who+" monthly request quota ("+itoa(limit)+" requests) is used up"+
		inFlightNote(inFlight)+"; it resets at "+resetAt(now))
}

func quotaTokensUsed(who string, limit int64, now time.Time, inFlight bool) error {
	return quota(inFlight, who+" monthly token quota ("+itoa(limit)+" tokens) is used up"+
		inFlightNote(inFlight)+"; it resets at "+resetAt(now))
}

func quotaTokensShort(who string, need, left int64, now time.Time, inFlight bool) error {
	return quota(inFlight, "this request may use up to "+itoa(need)+" tokens (its prompt plus the template's overhead) but only "+
		itoa(left)+" tokens of "+who+" monthly token quota are left"+inFlightNote(inFlight)+
		"; send a shorter prompt, or wait for the reset at "+resetAt(now))
}

func budgetShort(who string, budget, left, need tollgate.Money, now time.Time, inFlight bool) error {
	var msg string
	if left <= 0 {
		msg = who + " monthly budget (" + budget.String() + ") is spent" + inFlightNote(inFlight) + "; it resets at " + resetAt(now)
	} else {
		msg = "this request may cost up to " + need.String() + " (its prompt and its shortest answer) but only " + left.String() +
			" of " + who + " monthly budget (" + budget.String() + ") is left" + inFlightNote(inFlight) + "; it resets at " + resetAt(now)
	}
	e := &tollgate.Error{Code: tollgate.CodeBudgetExceeded, Final: !inFlight, Message: msg}
	if inFlight {
		e.RetryAfter = time.Second
	}
	return e
}

// quota is a 402. It is Final (x-should-retry: false) unless requests in
// flight hold part of the quota and may give it back: then a retry in a
// second may succeed.
func quota(inFlight bool, msg string) error {
	e := &tollgate.Error{Code: tollgate.CodeQuotaExceeded, Final: !inFlight, Message: msg}
	if inFlight {
		e.RetryAfter = time.Second
	}
	return e
}

func inFlightNote(inFlight bool) string {
	if inFlight {
		return " (counting requests still in flight)"
	}
	return ""
}

func tooManyConcurrent() error {
	return &tollgate.Error{Code: tollgate.CodeTooManyConcurrent, RetryAfter: time.Second,
		Message: "this key already has its maximum number of requests in flight; retry in 1 s or when one finishes"}
}

func tokensPerMinute(wait time.Duration) error {
	return &tollgate.Error{Code: tollgate.CodeTokensPerMinute, RetryAfter: wait,
		Message: "this key used more than its tokens per minute; retry in " + seconds(wait) + " s"}
}

func tokensNeverFit(need, perMinute int64) error {
	return &tollgate.Error{Code: tollgate.CodeTokensPerMinute, Final: true,
		Message: "this request may use up to " + itoa(need) + " tokens (its prompt plus the template's overhead), more than this key's " +
			itoa(perMinute) + " tokens per minute; send a shorter prompt"}
}

func rateLimited(wait time.Duration) error {
	return &tollgate.Error{Code: tollgate.CodeRateLimited, RetryAfter: wait,
		Message: "this key sent requests faster than its rate limit; retry in " + seconds(wait) + " s"}
}

// resetAt is when the monthly quotas covering now reset: the first instant
// of the next UTC month.
func resetAt(now time.Time) string { return metering.NextMonthStart(now).Format(time.RFC3339) }

// seconds rounds d up to whole seconds, at least 1, so a client told to
// retry in that many seconds is never early.
func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// ceilDuration converts seconds to a Duration, rounding up to the next
// millisecond so a caller told to wait is never early. A wait too long for
// a Duration (a huge burst refilling at a low rate) saturates rather than
// wrapping round to a negative one.
func ceilDuration(sec float64) time.Duration {
	if sec <= 0 {
		return 0
	}
	ms := math.Ceil(sec * 1000)
	if ms >= float64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms) * time.Millisecond
}

// tooCostly: a request whose least cost is beyond what the Redis limiter
// reserves exactly (about 9 million currency units).
func tooCostly(need tollgate.Money) error {
	return &tollgate.Error{Code: tollgate.CodeBudgetExceeded, Final: true,
		Message: "this request may cost up to " + need.String() + " (its prompt and its shortest answer), more than a monthly budget can reserve; send a shorter prompt"}
}
