package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"tollgate"
	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/gateway"
	"tollgate/jobs"
	"tollgate/storage/sqlite"
)

func TestBlocked(t *testing.T) {
	for _, c := range []struct {
		addr    string
		blocked bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"10.0.0.1", true}, {"172.16.5.4", true}, {"192.168.1.1", true},
		{"169.254.169.254", true}, {"fe80::1", true}, {"fd00:ec2::254", true}, {"fc00::1", true},
		{"100.100.100.200", true}, {"0.0.0.0", true}, {"::", true}, {"224.0.0.1", true},
		{"::ffff:127.0.0.1", true}, {"64:ff9b::a9fe:a9fe", true}, // 169.254.169.254 through NAT64
		{"::a9fe:a9fe", true}, {"::7f00:1", true}, // IPv4-compatible IPv6: 169.254.169.254, 127.0.0.1
		{"2002:a9fe:a9fe::1", true}, {"2002:c0a8:101::1", true}, // 6to4 around 169.254.169.254, 192.168.1.1
		{"192.0.0.192", true}, {"240.0.0.1", true}, {"255.255.255.254", true},
		{"2002:5db8:d822::1", false}, // 6to4 around a public address
		{"93.184.216.34", false}, {"2606:2800:220:1:248:1893:25c8:1946", false}, {"64:ff9b::5db8:d822", false},
	} {
		if got := jobs.Blocked(netip.MustParseAddr(c.addr)); got != c.blocked {
			t.Errorf("Blocked(%s) = %v, want %v", c.addr, got, c.blocked)
		}
	}
}

func TestCheckURL(t *testing.T) {
	strict := jobs.NewGuard(nil)
	allow, err := jobs.ParseNets("127.0.0.0/8, 10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	loose := jobs.NewGuard(allow)
	for _, c := range []struct {
		url           string
		strict, loose bool // accepted
	}{
		{"https://example.com/hook", true, true},
		{"http://example.com/hook", false, true}, // a name: checked at connect time, against the allowed networks only
		{"https://127.0.0.1:8443/", false, true},
		{"http://127.0.0.1:8080/", false, true},
		{"http://10.1.2.3/", false, true},
		{"https://10.1.2.4/", false, false},
		{"https://user:pw@example.com/", false, false},
		{"/relative", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
	} {
		if got := strict.CheckURL(c.url) == nil; got != c.strict {
			t.Errorf("strict CheckURL(%s) accepted=%v, want %v", c.url, got, c.strict)
		}
		if got := loose.CheckURL(c.url) == nil; got != c.loose {
			t.Errorf("allowing CheckURL(%s) accepted=%v, want %v", c.url, got, c.loose)
		}
	}
	if _, err := jobs.ParseNets("10.0.0.0/8,nonsense"); err == nil {
		t.Error("ParseNets accepted nonsense")
	}
}

// The callback schedule spans about a day.
func TestDeliverySchedule(t *testing.T) {
	b := jobs.DefaultDelivery
	var total time.Duration
	for n := 1; n < b.Attempts; n++ {
		total += b.After(n)
	}
	if b.After(1) != 30*time.Second || b.After(2) != time.Minute || b.After(11) != 6*time.Hour {
		t.Errorf("schedule %v %v %v", b.After(1), b.After(2), b.After(11))
	}
	if total < 18*time.Hour || total > 26*time.Hour {
		t.Errorf("attempts span %v, want about a day", total)
	}
}

type env struct {
	db    *sqlite.DB
	keys  *auth.Keys
	clock *authtest.Clock
	key   auth.Key
}

func newEnv(t *testing.T) env {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := authtest.NewClock(time.Now())
	keys := auth.NewKeys(db, nil, clock.Now)
	key, _, err := keys.Create(t.Context(), "test", auth.Spec{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return env{db: db, keys: keys, clock: clock, key: key}
}

// manager starts a Manager on e's database; now nil is time.Now.
func (e env) manager(t *testing.T, now func() time.Time, run jobs.Runner) *jobs.Manager {
	m := jobs.New(jobs.Config{Store: e.db, Keys: e.db, Run: run, Poll: 2 * time.Millisecond, Now: now,
		Admission: jobs.Backoff{First: time.Millisecond, Max: time.Millisecond, Attempts: 3}})
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	return m
}

func waitStatus(t *testing.T, m *jobs.Manager, key auth.Key, id string) jobs.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := m.Get(t.Context(), key, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status.Final() {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s", id, j.Status)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A run that admission refuses is retried later, not failed; past the
// bound it fails with the refusal.
func TestAdmissionRefusalRetried(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	m := e.manager(t, nil, func(ctx context.Context, c gateway.Caller, _ string, _ json.RawMessage) (json.RawMessage, error) {
		if calls.Add(1) <= 2 {
			return nil, &tollgate.Error{Code: tollgate.CodeRateLimited, Message: "slow down"}
		}
		return json.RawMessage(`{"ok":true}`), nil
	})
	j, err := m.Submit(t.Context(), e.key, "generate", json.RawMessage(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, m, e.key, j.ID)
	if got.Status != jobs.Succeeded || got.Retries != 2 || got.Attempt != 3 || string(got.Result) != `{"ok":true}` {
		t.Errorf("job %+v", got)
	}

	calls.Store(-100) // always refused from now on
	j, _ = m.Submit(t.Context(), e.key, "generate", json.RawMessage(`{}`), "")
	got = waitStatus(t, m, e.key, j.ID)
	if got.Status != jobs.Failed || got.Error == nil || got.Error.Code != tollgate.CodeRateLimited || got.Retries != 3 {
		t.Errorf("job %+v, error %+v", got, got.Error)
	}
}

// A key revoked after it submitted a job: the job is not run.
func TestRevokedKeyNotRun(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	run := func(context.Context, gateway.Caller, string, json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		return json.RawMessage(`{}`), nil
	}
	m := jobs.New(jobs.Config{Store: e.db, Keys: e.db, Run: run, Poll: 2 * time.Millisecond, Now: e.clock.Now})
	j, err := m.Submit(t.Context(), e.key, "embed", json.RawMessage(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Revoke(t.Context(), "test", e.key.ID); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() { m.Stop(context.Background()) })
	got := waitStatus(t, m, e.key, j.ID)
	if got.Status != jobs.Failed || got.Error.Code != tollgate.CodeKeyRevoked || calls.Load() != 0 {
		t.Errorf("job %+v, %d runs", got, calls.Load())
	}
}

// Finished jobs are deleted after the retention period.
func TestPurge(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.clock.Now, func(context.Context, gateway.Caller, string, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{}`), nil
	})
	j, _ := m.Submit(t.Context(), e.key, "predict", json.RawMessage(`{}`), "")
	waitStatus(t, m, e.key, j.ID)
	e.clock.Advance(jobs.DefaultRetention + time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := m.Get(t.Context(), e.key, j.ID)
		if errors.Is(err, jobs.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job still there after the retention period: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Stop drains: a run in progress when Stop's context ends is cut and
// queued again, not failed.
func TestStopRequeuesCutRun(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{})
	m := jobs.New(jobs.Config{Store: e.db, Keys: e.db, Poll: 2 * time.Millisecond, Now: e.clock.Now,
		Run: func(ctx context.Context, _ gateway.Caller, _ string, _ json.RawMessage) (json.RawMessage, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}})
	j, _ := m.Submit(t.Context(), e.key, "generate", json.RawMessage(`{}`), "")
	m.Start()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	m.Stop(ctx)
	got, err := e.db.Job(t.Context(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.Queued {
		t.Errorf("after Stop: %s, want queued", got.Status)
	}
}
