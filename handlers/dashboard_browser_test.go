package handlers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tollgate/auth"
)

// The dashboard in a real browser: Debian's chromium, headless, driven with
// chromedp against the real HTTP server (the fake Ollama behind it). It
// skips, loudly, when chromium cannot start, unless
// TOLLGATE_REQUIRE_BROWSER=1 (scripts/test.sh sets it when chromium is
// installed), and writes a PNG of each page to $TOLLGATE_TEST_ARTIFACTS
// (a temporary folder when unset; the path is logged).

// browserCatalog is the fake Ollama's catalog with a currency and plans, as
// an operator's would have.
func browserCatalog(url string) string {
	return fmt.Sprintf(`
currency: USD
backends:
  - url: %s
    connect_timeout: 2s
    first_byte_timeout: 5s
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate, predict]
    limits: {max_num_predict: 64, max_keep_alive: 10m, max_inputs: 3, prompt_overhead: 4}
    price: {input_per_1k: 0.2, output_per_1k: 0.6}
  embedder:
    ollama: nomic-embed-text
    endpoints: [embed]
    limits: {max_inputs: 3}
    price: {input_per_1k: 0.01, output_per_1k: 0}
plans:
  free: {requests_per_second: 1, burst: 5, tokens_per_minute: 10000, monthly_tokens: 1000}
  pro: {requests_per_second: 10, burst: 20, tokens_per_minute: 100000, monthly_tokens: 1000000}
`, url)
}

// browser is one headless chromium; tab opens pages in it.
type browser struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	required := os.Getenv("TOLLGATE_REQUIRE_BROWSER") == "1"
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if required {
			t.Fatalf("TOLLGATE_REQUIRE_BROWSER=1 but %s", msg)
		}
		t.Skipf("SKIPPING the dashboard's browser test: %s (install Debian's chromium, or set TOLLGATE_REQUIRE_BROWSER=1 to fail instead)", msg)
	}
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		unavailable("no chromium on PATH")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// The browser lives as long as the context of its first Run: bctx, not
	// a timeout of its own; a start that hangs is cut by this timer instead.
	hung := time.AfterFunc(60*time.Second, cancelBrowser)
	err := chromedp.Do(bctx)
	hung.Stop()
	if err != nil {
		unavailable("chromium (%s) did not start: %v", path, err)
	}
	dir := os.Getenv("TOLLGATE_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshots go to %s", dir)
	return &browser{t: t, ctx: bctx, artifacts: dir}
}

// tab is one browser tab; each has its own origin in the tests below (so
// its own cookies).
type tab struct {
	b   *browser
	ctx context.Context
}

func (b *browser) tab() *tab {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	tb := &tab{b: b, ctx: ctx}
	// The page's script errors, console output and dialogs go to the test
	// log: a broken page should say why.
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("opening a tab: %v", err)
	}
	_ = chromedp.Listen(ctx, func(ev any) {
		name := fmt.Sprintf("%T", ev)
		if strings.Contains(name, "Exception") || strings.Contains(name, "ConsoleAPI") || strings.Contains(name, "Dialog") {
			b.t.Logf("browser: %s %+v", name, ev)
		}
	})
	return tb
}

// run runs actions with a deadline, failing the test with what it was
// doing.
func (tb *tab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.b.t.Helper()
	runIn(tb, what, chromedp.Steps(actions...))
}

