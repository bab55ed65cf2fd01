// Package jobs runs inference requests asynchronously: a client submits a
// request for one of the native endpoints, gets a job id at once, and reads
// the result later (GET /jobs/{id}) or has it POSTed to a callback URL,
// signed per Standard Webhooks.
//
// Jobs are durable: they live in the database (Store), and a worker claims
// one with an atomic UPDATE ... WHERE status='queued', so no two workers (or
// instances) run the same job. Each run has its own gateway request id,
// recorded on the job before the run starts, and that id is the id of the
// run's usage row. A run holds a lease (JobTimeout plus a margin); a job
// still "running" after its lease belongs to a process that died. Recover
// then looks the run's request id up in the usage table: a successful
// (billed) usage row means the work was done and billed but its result was
// lost in the crash, so the job fails with "interrupted after billing" and
// is never run (or billed) again; otherwise the job is queued again, once.
// A second interruption fails it. A re-run gets a new request id, so a
// zero-token usage row left by the interrupted run (a 499) never hides the
// re-run's bill.
//
// The package imports no HTTP server types: the worker calls the gateway
// through a Runner, which the native surface provides so that a job's
// result is the same body the synchronous call returns.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/gateway"
)

// Status is a job's state.
type Status string

// The statuses. queued and running are open; the others final.
const (
	Queued    Status = "queued"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
	Cancelled Status = "cancelled"
)

// Final reports whether s is a final status.
func (s Status) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Delivery states of a job's callback.
const (
	DeliveryNone      = ""          // no callback_url
	DeliveryWaiting   = "waiting"   // the job has not finished yet
	DeliveryPending   = "pending"   // due at NextDeliveryAt
	DeliveryDelivered = "delivered" // a 2xx ended it
	DeliveryGaveUp    = "failed"    // every attempt failed
)

// Endpoints a job may call.
var Endpoints = []string{"generate", "embed", "predict"}

// ErrNotFound: no such job, or not one the caller may see.
var ErrNotFound = errors.New("jobs: not found")

// Job is one async job as stored.
type Job struct {
	ID          string
	KeyID       string
	Endpoint    string
	Request     json.RawMessage
	CallbackURL string
	Status      Status
	// RequestID is the gateway request id of the current (or last) run:
	// the id of its usage row. Attempt numbers the runs.
	RequestID string
	Attempt   int
	// Retries counts runs put back because admission refused them (429 or
	// 503); Recovered whether a crash has already put it back once.
	Retries   int
	Recovered bool
	RunAfter  time.Time
	Owner     string // the current run's token; "" when not running
	// LeaseUntil: a run still "running" after it was interrupted.
	LeaseUntil      time.Time
	Result          json.RawMessage
	Error           *ErrorInfo
	CancelRequested bool
	CreatedAt       time.Time
	StartedAt       time.Time
	FinishedAt      time.Time

	Delivery       string // one of the Delivery* states
	NextDeliveryAt time.Time
	Deliveries     []Attempt
}

// ErrorInfo is a failed job's error, in the native error envelope's terms.
type ErrorInfo struct {
	Code      tollgate.Code `json:"code"`
	Message   string        `json:"message"`
	RequestID string        `json:"request_id,omitempty"`
}

// Attempt is one callback delivery attempt.
type Attempt struct {
	At     time.Time `json:"at"`
	Status int       `json:"status,omitempty"` // the receiver's HTTP status; 0 if none
	Error  string    `json:"error,omitempty"`
}

// Finish is how a run ended, for Store.FinishJob.
type Finish struct {
	Status   Status
	Result   json.RawMessage
	Error    *ErrorInfo
	At       time.Time
	Delivery string // DeliveryPending if the job has a callback, else ""
}

