package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"tollgate"
	"tollgate/auth"
)

// keysCreate registers create's flags and returns the action.
func keysCreate(fs *flag.FlagSet, getenv func(string) string, now func() time.Time) func(context.Context, *auth.Keys, string) (any, string, error) {
	name := fs.String("name", "", "who or what the key is for (required)")
	scopes := fs.String("scopes", "generate,embed,predict", "comma list of generate, embed, predict, admin")
	models := fs.String("models", "", "comma list of public model names the key may use (empty: all)")
	plan := fs.String("plan", "", "plan from models.yaml whose limits apply")
	account := fs.String("account", "", "id of the subscriber account owning the key (tollgate accounts list)")
	var l auth.Limits
	fs.Float64Var(&l.RequestsPerSecond, "rate", 0, "requests per second (token bucket refill; 0: plan or unlimited)")
	fs.IntVar(&l.Burst, "burst", 0, "token bucket size")
	fs.Int64Var(&l.TokensPerMinute, "tokens-per-minute", 0, "prompt+completion tokens per minute")
	fs.IntVar(&l.MaxConcurrent, "max-concurrent", 0, "requests in flight at once")
	fs.Int64Var(&l.MonthlyTokens, "monthly-tokens", 0, "tokens per calendar month (UTC)")
	fs.Int64Var(&l.MonthlyRequests, "monthly-requests", 0, "requests per calendar month (UTC)")
	fs.Func("monthly-budget", "the most a calendar month's (UTC) requests may cost, in the catalog's currency (e.g. 25.00)", moneyFlag(&l.MonthlyBudget))
	expires := fs.String("expires", "", "expiry: a duration from now (720h) or an RFC 3339 time")
	catalogPath := fs.String("catalog", envOr(getenv, "TOLLGATE_MODELS", "models.yaml"), "models.yaml to check --plan against (env TOLLGATE_MODELS)")
	return func(ctx context.Context, k *auth.Keys, _ string) (any, string, error) {
		spec := auth.Spec{Name: *name, Plan: *plan, Account: *account, Limits: l}
		var err error
		if spec.Scopes, err = auth.ParseScopes(*scopes); err != nil {
			return nil, "", &usageError{"--scopes: " + strings.TrimPrefix(err.Error(), "auth: ")}
		}
		if *models != "" {
			spec.Models = strings.Split(*models, ",")
		}
		if spec.ExpiresAt, err = parseExpiry(*expires, now()); err != nil {
			return nil, "", err
		}
		if *plan != "" {
			if err := checkPlanExists(*plan, *catalogPath, explicitFlag(fs, "catalog", "TOLLGATE_MODELS", getenv), getenv); err != nil {
				return nil, "", err
			}
		}
		key, secret, err := k.Create(ctx, auth.ActorCLI, spec)
		if err != nil {
			return nil, "", err
		}
		text := fmt.Sprintf("%s\n\ncreated %s (%s), scopes %s.\nStore the key now: Tollgate keeps only its hash and cannot show it again.\n",
			secret, key.ID, key.Name, auth.JoinScopes(key.Scopes))
		return secretJSON{ID: key.ID, Key: secret, Info: key}, text, nil
	}
}

// moneyFlag parses a flag's amount into *dst exactly (tollgate.ParseMoney).
func moneyFlag(dst *tollgate.Money) func(string) error {
	return func(s string) error {
		m, err := tollgate.ParseMoney(s)
		if err != nil {
			return err
		}
		*dst = m
		return nil
	}
}

func parseExpiry(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, &usageError{"--expires: the duration must be positive"}
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, &usageError{fmt.Sprintf("--expires %q: want a duration like 720h or an RFC 3339 time like 2027-01-31T00:00:00Z", s)}
	}
	return t, nil
}

func checkPlanExists(plan, path string, explicit bool, getenv func(string) string) error {
	cat, from, err := loadCatalog(path, explicit, getenv)
	if err != nil {
		return err
	}
	if _, ok := cat.Plans[plan]; !ok {
		return &usageError{fmt.Sprintf("--plan: no plan %q in %s", plan, from)}
	}
	return nil
}
