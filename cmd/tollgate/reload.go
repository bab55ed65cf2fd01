package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"tollgate/handlers"
	"tollgate/inference"
)

// reloader re-reads the catalog from where serve read it (with OLLAMA_HOST
// applied again) and hands it to the inference client, which keeps the
// calls in flight. A catalog that does not parse changes nothing.
type reloader struct {
	path     string
	explicit bool
	getenv   func(string) string
	inf      *inference.Client
	log      *slog.Logger
	mu       sync.Mutex // one reload at a time
}

// Reload reads and installs the catalog; it satisfies handlers.Reloader.
func (r *reloader) Reload(context.Context) (handlers.ReloadSummary, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cat, from, err := loadCatalog(r.path, r.explicit, r.getenv)
	if err != nil {
		r.log.Error("catalog not reloaded: the running one stays", "error", err.Error())
		return handlers.ReloadSummary{}, err
	}
	r.inf.Reload(cat)
	sum := handlers.ReloadSummary{From: from, Backends: len(cat.Backends), Models: len(cat.Models), Tasks: len(cat.Tasks), Plans: len(cat.Plans)}
	r.log.Info("catalog reloaded", "catalog", from, "ollama", backendURLs(cat), "models", sum.Models, "tasks", sum.Tasks, "plans", sum.Plans)
	return sum, nil
}

// onSIGHUP reloads the catalog on every SIGHUP until ctx ends or the
// returned stop is called.
func (r *reloader) onSIGHUP(ctx context.Context) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var once sync.Once
	go func() {
		for {
			select {
			case <-hup:
				r.log.Info("SIGHUP: reloading the catalog")
				_, _ = r.Reload(ctx)
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() {
		once.Do(func() {
			signal.Stop(hup)
			close(done)
		})
	}
}

// backendURLs lists the catalog's backend addresses, for the log.
func backendURLs(cat *inference.Catalog) string {
	urls := make([]string, len(cat.Backends))
	for i, b := range cat.Backends {
		urls[i] = b.URL
	}
	return strings.Join(urls, ",")
}
