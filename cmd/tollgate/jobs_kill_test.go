package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tollgate/inference/ollamatest"
)

// A process SIGKILLed with one job running and one queued: after a restart
// on the same database both jobs succeed, each billed exactly once.

// jobView is the part of GET /jobs/{id} this test reads.
type jobView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	RequestID string `json:"request_id"`
	Result    *struct {
		ID   string `json:"id"`
		Text string `json:"text"`
	} `json:"result"`
	Error json.RawMessage `json:"error"`
}

func getJobView(t *testing.T, p *proc, key, id string) jobView {
	t.Helper()
	var v jobView
	wantStatus(t, "GET /jobs/"+id, send(t, nil, "GET", p.url+"/jobs/"+id, "", withKey(key)), http.StatusOK, &v)
	return v
}

func submitJob(t *testing.T, p *proc, key, prompt string) string {
	t.Helper()
	var acc struct{ ID string }
	body := `{"endpoint":"generate","request":{"model":"tiny","prompt":"` + prompt + `"}}`
	wantStatus(t, "POST /jobs", send(t, nil, "POST", p.url+"/jobs", body, withKey(key)), http.StatusAccepted, &acc)
	if acc.ID == "" {
		t.Fatal("POST /jobs: no job id")
	}
	return acc.ID
}

func TestSIGKILLWithRunningAndQueuedJobs(t *testing.T) {
	start := time.Now()
	hold := make(chan struct{})
	fake := newFake(t, ollamatest.WithFault(ollamatest.Fault{Hold: hold}))
	db := filepath.Join(t.TempDir(), "t.db")
	// One worker: the second job stays queued behind the held first. The
	// killed run's lease is --job-timeout + --record-timeout + 5 s: the
	// restarted process re-queues it about 8 s after its claim.
	flags := []string{"--job-workers", "1", "--job-timeout", "2s", "--record-timeout", "1s"}
	p := startBinaryOn(t, fake, db, flags...)
	keyID, key := createKeyWithID(t, db, "--name", "jobs")

	running := submitJob(t, p, key, "first")
	var killedRun string // the interrupted run's request id
	eventually(t, 5*time.Second, "first job running with its call held at Ollama", func() bool {
		v := getJobView(t, p, key, running)
		killedRun = v.RequestID
		return v.Status == "running" && fake.Stats().InFlight == 1
	})
	queued := submitJob(t, p, key, "second")
	if v := getJobView(t, p, key, queued); v.Status != "queued" {
		t.Fatalf("second job is %s with the only worker busy, want queued", v.Status)
	}
	if v := getJobView(t, p, key, running); v.Status != "running" || fake.Stats().InFlight != 1 {
		t.Fatalf("first job %s, %d calls at Ollama before the kill", v.Status, fake.Stats().InFlight)
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := p.wait(t, 10*time.Second)
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("tollgate exited with %v, not by SIGKILL", err)
	}
	close(hold)

	p2 := startBinaryOn(t, fake, db, flags...)
	views := map[string]jobView{}
	eventually(t, 20*time.Second, "both jobs finished after the restart", func() bool {
		for _, id := range []string{running, queued} {
			views[id] = getJobView(t, p2, key, id)
		}
		return views[running].Status != "running" && views[running].Status != "queued" &&
			views[queued].Status != "running" && views[queued].Status != "queued"
	})

	billed := map[string]bool{}
	for _, id := range []string{running, queued} {
		v := views[id]
		if v.Status != "succeeded" || v.Result == nil || v.Result.Text == "" || v.Result.ID != v.RequestID {
			t.Errorf("job %s: status %s, request id %s, result %+v, error %s; want succeeded with its run's result",
				id, v.Status, v.RequestID, v.Result, v.Error)
		}
		billed[v.RequestID] = true
	}
	if r := views[running].RequestID; r == killedRun || r != running+"-2" {
		t.Errorf("the killed job's final run is %s (the killed run was %s); want %s-2", r, killedRun, running)
	}
	if r := views[queued].RequestID; r != queued+"-1" {
		t.Errorf("the queued job's run is %s, want %s-1", r, queued)
	}

	rows := exportUsage(t, db)
	n := 0
	for id, r := range rows {
		if r.Status != 200 {
			t.Logf("unbilled usage row %s: status %d, %d tokens", id, r.Status, r.TotalTokens)
			if r.TotalTokens != 0 || r.CostMicros != 0 {
				t.Errorf("usage row %s has status %d but %d tokens, cost %d", id, r.Status, r.TotalTokens, r.CostMicros)
			}
			continue
		}
		n++
		if !billed[id] {
			t.Errorf("billed usage row %s belongs to no job's final run (%+v)", id, r)
		} else if r.KeyID != keyID || r.Endpoint != "generate" || r.TotalTokens == 0 {
			t.Errorf("billed usage row %s: %+v", id, r)
		}
	}
	for id := range billed {
		if r, ok := rows[id]; !ok || r.Status != 200 {
			t.Errorf("job run %s has usage row %+v (found %v), want one billed (200) row", id, r, ok)
		}
	}
	if n != 2 {
		t.Errorf("%d billed usage rows, want 2 (one per job)", n)
	}
	if !strings.Contains(p2.out.String(), "a run was interrupted; running it again") {
		t.Errorf("the restarted process logged no recovery of the killed run:\n%s", p2.out.String())
	}
	t.Logf("killed run %s, re-run %s, queued job run %s; %d usage rows; %s",
		killedRun, views[running].RequestID, views[queued].RequestID, len(rows), time.Since(start).Round(time.Millisecond))
}
