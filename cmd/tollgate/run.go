package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError is a mistake on the command line; it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const topUsage = `usage: tollgate <command> [flags]

commands:
  serve          run the gateway (default flags: --addr 127.0.0.1:8080 --db tollgate.db --models models.yaml)
  keys           create, list, show, revoke and rotate API keys (tollgate keys -h)
  usage          export usage records (json/csv) or print totals per key (tollgate usage -h)
  check-config   validate models.yaml and reach every Ollama backend
  version        print the version

Run "tollgate <command> -h" for a command's flags.
`

// run is the whole program: it parses args, reads the environment only
// through getenv, the time only through now, and writes only to stdout and
// stderr.
func run(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return &usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, getenv, now, stdout, stderr)
	case "keys":
		return keysCmd(ctx, rest, getenv, now, stdout, stderr)
	case "usage":
		return usageCmd(ctx, rest, getenv, now, stdout, stderr)
	case "check-config":
		return checkConfig(ctx, rest, getenv, now, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tollgate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
		return nil
	}
	fmt.Fprint(stderr, topUsage)
	return &usageError{fmt.Sprintf("unknown command %q", strings.TrimSpace(cmd))}
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args and turns flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// envOr returns getenv(name), or def when it is empty.
func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
