package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"tollgate"
	"tollgate/inference"
)

// common holds the flags every command that touches state shares.
type common struct {
	db     string
	models string
}

func (c *common) register(fs *flag.FlagSet, getenv func(string) string) {
	c.registerDB(fs, getenv)
	fs.StringVar(&c.models, "models", envOr(getenv, "TOLLGATE_MODELS", "models.yaml"), "model catalog (env TOLLGATE_MODELS; the built-in default is used when models.yaml is absent)")
}

// registerDB registers only --db (keys commands use --models for a key's
// allowed models).
func (c *common) registerDB(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&c.db, "db", envOr(getenv, "TOLLGATE_DB", "tollgate.db"), "SQLite database file, or a postgres://user:password@host:port/database URL for several replicas (env TOLLGATE_DB)")
}

// loadCatalog reads the catalog: the named file, or the built-in default
// when the default name does not exist. OLLAMA_HOST replaces the first
// backend's URL. The second result says where the catalog came from.
func loadCatalog(path string, explicit bool, getenv func(string) string) (*inference.Catalog, string, error) {
	var (
		cat *inference.Catalog
		err error
	)
	from := path
	if _, statErr := os.Stat(path); errors.Is(statErr, fs.ErrNotExist) && !explicit {
		from = "built-in models.yaml"
		cat, err = inference.Parse(from, tollgate.DefaultModels)
	} else {
		cat, err = inference.LoadFile(path)
	}
	if err != nil {
		return nil, from, err
	}
	if host := getenv("OLLAMA_HOST"); host != "" {
		u, err := inference.ParseOllamaURL(host)
		if err != nil {
			return nil, from, fmt.Errorf("OLLAMA_HOST: %w", err)
		}
		cat.Backends[0].URL = u
		from += " (backend from OLLAMA_HOST)"
	}
	return cat, from, nil
}

// newInferenceClient returns the Ollama client for cat, signing requests
// when OLLAMA_AUTH (read through getenv) says so.
func newInferenceClient(cat *inference.Catalog, getenv func(string) string, opts ...inference.Option) *inference.Client {
	return inference.NewClient(cat, append([]inference.Option{inference.WithAuth(ollamaAuth(getenv))}, opts...)...)
}

// ollamaAuth reads OLLAMA_AUTH as Ollama does (envconfig.Bool): unset or
// empty is false, a boolean is itself, and anything else is true. Quotes and
// spaces around the value are ignored.
func ollamaAuth(getenv func(string) string) bool {
	v := strings.Trim(strings.TrimSpace(getenv("OLLAMA_AUTH")), "\"'")
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

// explicitFlag reports whether name was set on the command line or its
// environment variable is set.
func explicitFlag(fs *flag.FlagSet, name, env string, getenv func(string) string) bool {
	set := getenv(env) != ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// checkConfig validates the catalog, reaches every backend and checks that
// each catalog model is installed in its Ollama. A missing model is an
// error (exit 1): every request for it would fail with model_not_installed.
func checkConfig(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", checkConfigUsage, stderr)
	var c common
	c.register(fs, getenv)
	var a alertFlags
	a.register(fs, getenv)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if err := printAlerts(&a, getenv, stdout); err != nil {
		return err
	}
	cat, from, err := loadCatalog(c.models, explicitFlag(fs, "models", "TOLLGATE_MODELS", getenv), getenv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "catalog %s: %d models, %d tasks, %d plans\n", from, len(cat.Models), len(cat.Tasks), len(cat.Plans))
	h, err := newInferenceClient(cat, getenv).Ping(ctx)
	if err != nil {
		return err
	}
	down := map[string]error{}
	for _, d := range h.Down {
		down[d.Backend.Name] = d.Err
	}
	for _, b := range cat.Backends {
		if err := down[b.Name]; err != nil {
			fmt.Fprintf(stdout, "ollama %s at %s: %v\n", b.Name, b.URL, err)
		} else {
			fmt.Fprintf(stdout, "ollama %s at %s: reachable\n", b.Name, b.URL)
		}
	}
	if len(h.Down) > 0 {
		return h.Down[0].Err
	}
	if len(h.Missing) == 0 {
		fmt.Fprintf(stdout, "models: all %d installed\n", len(h.Serving))
		return nil
	}
	for _, m := range h.Missing {
		fmt.Fprintf(stdout, "model %s: %s is not installed in Ollama %s at %s\n", m.Name, m.Ollama, m.Backend.Name, m.Backend.URL)
	}
	fmt.Fprintln(stdout, "install them with:")
	for _, p := range h.Pulls() {
		fmt.Fprintln(stdout, "  "+p)
	}
	return fmt.Errorf("%d of %d catalog models are not installed in Ollama; requests for them fail with model_not_installed", len(h.Missing), len(cat.Models))
}
