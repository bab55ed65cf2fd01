package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"
	"tollgate/auth/redisnotify"
	"tollgate/webhook"

	"tollgate/auth"
	"tollgate/storage"
)

const keysUsage = `usage: tollgate keys <subcommand> [flags]

subcommands:
  create --name NAME [--scopes generate,embed,predict,admin] [--models m1,m2] [--plan P] [--account ID]
         [--rate R] [--burst B] [--tokens-per-minute N] [--max-concurrent N]
         [--monthly-tokens N] [--monthly-requests N] [--monthly-budget 25.00]
         [--expires 720h|RFC3339] [--json]
  list [--json]
  show ID [--json]
  revoke ID [--json]
  rotate ID [--grace 24h] [--json]

Flags go before or after ID; -- ends them. All work on the database given by
--db (env TOLLGATE_DB, default tollgate.db), named on stderr. It must exist,
except for create, which makes it when it does not (the first key).
With --redis (env TOLLGATE_REDIS) a change reaches the replicas sharing
that Redis at once; without it, within their 10 s key cache.
A created or rotated key is printed once; Tollgate keeps only its SHA-256.
Run "tollgate keys <subcommand> -h" for its flags.
`

// keysSynopsis is each subcommand's first lines of -h.
var keysSynopsis = map[string]string{
	"create": "usage: tollgate keys create --name NAME [flags]\n\nMakes a key and prints it once. Creates the database file if it does not exist.\n",
	"list":   "usage: tollgate keys list [--json] [--db FILE]\n\nLists every key (never a secret or a hash).\n",
	"show":   "usage: tollgate keys show ID [--json] [--db FILE]\n\nShows one key (never a secret or a hash).\n",
	"revoke": "usage: tollgate keys revoke ID [--json] [--db FILE]\n\nRevokes a key: servers on the same PostgreSQL database refuse it within a second (LISTEN/NOTIFY); a server on the same SQLite file within 10 seconds.\n",
	"rotate": "usage: tollgate keys rotate ID [--grace 24h] [--json] [--db FILE]\n\nGives a key a new secret, printed once; the old one works for the grace period.\n",
}

