package stripemeter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tollgate/billing"
	"tollgate/billing/billingtest"
	"tollgate/billing/stripemeter"
)

const testKey = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

// Against Stripe's own mock server, through a proxy that keeps what Stripe
// would: an event is accepted with its customer, value, identifier and
// time; a resend of its identifier counts as sent; a refusal is an error
// that may be retried; the key never appears in an error.
func TestSendAgainstStripeMock(t *testing.T) {
	proxy, url := billingtest.StartStripe(t)
	s, err := stripemeter.New(stripemeter.Config{Key: testKey, URL: url, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := billing.Event{Identifier: "tg_0123", EventName: "tollgate_tokens", CustomerID: "cus_A", Value: 1234,
		Timestamp: time.Now().Add(-time.Minute).Truncate(time.Second).UTC()}
	if err := s.Send(ctx, ev); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := proxy.Events(); len(got) != 1 || got[0] != ev {
		t.Fatalf("Stripe holds %+v, want %+v", got, ev)
	}
	if err := s.Send(ctx, ev); err != nil {
		t.Fatalf("a resend of an accepted identifier = %v, want nil (already sent)", err)
	}
	if proxy.Duplicates() != 1 || len(proxy.Events()) != 1 {
		t.Fatalf("after a resend: %d events, %d duplicates; want 1 and 1", len(proxy.Events()), proxy.Duplicates())
	}

	proxy.Refuse(1)
	ev2 := ev
	ev2.Identifier = "tg_4567"
	err = s.Send(ctx, ev2)
	var se *billing.SendError
	if !errors.As(err, &se) || se.Status != 500 || se.Permanent {
		t.Fatalf("Send through a refusing Stripe = %#v, want a retryable 500 SendError", err)
	}
	if err := s.Send(ctx, ev2); err != nil || len(proxy.Events()) != 2 {
		t.Fatalf("the retry = %v with %d events, want accepted", err, len(proxy.Events()))
	}

	// A malformed key is refused (the mock, like Stripe, echoes what it
	// got): permanent, and the key is not in the message.
	const badKey = "tollgate-not-a-stripe-key"
	bad, _ := stripemeter.New(stripemeter.Config{Key: badKey, URL: url})
	ev3 := ev
	ev3.Identifier = "tg_89ab"
	err = bad.Send(ctx, ev3)
	if !errors.As(err, &se) || !se.Permanent || se.Status != 401 || strings.Contains(err.Error(), badKey) {
		t.Fatalf("Send with a bad key = %v (%#v); want a permanent 401 without the key", err, se)
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("error %q: the mock echoes the key; want it redacted", err)
	}
}

func TestDuplicateRecognisesStripesRefusal(t *testing.T) {
	for _, c := range []struct {
		status    int
		code, msg string
		want      bool
	}{
		{400, "", "An event already exists with identifier tg_1.", true},
		{400, "duplicate_meter_event", "", true},
		{400, "resource_already_exists", "", true},
		{400, "", "No active meter was found for event_name tollgate_tokens.", false},
		{500, "", "An event already exists with identifier tg_1.", false},
	} {
		if got := stripemeter.Duplicate(c.status, c.code, c.msg); got != c.want {
			t.Errorf("Duplicate(%d, %q, %q) = %v, want %v", c.status, c.code, c.msg, got, c.want)
		}
	}
}

func TestNewRefusesAnEmptyKey(t *testing.T) {
	if _, err := stripemeter.New(stripemeter.Config{Key: " "}); err == nil {
		t.Fatal("New with no key succeeded")
	}
}
