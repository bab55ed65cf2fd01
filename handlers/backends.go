package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"tollgate"
	"tollgate/inference"
)

// Fleet reports the state of the Ollama backends; *inference.Client
// satisfies it.
type Fleet interface {
	Backends() []inference.BackendStatus
	Queued() int
}

// Reloader re-reads the catalog (models.yaml) and puts it in force without
// dropping a request; on error the running catalog is unchanged and the
// error says why (file:line).
type Reloader interface {
	Reload(ctx context.Context) (ReloadSummary, error)
}

// ReloadSummary is what a reload put in force.
type ReloadSummary struct {
	From     string `json:"from"` // where the catalog was read
	Backends int    `json:"backends"`
	Models   int    `json:"models"`
	Tasks    int    `json:"tasks"`
	Plans    int    `json:"plans"`
}

type backendJSON struct {
	Name         string            `json:"name"`
	URL          string            `json:"url"`
	State        string            `json:"state"`
	Since        time.Time         `json:"since"`
	Why          string            `json:"why,omitempty"`
	LoadedModels []loadedModelJSON `json:"loaded_models"`
	InFlight     int               `json:"in_flight"`
	MaxParallel  int               `json:"max_parallel"`
	Weight       int               `json:"weight"`
	Queued       int               `json:"queued"`
	Requests     uint64            `json:"requests"`
	Failures     uint64            `json:"failures"`
	Ejections    uint64            `json:"ejections"`
}

type loadedModelJSON struct {
	Name  string    `json:"name"`
	Until time.Time `json:"until"`
}

type backendList struct {
	Backends []backendJSON `json:"backends"`
	Queued   int           `json:"queued"`
}

// readyBackend is a backend as /readyz shows it (no key needed: no load
// figures).
type readyBackend struct {
	Name  string    `json:"name"`
	State string    `json:"state"`
	Since time.Time `json:"since"`
	Why   string    `json:"why,omitempty"`
}

type reloaded struct {
	Status   string `json:"status"`
	From     string `json:"from"`
	Backends int    `json:"backends"`
	Models   int    `json:"models"`
	Tasks    int    `json:"tasks"`
	Plans    int    `json:"plans"`
}

// listBackends serves GET /admin/backends: each backend's state, load and
// loaded models.
func (s *server) listBackends() gin.HandlerFunc {
	return func(c *gin.Context) {
		out := backendList{Backends: []backendJSON{}}
		if s.fleet != nil {
			for _, b := range s.fleet.Backends() {
				j := backendJSON{Name: b.Name, URL: b.URL, State: b.State, Since: b.Since.UTC(), Why: b.Why,
					LoadedModels: []loadedModelJSON{}, InFlight: b.InFlight, MaxParallel: b.MaxParallel, Weight: b.Weight,
					Queued: b.Queued, Requests: b.Requests, Failures: b.Failures, Ejections: b.Ejections}
				for _, m := range b.Loaded {
					j.LoadedModels = append(j.LoadedModels, loadedModelJSON{Name: m.Name, Until: m.Until.UTC()})
				}
				out.Backends = append(out.Backends, j)
			}
			out.Queued = s.fleet.Queued()
		}
		c.JSON(http.StatusOK, out)
	}
}

// reload serves POST /admin/reload: models.yaml is read again and put in
// force; a broken file is 422 catalog_invalid and the old catalog stays.
func (s *server) reload() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.reloader == nil {
			s.abort(c, tollgate.CodeNotFound, "this server cannot reload its catalog")
			return
		}
		sum, err := s.reloader.Reload(c.Request.Context())
		if err != nil {
			s.log.Warn("reload refused: the running catalog is unchanged", "request_id", info(c).id, "actor", actor(c), "error", err.Error())
			s.abort(c, tollgate.CodeCatalogInvalid, err.Error()+" (the running catalog is unchanged)")
			return
		}
		s.log.Info("audit", "request_id", info(c).id, "actor", actor(c), "action", "reload", "from", sum.From,
			"backends", sum.Backends, "models", sum.Models)
		c.JSON(http.StatusOK, reloaded{Status: "reloaded", From: sum.From, Backends: sum.Backends, Models: sum.Models, Tasks: sum.Tasks, Plans: sum.Plans})
	}
}

// fleetCollector exports each backend's state at scrape time.
type fleetCollector struct {
	fleet                                         Fleet
	up, inflight, capacity, queued, loaded, queue *prometheus.Desc
	requests, failures, ejections                 *prometheus.Desc
}

func newFleetCollector(f Fleet) *fleetCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"backend"}, nil)
	}
	return &fleetCollector{fleet: f,
		up:        d("tollgate_backend_up", "1 when the Ollama backend is up (routed to), 0 when down."),
		inflight:  d("tollgate_backend_inflight_requests", "Calls running on the backend."),
		capacity:  d("tollgate_backend_max_parallel", "Calls the backend runs at once (max_parallel)."),
		queued:    d("tollgate_backend_queued_requests", "Calls waiting for a slot, for a model the backend serves."),
		loaded:    d("tollgate_backend_loaded_models", "Models the backend has loaded (from its /api/ps)."),
		requests:  d("tollgate_backend_requests_total", "Calls sent to the backend."),
		failures:  d("tollgate_backend_failures_total", "Calls that failed on the backend in a way that ejects it (refused, timeout, 5xx, broken)."),
		ejections: d("tollgate_backend_ejections_total", "Times the backend went down."),
		queue:     prometheus.NewDesc("tollgate_queued_requests", "Calls waiting in the fair queue for a GPU.", nil, nil),
	}
}

func (f *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{f.up, f.inflight, f.capacity, f.queued, f.loaded, f.requests, f.failures, f.ejections, f.queue} {
		ch <- d
	}
}

func (f *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range f.fleet.Backends() {
		up := 0.0
		if b.State == inference.StateUp {
			up = 1
		}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, b.Name)
		}
		k := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), b.Name)
		}
		g(f.up, up)
		g(f.inflight, float64(b.InFlight))
		g(f.capacity, float64(b.MaxParallel))
		g(f.queued, float64(b.Queued))
		g(f.loaded, float64(len(b.Loaded)))
		k(f.requests, b.Requests)
		k(f.failures, b.Failures)
		k(f.ejections, b.Ejections)
	}
	ch <- prometheus.MustNewConstMetric(f.queue, prometheus.GaugeValue, float64(f.fleet.Queued()))
}
