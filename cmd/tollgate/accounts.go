package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"tollgate"
	"tollgate/auth"
)

const accountsUsage = `usage: tollgate accounts <subcommand> [flags]

subcommands:
  create --name NAME [--stripe-customer cus_...] [--plan P]
         [--monthly-tokens N] [--monthly-requests N] [--monthly-budget 250.00] [--json]
  list [--json]
  show ID [--json]
  update ID [--name NAME] [--stripe-customer cus_...] [--plan P]
         [--monthly-tokens N] [--monthly-requests N] [--monthly-budget 250.00] [--json]

A subscriber account owns keys (tollgate keys create --account ID) and has
monthly quotas shared by all of them, on top of each key's own limits; its
plan's monthly limits apply where it sets none (0). update changes only the
flags given. All work on the database given by --db (env TOLLGATE_DB,
default tollgate.db), which must exist. Servers see a change within 2 s.
Run "tollgate accounts <subcommand> -h" for its flags.
`

var accountsSynopsis = map[string]string{
	"create": "usage: tollgate accounts create --name NAME [flags]\n\nMakes a subscriber account.\n",
	"list":   "usage: tollgate accounts list [--json] [--db FILE]\n\nLists every account.\n",
	"show":   "usage: tollgate accounts show ID [--json] [--db FILE]\n\nShows one account.\n",
	"update": "usage: tollgate accounts update ID [flags]\n\nChanges the fields given by flags.\n",
}

// accountsCmd is `tollgate accounts ...`: subscriber accounts on the
// database. Every change is written to the audit table as actor "cli".
func accountsCmd(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	sub, synopsis, args, err := subcommand("accounts", args, accountsUsage, accountsSynopsis, "create, list, show or update", stdout, stderr)
	if err != nil {
		return err
	}
	fs := newFlags("accounts "+sub, synopsis, stderr)
	var c common
	c.registerDB(fs, getenv)
	asJSON := fs.Bool("json", false, "print JSON")
	var name, stripe, plan *string
	var monthlyTokens, monthlyRequests *int64
	var monthlyBudget tollgate.Money
	catalogPath := new(string)
	if sub == "create" || sub == "update" {
		name = fs.String("name", "", "the subscriber's name")
		stripe = fs.String("stripe-customer", "", "the subscriber's Stripe customer id (cus_...)")
		plan = fs.String("plan", "", "plan from models.yaml whose monthly limits apply where the account sets none")
		monthlyTokens = fs.Int64("monthly-tokens", 0, "tokens per calendar month (UTC) for all the account's keys together")
		monthlyRequests = fs.Int64("monthly-requests", 0, "requests per calendar month (UTC) for all the account's keys together")
		fs.Func("monthly-budget", "the most a calendar month's (UTC) requests of all the account's keys may cost, in the catalog's currency (e.g. 250.00)", moneyFlag(&monthlyBudget))
		catalogPath = fs.String("catalog", envOr(getenv, "TOLLGATE_MODELS", "models.yaml"), "models.yaml to check --plan against (env TOLLGATE_MODELS)")
	}
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	wantID := sub == "show" || sub == "update"
	var id string
	if wantID && len(rest) > 0 {
		id, rest = rest[0], rest[1:]
	}
	switch {
	case len(rest) > 0:
		return &usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	case wantID && id == "":
		return &usageError{"an account id is required (see tollgate accounts list)"}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if plan != nil && *plan != "" {
		if err := checkPlanExists(*plan, *catalogPath, explicitFlag(fs, "catalog", "TOLLGATE_MODELS", getenv), getenv); err != nil {
			return err
		}
	}
	// Creating the first account, like the first key, may be what makes
	// the database (README, "Bill your subscribers", starts with it).
	db, err := openDB(ctx, c.db, sub == "create", stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	m := auth.NewAccounts(db, nil, now)
	var out any
	var text string
	switch sub {
	case "create":
		var a auth.Account
		a, err = m.Create(ctx, auth.ActorCLI, auth.AccountSpec{Name: *name, StripeCustomerID: *stripe, Plan: *plan,
			Limits: auth.Limits{MonthlyTokens: *monthlyTokens, MonthlyRequests: *monthlyRequests, MonthlyBudget: monthlyBudget}})
		out, text = a, fmt.Sprintf("created account %s (%s)\nadd keys with: tollgate keys create --account %s --name NAME\n", a.ID, a.Name, a.ID)
	case "list":
		var list []auth.Account
		list, err = m.List(ctx)
		if list == nil {
			list = []auth.Account{}
		}
		out, text = list, accountTable(list)
	case "show":
		var a auth.Account
		a, err = m.Get(ctx, id)
		out, text = a, accountTable([]auth.Account{a})
	case "update":
		var p auth.AccountPatch
		if set["name"] {
			p.Name = name
		}
		if set["stripe-customer"] {
			p.StripeCustomerID = stripe
		}
		if set["plan"] {
			p.Plan = plan
		}
		if set["monthly-tokens"] || set["monthly-requests"] || set["monthly-budget"] {
			cur, gerr := m.Get(ctx, id)
			if gerr != nil {
				return describeAccountError(gerr, id)
			}
			l := cur.Limits
			if set["monthly-tokens"] {
				l.MonthlyTokens = *monthlyTokens
			}
			if set["monthly-requests"] {
				l.MonthlyRequests = *monthlyRequests
			}
			if set["monthly-budget"] {
				l.MonthlyBudget = monthlyBudget
			}
			p.Limits = &l
		}
		var a auth.Account
		a, err = m.Update(ctx, auth.ActorCLI, id, p)
		out, text = a, accountTable([]auth.Account{a})
	}
	if err != nil {
		return describeAccountError(err, id)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	_, err = io.WriteString(stdout, text)
	return err
}

func describeAccountError(err error, id string) error {
	if errors.Is(err, auth.ErrAccountNotFound) {
		return fmt.Errorf("no account with id %q (see tollgate accounts list)", id)
	}
	var fe *auth.FieldError
	if errors.As(err, &fe) && fe.Field == "stripe_customer_id" {
		return &usageError{"--stripe-customer: " + fe.Reason}
	}
	return describeKeyError(err, id)
}

func accountTable(list []auth.Account) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTRIPE CUSTOMER\tPLAN\tMONTHLY TOKENS\tMONTHLY REQUESTS\tMONTHLY BUDGET\tCREATED")
	for _, a := range list {
		budget := "-"
		if a.Limits.MonthlyBudget > 0 {
			budget = a.Limits.MonthlyBudget.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, orDash(a.StripeCustomerID), orDash(a.Plan),
			orUnset(a.Limits.MonthlyTokens), orUnset(a.Limits.MonthlyRequests), budget, fmtTime(a.CreatedAt))
	}
	tw.Flush()
	return sb.String()
}

func orUnset(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