// Store keeps jobs durably; *sqlite.DB and *postgres.DB (package storage) satisfy it. Methods taking an
// owner change a job only while that owner's run holds it (fencing: a run
// that outlived its lease cannot overwrite its successor).
type Store interface {
	InsertJob(ctx context.Context, j Job) error
	// Job returns a job with its delivery attempts, or ErrNotFound.
	Job(ctx context.Context, id string) (Job, error)
	// ClaimJob atomically takes the oldest queued job due at now: status
	// running, Attempt+1, RequestID = ID + "-" + Attempt, the owner and
	// lease. ok false when none is due.
	ClaimJob(ctx context.Context, now time.Time, owner string, leaseUntil time.Time) (j Job, ok bool, err error)
	FinishJob(ctx context.Context, id, owner string, f Finish) (bool, error)
	// RequeueJob puts a running job back in the queue, due at runAfter.
	RequeueJob(ctx context.Context, id, owner string, runAfter time.Time, retries int, recovered bool) (bool, error)
	// CancelJob cancels a queued job (status cancelled, delivery pending if
	// it has a callback) or marks a running one cancel-requested, and
	// returns the job as it now is.
	CancelJob(ctx context.Context, id string, now time.Time) (Job, error)
	// Expired lists running jobs whose lease ended before now.
	Expired(ctx context.Context, now time.Time) ([]Job, error)
	// Billed reports whether a successful usage row has requestID.
	Billed(ctx context.Context, requestID string) (bool, error)
	// ClaimDelivery takes the oldest pending delivery due at now and moves
	// its NextDeliveryAt to leaseUntil (so a crash mid-delivery retries).
	ClaimDelivery(ctx context.Context, now, leaseUntil time.Time) (j Job, ok bool, err error)
	// RecordDelivery appends an attempt and sets the delivery state and the
	// next attempt's time.
	RecordDelivery(ctx context.Context, id string, a Attempt, state string, next time.Time) error
	// PurgeJobs deletes final jobs finished before before, whose callback
	// is not still pending.
	PurgeJobs(ctx context.Context, before time.Time) (int, error)
	WebhookSecret(ctx context.Context, keyID string) (string, error) // "" if none
	SetWebhookSecret(ctx context.Context, keyID, secret string, at time.Time) error
}

// KeyStore reads keys at run time; *sqlite.DB and *postgres.DB (package storage) satisfy it.
type KeyStore interface {
	KeyByID(ctx context.Context, id string) (auth.Key, error)
}

// Runner makes the gateway call for a job: it decodes request as the
// endpoint's native request, calls the gateway with c and returns the body
// the synchronous call would have answered with.
type Runner func(ctx context.Context, c gateway.Caller, endpoint string, request json.RawMessage) (json.RawMessage, error)

// newID returns prefix + 24 hex digits from crypto/rand.
func newID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return prefix + hex.EncodeToString(b[:])
}

// errorInfo describes err for a failed job.
func errorInfo(err error, requestID string) *ErrorInfo {
	return &ErrorInfo{Code: tollgate.ErrorCode(err), Message: tollgate.ErrorMessage(err), RequestID: requestID}
}

// View is a job as GET /jobs/{id} shows it and as its callback carries it.
type View struct {
	ID          string          `json:"id"`
	Object      string          `json:"object"` // "job"
	Endpoint    string          `json:"endpoint"`
	Status      Status          `json:"status"`
	StatusURL   string          `json:"status_url"`
	RequestID   string          `json:"request_id,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       *ErrorInfo      `json:"error,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Delivery    *DeliveryView   `json:"delivery,omitempty"`
}

// DeliveryView is a callback's state and attempts so far.
type DeliveryView struct {
	State    string     `json:"state"`
	Attempts []Attempt  `json:"attempts"`
	NextAt   *time.Time `json:"next_attempt_at,omitempty"`
}

// StatusURL is where a job's status is read.
func StatusURL(id string) string { return "/jobs/" + id }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// View renders j. withDelivery adds the callback's attempts (GET does; a
// callback body does not, so that every retry carries the same bytes).
func (j Job) View(withDelivery bool) View {
	v := View{ID: j.ID, Object: "job", Endpoint: j.Endpoint, Status: j.Status, StatusURL: StatusURL(j.ID),
		RequestID: j.RequestID, Error: j.Error, CreatedAt: j.CreatedAt.UTC(),
		StartedAt: timePtr(j.StartedAt), FinishedAt: timePtr(j.FinishedAt), CallbackURL: j.CallbackURL}
	if j.Status == Succeeded {
		v.Result = j.Result
	}
	if withDelivery && j.CallbackURL != "" {
		d := &DeliveryView{State: j.Delivery, Attempts: j.Deliveries}
		if d.Attempts == nil {
			d.Attempts = []Attempt{}
		}
		if j.Delivery == DeliveryPending {
			d.NextAt = timePtr(j.NextDeliveryAt)
		}
		v.Delivery = d
	}
	return v
}