// runIn runs one action with a deadline and returns its value, failing the
// test (with the page's text and a screenshot) if it fails.
func runIn[T any](tb *tab, what string, a chromedp.Action[T]) T {
	tb.b.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		dctx, dcancel := context.WithTimeout(tb.ctx, 5*time.Second)
		defer dcancel()
		text, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 1500) : ""`))
		tb.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		tb.b.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
	}
	return v
}

// until waits for a JavaScript expression to be true.
func (tb *tab) until(what, expr string) {
	tb.b.t.Helper()
	runIn(tb, what, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
}

// eval returns a JavaScript expression's value.
func eval[T any](tb *tab, expr string) T {
	tb.b.t.Helper()
	return runIn(tb, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// js runs a JavaScript statement for its effect.
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool]("("+expr+", true)")(ctx, t)
		return err
	})
}

// screenshot writes the whole page as a PNG.
func (tb *tab) screenshot(name string) {
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(tb.b.artifacts, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.b.t.Errorf("writing %s: %v", path, err)
	}
}

// signIn opens the dashboard at base and signs in with secret.
func (tb *tab) signIn(base, secret string) {
	tb.b.t.Helper()
	tb.run("open the dashboard", chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(chromedp.ID("signin-key")))
	tb.run("sign in", chromedp.SendKeys(chromedp.ID("signin-key"), secret), chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nav a")))
}

// TestDashboardInBrowser: an operator signs in, creates a key and reads
// its secret once, sees it listed; the key makes a request, which the usage
// chart shows; a key holder signs in with it and sees only its own usage;
// the operator revokes it, and the holder's session ends.
func TestDashboardInBrowser(t *testing.T) {
	b := newBrowser(t)
	fake := newFakeOllama(t)
	ts := newTestServer(t, browserCatalog(fake.URL))
	t.Cleanup(fake.Close)
	adminID, admin := ts.newKey(t, auth.Spec{Name: "ops", Scopes: []auth.Scope{auth.ScopeAdmin, auth.ScopeGenerate}})
	// Another subscriber with usage of its own, which the holder must not see.
	_, other := ts.newKey(t, auth.Spec{Name: "globex", Plan: "pro"})
	for range 2 {
		ts.doJSON(t, "POST", "/generate", map[string]any{"model": "chat", "prompt": "globex asks"}, http.StatusOK, nil, "X-API-Key", other)
	}

	// The operator uses 127.0.0.1, the key holder localhost: two origins,
	// two cookie jars, two sessions side by side.
	u, _ := url.Parse(ts.URL)
	opBase, holderBase := ts.URL, "http://localhost:"+u.Port()

	op := b.tab()
	op.signIn(opBase, admin)
	op.until("the key list", `document.querySelector("#keys-table table") !== null`)
	navText := eval[string](op, `document.getElementById("nav").innerText`)
	for _, v := range []string{"Keys", "Usage", "Audit log", "Backends"} {
		if !strings.Contains(navText, v) {
			t.Errorf("the operator's views %q lack %q", navText, v)
		}
	}
	stored := eval[bool](op, `localStorage.length + sessionStorage.length === 0 && document.cookie === "" && location.href.indexOf("tg_") < 0`)
	if !stored {
		t.Errorf("the key or the session reached browser storage, a script-readable cookie or the URL")
	}

	// Create a key; its secret is shown once.
	op.run("open New key", chromedp.Click(chromedp.ID("new-key")), chromedp.WaitVisible(chromedp.ID("f-name")))
	op.run("fill the form", chromedp.SendKeys(chromedp.ID("f-name"), "acme-prod"),
		chromedp.SetValue(chromedp.ID("f-plan"), "free"),
		chromedp.Click(chromedp.CSS(`#dialog input[value="embed"]`)))
	op.screenshot("01-keys-new")
	op.run("create", chromedp.Click(chromedp.CSS(`#dialog-actions button[type="submit"]`)), chromedp.WaitVisible(chromedp.ID("new-secret")))
	secret := runIn(op, "read the secret", chromedp.Text(chromedp.ID("new-secret")))
	if err := auth.CheckFormat(secret); err != nil {
		t.Fatalf("the dialog shows %q, not a key: %v", auth.DisplayPrefix(secret), err)
	}
	// The screenshot shows the dialog, not the secret: no key in artifacts.
	op.run("mask the secret", js(`(function (e) { e.textContent = e.textContent.slice(0, 11) + "•".repeat(e.textContent.length - 11); })(document.getElementById("new-secret"))`))
	op.screenshot("02-keys-secret-once")
	op.run("close the secret", chromedp.Click(chromedp.CSS(`#dialog-actions button`)), chromedp.WaitNotVisible(chromedp.ID("dialog")))
	op.until("the new key listed", `document.getElementById("keys-table").innerText.indexOf("acme-prod") >= 0`)
	again := eval[bool](op, `document.body.innerText.indexOf(`+jsString(secret)+`) < 0`)
	if !again {
		t.Errorf("the secret is still on the page after its dialog closed")
	}
	op.screenshot("03-keys-list")

	// Edit it: a monthly request limit of 50 on top of its plan.
	op.run("edit", chromedp.Click(chromedp.CSS(`button[aria-label="Edit acme-prod"]`)), chromedp.WaitVisible(chromedp.ID("f-mreq")),
		chromedp.SendKeys(chromedp.ID("f-mreq"), "50"), chromedp.Click(chromedp.CSS(`#dialog-actions button[type="submit"]`)),
		chromedp.WaitNotVisible(chromedp.ID("dialog")))
	var shown struct {
		ID     string
		Plan   string
		Scopes []string
		Limits struct {
			MonthlyRequests int64 `json:"monthly_requests"`
		}
	}
	op.until("the edit saved", `document.getElementById("toast").innerText.indexOf("Saved") >= 0`)
	ids := eval[string](op, `[].filter.call(document.querySelectorAll("#keys-table tr"), function (tr) { return tr.innerText.indexOf("acme-prod") >= 0; })[0].innerText`)
	acme := regexp.MustCompile(`key_[A-Za-z0-9]+`).FindString(ids)
	ts.doJSON(t, "GET", "/admin/keys/"+acme, nil, http.StatusOK, &shown, "X-API-Key", admin)
	if shown.Limits.MonthlyRequests != 50 || shown.Plan != "free" || len(shown.Scopes) != 2 {
		t.Errorf("after the edit the key is %+v, want plan free, 2 scopes, 50 requests a month", shown)
	}

	// The key makes a request, through the real HTTP server.
	var gen struct {
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	ts.doJSON(t, "POST", "/generate", map[string]any{"model": "chat", "prompt": "hello from acme"}, http.StatusOK, &gen, "X-API-Key", secret)

	// The usage chart shows it: 3 requests in all today, 1 of them acme's.
	op.run("open Usage", chromedp.Navigate(opBase+"/dashboard#/usage"))
	op.until("the daily chart", `document.querySelector("#u-chart svg rect.bar") !== null`)
	bars := eval[float64](op, `[].reduce.call(document.querySelectorAll("#u-chart rect.bar"), function (s, r) { return s + Number(r.getAttribute("data-value")); }, 0)`)
	if bars != 3 {
		t.Errorf("the daily chart's bars sum to %v requests, want 3", bars)
	}
	op.until("acme in the latest requests", `document.getElementById("u-recent").innerText.indexOf("acme-prod") >= 0`)
	op.until("acme in the by-key chart", `document.getElementById("u-by-key").innerText.indexOf("acme-prod") >= 0`)
	op.screenshot("04-usage")
	// Split by key, the day's bar is two segments: globex's 2, acme's 1.
	op.run("split by key", chromedp.SetValue(chromedp.ID("u-split"), "key"), js(`document.getElementById("u-split").dispatchEvent(new Event("change"))`))
	op.until("the split chart", `document.querySelectorAll("#u-chart rect.seg").length === 2`)
	segs := eval[string](op, `[].map.call(document.querySelectorAll("#u-chart rect.seg"), function (r) { return r.getAttribute("data-series") + "=" + r.getAttribute("data-value"); }).sort().join(" ")`)
	if segs != "acme-prod=1 globex=2" {
		t.Errorf("the day split by key is %q, want acme-prod=1 globex=2", segs)
	}
	op.screenshot("05-usage-split-by-key")
	op.run("split by nothing", chromedp.SetValue(chromedp.ID("u-split"), ""), js(`document.getElementById("u-split").dispatchEvent(new Event("change"))`))
	op.until("the whole chart", `document.querySelectorAll("#u-chart rect.bar").length > 0`)
	// Narrowed to acme's key, the chart shows its one request.
	acmeID := eval[string](op, `[].filter.call(document.querySelectorAll("#u-key option"), function (o) { return o.textContent.indexOf("acme-prod") === 0; })[0].value`)
	op.run("pick acme", chromedp.SetValue(chromedp.ID("u-key"), acmeID), js(`document.getElementById("u-key").dispatchEvent(new Event("change"))`))
	op.until("acme's chart", `[].reduce.call(document.querySelectorAll("#u-chart rect.bar"), function (s, r) { return s + Number(r.getAttribute("data-value")); }, 0) === 1`)
	csvHref := eval[string](op, `document.getElementById("u-csv").href`)
	if !strings.Contains(csvHref, "format=csv") || !strings.Contains(csvHref, "key_id="+acmeID) {
		t.Errorf("CSV link %q does not export the shown range and key", csvHref)
	}

	op.run("open the audit log", chromedp.Navigate(opBase+"/dashboard#/audit"))
	op.until("the create entry", `document.getElementById("audit-table").innerText.indexOf("create") >= 0`)
	op.screenshot("06-audit")
	op.run("open Backends", chromedp.Navigate(opBase+"/dashboard#/backends"))
	op.until("readiness and load", `document.getElementById("b-status") !== null && document.getElementById("b-load").innerText.indexOf("GPU slots") >= 0`)
	op.until("the backend, up", `document.getElementById("b-health").innerText.indexOf("Ollama backends") >= 0 && document.getElementById("b-health").innerText.indexOf("up") >= 0`)
	op.screenshot("07-backends")

	// The key holder signs in with acme's key and sees only its own usage.
	holder := b.tab()
	holder.signIn(holderBase, secret)
	holder.until("own usage", `document.getElementById("m-recent") && document.getElementById("m-recent").querySelector("table") !== null`)
	holderNav := eval[string](holder, `document.getElementById("nav").innerText`)
	recent := eval[string](holder, `document.getElementById("m-recent").innerText`)
	if strings.Contains(holderNav, "Keys") || strings.Contains(holderNav, "Audit") {
		t.Errorf("a non-admin key sees operator views: %q", holderNav)
	}
	rows := eval[float64](holder, `document.querySelectorAll("#m-recent tbody tr").length`)
	chartSum := eval[float64](holder, `[].reduce.call(document.querySelectorAll("#m-chart rect.bar"), function (s, r) { return s + Number(r.getAttribute("data-value")); }, 0)`)
	if rows != 1 || chartSum != 1 || !strings.Contains(recent, "chat") {
		t.Errorf("the holder sees %v recent requests and %v in the chart (%q), want only its own 1", rows, chartSum, recent)
	}
	quota := eval[string](holder, `document.getElementById("m-quota").innerText`)
	if !strings.Contains(quota, "1 of 50") {
		t.Errorf("the quota panel %q does not show 1 of 50 requests", quota)
	}
	if want := fmt.Sprintf("%d of 1,000", gen.Usage.TotalTokens); !strings.Contains(quota, want) {
		t.Errorf("the quota panel %q does not show %q tokens (plan free: 1,000 a month)", quota, want)
	}
	snippet := eval[string](holder, `document.getElementById("m-snippets").innerText`)
	if !strings.Contains(snippet, "TOLLGATE_API_KEY") || !strings.Contains(snippet, "/v1") || strings.Contains(snippet, secret) {
		t.Errorf("the snippets should use $TOLLGATE_API_KEY and never the key: %q", snippet)
	}
	holder.screenshot("08-holder-usage")
	holder.run("phone width", chromedp.EmulateViewport(390, 844), chromedp.Reload())
	holder.until("own usage at phone width", `document.querySelector("#m-chart svg") !== null && document.querySelector("#m-chart svg").getAttribute("viewBox").split(" ")[2] < 400`)
	holder.screenshot("09-holder-usage-phone")
	holder.run("laptop width", chromedp.EmulateViewport(1280, 860))

	// The operator revokes acme's key from the list...
	op.run("open Keys", chromedp.Navigate(opBase+"/dashboard#/keys"))
	op.until("the key list", `document.querySelector("#keys-table table") !== null`)
	op.run("revoke", chromedp.Click(chromedp.CSS(`button[aria-label="Revoke acme-prod"]`)), chromedp.WaitVisible(chromedp.ID("dialog")),
		chromedp.Click(chromedp.CSS(`#dialog-actions button[type="submit"]`)))
	op.until("shown revoked", `[].some.call(document.querySelectorAll("#keys-table tr"), function (tr) { return tr.innerText.indexOf("acme-prod") >= 0 && tr.innerText.indexOf("revoked") >= 0; })`)
	op.screenshot("10-keys-revoked")
	op.run("operator at phone width", chromedp.EmulateViewport(390, 844), chromedp.Navigate(opBase+"/dashboard#/usage"))
	op.until("usage at phone width", `document.querySelector("#u-chart svg") !== null && document.getElementById("u-recent").querySelector("table") !== null`)
	op.screenshot("10b-usage-phone")
	op.run("operator at laptop width", chromedp.EmulateViewport(1280, 860), chromedp.Navigate(opBase+"/dashboard#/keys"))
	op.until("the key list again", `document.querySelector("#keys-table table") !== null`)
	ts.doError(t, "GET", "/usage", nil, http.StatusUnauthorized, "key_revoked", nil, "X-API-Key", secret)

	// ... and the holder's session ends: the next thing the page asks the
	// server (here a view change; perhaps already the redraw after the
	// viewport change) is refused, and the page asks for a key, saying why.
	holder.run("use the page", js(`location.hash = "#/me?after-revocation"`))
	holder.until("the sign-in form, saying why", `!document.getElementById("signin").hidden && document.getElementById("signin-error").innerText.indexOf("revoked") >= 0`)
	holder.screenshot("11-holder-session-ended")
	holder.run("reload after revocation", chromedp.Navigate(holderBase+"/dashboard#/me"))
	holder.until("the sign-in form again", `!document.getElementById("signin").hidden && document.getElementById("top").hidden`)
	holder.run("try to sign in with the revoked key", chromedp.SendKeys(chromedp.ID("signin-key"), secret), chromedp.Click(chromedp.ID("signin-submit")))
	holder.until("the revocation said", `document.getElementById("signin-error").innerText.indexOf("revoked") >= 0`)
	holder.screenshot("12-holder-revoked-key-refused")

	// The operator is still signed in, and the audit log names who revoked.
	var audit struct {
		Entries []struct{ Actor, Action string } `json:"entries"`
	}
	ts.doJSON(t, "GET", "/admin/audit?key_id="+acmeID, nil, http.StatusOK, &audit, "X-API-Key", admin)
	var actions []string
	for _, e := range audit.Entries {
		if e.Actor != adminID {
			t.Errorf("audit entry %+v is not by the signed-in admin %s", e, adminID)
		}
		actions = append(actions, e.Action)
	}
	if got := strings.Join(actions, " "); got != "key.create key.update key.revoke" {
		t.Errorf("audit of acme: %s, want key.create key.update key.revoke", got)
	}
	op.run("sign out", chromedp.Click(chromedp.ID("signout")))
	op.until("signed out", `!document.getElementById("signin").hidden`)
	op.screenshot("00-signin")
	for _, keyID := range sessionRows(t, ts) {
		if keyID == adminID {
			t.Errorf("the operator's session is still stored after signing out")
		}
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}
