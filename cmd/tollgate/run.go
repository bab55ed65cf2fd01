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

// exitCode is the process's exit status for run's error: 0 for none and for
// help (-h, --help), 2 for a usage error, 1 for anything else.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// report prints run's error on stderr, unless it is none or help, and
// returns the exit code: what main does on the way out.
func report(err error, stderr io.Writer) int {
	code := exitCode(err)
	if code != 0 {
		fmt.Fprintln(stderr, "tollgate:", err)
	}
	return code
}

const topUsage = `usage: tollgate <command> [flags]

commands:
  serve          run the gateway (default flags: --addr 127.0.0.1:8080 --db tollgate.db --models models.yaml)
  keys           create, list, show, revoke and rotate API keys (tollgate keys -h)
  accounts       create, list, show and update subscriber accounts (tollgate accounts -h)
  usage          export usage records (json/csv) or print totals per key (tollgate usage -h)
  check-config   validate models.yaml and reach every Ollama backend
  migrate        copy a SQLite deployment into PostgreSQL, for several replicas (tollgate migrate -h)
  version        print the version

Run "tollgate <command> -h" for a command's flags and the environment
variables they can come from. Flags go before or after arguments; -- ends them.
`

const checkConfigUsage = `usage: tollgate check-config [--models FILE] [--alert-webhook-url URL]

Validates the model catalog and reaches every Ollama backend, without serving.
OLLAMA_HOST (host, host:port or URL) replaces the first backend's URL.
With --alert-webhook-url, also checks it and its signing secret
(TOLLGATE_ALERT_WEBHOOK_SECRET), as serve does at start-up.
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
	case "accounts":
		return accountsCmd(ctx, rest, getenv, now, stdout, stderr)
	case "usage":
		return usageCmd(ctx, rest, getenv, now, stdout, stderr)
	case "check-config":
		return checkConfig(ctx, rest, getenv, now, stdout, stderr)
	case "migrate":
		return migrateCmd(ctx, rest, getenv, now, stdout, stderr)
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

// newFlags returns a flag set that reports errors instead of exiting. Its
// usage is synopsis followed by the flags.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), synopsis)
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses fs's flags wherever they stand in args, before, between
// or after the other arguments, and returns those in order; "--" ends the
// flags. -h or --help anywhere prints fs's usage on stdout and returns
// flag.ErrHelp (exit 0); a mistake prints it on stderr and returns a
// usageError.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	stderr := fs.Output()
	fs.SetOutput(io.Discard) // the flag package's own messages; the error is returned
	defer fs.SetOutput(stderr)
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, err
		}
		if err != nil {
			fs.SetOutput(stderr)
			fs.Usage()
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 || endedByDashes(fs, args[:len(args)-len(rest)]) {
			return append(pos, rest...), nil
		}
		// Parse stopped at an argument: keep it and go on after it.
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// endedByDashes reports whether the flags fs just parsed, consumed, ended
// with the terminator "--" rather than with a flag's value that is "--".
func endedByDashes(fs *flag.FlagSet, consumed []string) bool {
	for i := 0; i < len(consumed); i++ {
		a := consumed[i]
		if a == "--" {
			return true // Parse stops right after a terminator
		}
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
			i++ // its value, whatever it looks like
		}
	}
	return false
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parse is parseArgs for a command that takes no arguments.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	}
	return nil
}

// isHelp reports whether a subcommand's place holds a request for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// envOr returns getenv(name), or def when it is empty.
func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// subcommand picks the subcommand of `tollgate name` from args: it returns
// the subcommand, its synopsis and the remaining args. No subcommand, or an
// unknown one, prints usage to stderr and is a usage error; -h/--help/help
// prints usage to stdout and returns flag.ErrHelp. known lists the valid
// subcommands in words, for the error.
func subcommand(name string, args []string, usage string, synopses map[string]string, known string, stdout, stderr io.Writer) (sub, synopsis string, rest []string, err error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return "", "", nil, &usageError{name + ": no subcommand given (want " + known + ")"}
	}
	sub, rest = args[0], args[1:]
	if isHelp(sub) {
		fmt.Fprint(stdout, usage)
		return "", "", nil, flag.ErrHelp
	}
	synopsis, ok := synopses[sub]
	if !ok {
		fmt.Fprint(stderr, usage)
		return "", "", nil, &usageError{subcommandError(name, sub, known)}
	}
	return sub, synopsis, rest, nil
}