// keysCmd is `tollgate keys ...`, the operator's key management on the
// database file. Every change is written to the audit table as actor "cli".
func keysCmd(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	sub, synopsis, args, err := subcommand("keys", args, keysUsage, keysSynopsis, "create, list, show, revoke or rotate", stdout, stderr)
	if err != nil {
		return err
	}
	fs := newFlags("keys "+sub, synopsis, stderr)
	var c common
	c.registerDB(fs, getenv)
	redisURL := fs.String("redis", getenv("TOLLGATE_REDIS"), "tell the replicas sharing this Redis about the change at once (env TOLLGATE_REDIS)")
	asJSON := fs.Bool("json", false, "print JSON")
	var run func(context.Context, *auth.Keys, string) (any, string, error)
	switch sub {
	case "create":
		run = keysCreate(fs, getenv, now)
	case "list":
		run = func(ctx context.Context, k *auth.Keys, _ string) (any, string, error) {
			keys, err := k.List(ctx)
			if keys == nil {
				keys = []auth.Key{}
			}
			return keys, keyTable(keys, now()), err
		}
	case "show":
		run = func(ctx context.Context, k *auth.Keys, id string) (any, string, error) {
			key, err := k.Get(ctx, id)
			return key, keyTable([]auth.Key{key}, now()), err
		}
	case "revoke":
		run = func(ctx context.Context, k *auth.Keys, id string) (any, string, error) {
			key, err := k.Revoke(ctx, auth.ActorCLI, id)
			return key, "revoked " + key.ID + " (" + key.Name + ")\n", err
		}
	case "rotate":
		grace := fs.Duration("grace", 24*time.Hour, "how long the old key keeps working (0s: not at all)")
		run = func(ctx context.Context, k *auth.Keys, id string) (any, string, error) {
			key, secret, err := k.Rotate(ctx, auth.ActorCLI, id, *grace)
			text := fmt.Sprintf("%s\n\nnew key for %s (%s); the one it replaces works until %s, any older one has stopped.\nStore it now: it cannot be shown again.\n",
				secret, key.ID, key.Name, now().Add(*grace).UTC().Format(time.RFC3339))
			return secretJSON{Key: secret, ID: key.ID, Info: key}, text, err
		}
	}
	id, err := parseWithID(fs, args, sub == "show" || sub == "revoke" || sub == "rotate", stdout)
	if err != nil {
		return err
	}
	var store auth.KeyStore
	if sub == "create" {
		s := &openOnCreate{path: c.db, stderr: stderr}
		defer s.close()
		store = s
	} else {
		db, err := openDB(ctx, c.db, false, stderr)
		if err != nil {
			return err
		}
		defer db.Close()
		store = db
	}
	keys := auth.NewKeys(store, nil, now)
	if *redisURL != "" {
		rdb, err := openRedis(*redisURL)
		if err != nil {
			return err
		}
		defer rdb.Close()
		keys.NotifyChanges(redisnotify.New(rdb, nil, redisnotify.Options{Logger: slog.New(slog.NewTextHandler(stderr, nil))}))
	}
	out, text, err := run(ctx, keys, id)
	if s, ok := store.(*openOnCreate); ok && err == nil {
		out, text, err = withWebhookSecret(ctx, s, out, text, now())
	}
	if err != nil {
		return describeKeyError(err, id)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// subcommandError says what is wrong with sub, which is not one of cmd's
// subcommands (named in subs).
func subcommandError(cmd, sub, subs string) string {
	if strings.HasPrefix(sub, "-") {
		return fmt.Sprintf("%s: the subcommand (%s) comes before flags such as %s", cmd, subs, sub)
	}
	return fmt.Sprintf("%s: unknown subcommand %q (want %s)", cmd, sub, subs)
}

// openOnCreate is keys create's store: it opens the database, making the
// file if there is none, only once the manager has validated the new key and
// stores it, so a mistake on the command line leaves no new file behind.
// Create calls nothing but CreateKey; the embedded KeyStore stays nil.
type openOnCreate struct {
	auth.KeyStore
	auth.AccountStore
	path   string
	stderr io.Writer
	db     storage.Store
}

func (s *openOnCreate) CreateKey(ctx context.Context, k auth.Key, sec auth.StoredSecret, a auth.AuditEntry) error {
	if s.db == nil {
		db, err := openDB(ctx, s.path, true, s.stderr)
		if err != nil {
			return err
		}
		s.db = db
	}
	return s.db.CreateKey(ctx, k, sec, a)
}

// AccountByID checks --account: the database must then exist already (an
// account lives in it), and stays open for CreateKey.
func (s *openOnCreate) AccountByID(ctx context.Context, id string) (auth.Account, error) {
	if s.db == nil {
		db, err := openDB(ctx, s.path, false, s.stderr)
		if err != nil {
			return auth.Account{}, err
		}
		s.db = db
	}
	return s.db.AccountByID(ctx, id)
}

// SetWebhookSecret stores the new key's webhook signing secret.
func (s *openOnCreate) SetWebhookSecret(ctx context.Context, keyID, secret string, at time.Time) error {
	if s.db == nil {
		return errors.New("keys create: the database is not open")
	}
	return s.db.SetWebhookSecret(ctx, keyID, secret, at)
}

// withWebhookSecret gives a created key its signing secret for job
// callbacks and adds it to the output: shown once, like the key.
func withWebhookSecret(ctx context.Context, s *openOnCreate, out any, text string, now time.Time) (any, string, error) {
	created, ok := out.(secretJSON)
	if !ok || s.db == nil {
		return out, text, nil
	}
	created.WebhookSecret = webhook.NewSecret()
	if err := s.db.SetWebhookSecret(ctx, created.ID, created.WebhookSecret, now); err != nil {
		return nil, "", err
	}
	return created, text + "\nWebhook signing secret for this key's job callbacks (also shown only now):\n" + created.WebhookSecret + "\n", nil
}

func (s *openOnCreate) close() {
	if s.db != nil {
		s.db.Close()
	}
}

// secretJSON is what create and rotate print with --json.
type secretJSON struct {
	ID            string   `json:"id"`
	Key           string   `json:"key"`
	WebhookSecret string   `json:"webhook_secret,omitempty"` // create only
	Info          auth.Key `json:"info"`
}

// parseWithID parses flags and, when wantID, exactly one key id among them.
func parseWithID(fs *flag.FlagSet, args []string, wantID bool, stdout io.Writer) (string, error) {
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return "", err
	}
	var id string
	if wantID && len(rest) > 0 {
		id, rest = rest[0], rest[1:]
	}
	switch {
	case len(rest) > 0:
		return "", &usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	case wantID && id == "":
		return "", &usageError{"a key id is required (see tollgate keys list)"}
	}
	return id, nil
}

func describeKeyError(err error, id string) error {
	var fe *auth.FieldError
	switch {
	case errors.As(err, &fe) && fe.Field == "account_id":
		return &usageError{"--account: " + fe.Reason}
	case errors.As(err, &fe):
		return &usageError{fmt.Sprintf("--%s: %s", strings.ReplaceAll(fe.Field, "_", "-"), fe.Reason)}
	case errors.Is(err, auth.ErrNotFound):
		return fmt.Errorf("no key with id %q (see tollgate keys list)", id)
	case errors.Is(err, auth.ErrRevoked):
		return fmt.Errorf("key %s is revoked and cannot be rotated", id)
	}
	return err
}

func keyTable(keys []auth.Key, now time.Time) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSCOPES\tMODELS\tPLAN\tACCOUNT\tSTATUS\tLAST USED\tCREATED")
	for _, k := range keys {
		status := "active"
		if err := k.Usable(now); err != nil {
			status = strings.TrimPrefix(err.Error(), "auth: key ")
		}
		models := strings.Join(k.Models, ",")
		if models == "" {
			models = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s…\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Prefix, auth.JoinScopes(k.Scopes), models,
			orDash(k.Plan), orDash(k.AccountID), status, fmtTime(k.LastUsedAt), fmtTime(k.CreatedAt))
	}
	tw.Flush()
	return sb.String()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
